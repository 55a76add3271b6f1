"""The first hour's journeys, each as a user runs it: fine-tune published weights on an own class-per-folder tree,
DETR on an own COCO-format folder, a run folder read unedited by eval / predict / export (and ``--run``), and
``vision_attn.pipeline`` on a model name, a run folder and an exported ONNX folder. Tiny models, a few steps."""

import contextlib
import io
import json
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hub_fixtures import add_timm_repo, offline_hub
from PIL import Image

import vision_attn as va
from vision_attn.data.synthetic_coco import generate_coco_shapes
from vision_attn.run.cli import VisionAttnCLI
from vision_attn.run.predict import _normalization
from vision_attn.run.runs import resolve_run

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))

import eval as eval_tool  # noqa: E402
import export as export_tool  # noqa: E402
import predict as predict_tool  # noqa: E402
import train as train_tool  # noqa: E402

NAME = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"  # AugReg: mean = std = 0.5, bicubic, crop 0.9
QUIET = ["--trainer.enable_model_summary", "false", "--trainer.accelerator", "cpu"]


def _images(root: Path, classes, n: int, size=(36, 36), seed=0):
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / c / f"{c}{i}.png")


@pytest.fixture(scope="module")
def hub_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("hf")
    add_timm_repo(home / "hub", NAME)  # "published" weights: random, at the real shapes, in the Hub cache layout
    return home


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, hub_home):
    """``tools/train.py fit --config configs/finetune_folder.yaml --data.init_args.root DIR`` (+ a tiny model and
    budget) with stdout redirected to a file-like (no TTY); returns the CLI, its run folder and what it printed."""
    tmp = tmp_path_factory.mktemp("own_folder")
    _images(tmp / "imgs" / "train", ("cat", "dog"), 3)
    _images(tmp / "imgs" / "val", ("cat", "dog"), 2, seed=1)
    with pytest.MonkeyPatch.context() as mp:
        offline_hub(mp, hub_home)
        mp.chdir(tmp)  # the run's config keeps relative paths, as a user's would
        out = io.StringIO()
        with contextlib.redirect_stdout(out), warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            cli = VisionAttnCLI(
                args=[
                    "fit",
                    "--config",
                    str(REPO / "configs/finetune_folder.yaml"),
                    "--data.init_args.root",
                    "imgs",
                    "--model.init_args.model",
                    NAME,
                    "--model.init_args.model_args",
                    "{img_size: 32}",
                    "--data.init_args.batch_size",
                    "2",
                    "--data.init_args.num_workers",
                    "0",
                    "--trainer.max_epochs",
                    "-1",
                    "--trainer.max_steps",
                    "2",
                    "--trainer.log_every_n_steps",
                    "1",
                    "--trainer.default_root_dir",
                    "runs/ff",
                    *QUIET,
                ]
            )
        yield cli, tmp, tmp / "runs/ff/version_0", out.getvalue(), [str(w.message) for w in seen], mp


def test_own_folder_fine_tunes_published_weights_with_their_preprocessing(finetuned):
    cli, tmp, run, printed, warned, _ = finetuned
    assert cli.model.hparams.pretrained is True and cli.model.num_classes == 2
    # the AugReg weights' statistics and interpolation, not ImageNet's: observed in the transforms the fit used
    for subset in (cli.datamodule.train_set, cli.datamodule.val_set):
        assert _normalization(subset.transform) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert cli.datamodule.data_config["interpolation"] == "bicubic" and cli.datamodule.data_config["crop_pct"] == 0.9
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "best.ckpt").is_file()
    # quiet and log-friendly: step lines in a non-TTY log, no advert, no library deprecation noise
    assert "train step 1/2" in printed and "train step 2/2" in printed
    assert "Tip:" not in printed and not any("LeafSpec" in w or "args parameter" in w for w in warned)


def test_the_epoch_counter_is_right_under_max_steps(finetuned):
    from vision_attn.callbacks.progress import StepBar

    bar = StepBar()
    bar._trainer = finetuned[0].trainer  # max_epochs=-1, max_steps=2: Lightning's bar read "Epoch 0/-2"
    assert bar._get_train_description(0).strip() == "Epoch 0, step 2/2"


def test_a_run_folder_works_unedited_with_eval_predict_export_and_run(finetuned):
    cli, tmp, run, _, _, mp = finetuned
    config, ckpt = resolve_run(tmp / "runs/ff")  # the newest version_N of a runs/NAME folder
    assert (config, ckpt) == (run / "config.yaml", run / "checkpoints" / "best.ckpt")
    by_run = eval_tool.main(["--run", str(run), "--split", "val"])  # the saved config.yaml as it is
    assert by_run["config"] == str(config) and by_run["checkpoint"] == str(ckpt)
    assert json.loads((run / "eval_val" / "metrics.json").read_text())["top1"] == by_run["top1"]
    assert predict_tool.main(["--run", str(run), "--input", "imgs/val"]) == 0
    records = json.loads((run / "predict" / "predictions.json").read_text())
    assert len(records) == 4 and {r["top_k"][0]["label"] for r in records} <= {"cat", "dog"}
    folder = export_tool.main(["--run", str(run), "--format", "onnx"])
    assert folder == run / "export_onnx"
    exported = json.loads((folder / "config.json").read_text())
    assert exported["label_names"] == ["cat", "dog"] and exported["inputs"] == ["pixel_values"]
    assert exported["outputs"] == ["logits"] and exported["preprocessing"]["mean"] == [0.5, 0.5, 0.5]
    assert (
        exported["preprocessing"]["input_size"] == [3, 32, 32]
        and exported["preprocessing"]["interpolation"] == "bicubic"
    )
    # train.py test from the run's checkpoint logs into no new version_N
    train_tool.main(
        ["test", "--config", str(config), "--ckpt_path", str(ckpt), "--trainer.enable_progress_bar", "false"]
    )
    assert sorted(p.name for p in (tmp / "runs/ff").iterdir()) == ["version_0"]


def test_pipeline_gives_predict_records_for_a_run_an_onnx_folder_and_a_model_name(finetuned):
    cli, tmp, run, _, _, _ = finetuned
    files = sorted(str(p) for p in Path("imgs/val").rglob("*.png"))
    if not (run / "export_onnx" / "model.onnx").is_file():
        export_tool.main(["--run", str(run), "--format", "onnx"])
    if not (run / "predict" / "predictions.json").is_file():
        predict_tool.main(["--run", str(run), "--input", "imgs/val"])
    written = json.loads((run / "predict" / "predictions.json").read_text())
    from_run = va.pipeline("image-classification", model=str(run))
    assert from_run(files) == written  # the same records as predictions.json, through the same code
    rgb = Image.open(files[0]).convert("RGB")
    tensor = torch.from_numpy(np.asarray(rgb)).permute(2, 0, 1)
    assert from_run(rgb)["top_k"] == from_run(tensor)["top_k"] == written[0]["top_k"]
    from_onnx = va.pipeline("image-classification", model=str(run / "export_onnx"))(files)
    assert [r["top_k"][0]["class_id"] for r in from_onnx] == [r["top_k"][0]["class_id"] for r in written]
    assert np.allclose(
        [r["top_k"][0]["score"] for r in from_onnx], [r["top_k"][0]["score"] for r in written], atol=1e-4
    )
    named = va.pipeline("image-classification", model=NAME, top_k=3)(files[0])  # the published weights, offline
    assert len(named["top_k"]) == 3 and named["top_k"][0]["label"]  # ImageNet's names
    with pytest.raises(ValueError, match="is a classifier; use image-classification"):
        va.pipeline("object-detection", model=str(run))


def test_a_fit_that_fails_before_its_first_step_leaves_no_version_folder(tmp_path, monkeypatch):
    _images(tmp_path / "imgs" / "train", ("a", "b"), 1)
    _images(tmp_path / "imgs" / "val", ("a",), 1)  # a class missing: setup() fails after the loggers exist
    with pytest.raises(SystemExit, match="class folders differ"):
        train_tool.main(
            [
                "fit",
                "--config",
                str(REPO / "configs/finetune_folder.yaml"),
                "--data.init_args.root",
                str(tmp_path / "imgs"),
                "--model.init_args.model",
                "vit_nano_patch4_32",
                "--model.init_args.pretrained",
                "false",
                "--data.init_args.num_workers",
                "0",
                "--trainer.default_root_dir",
                str(tmp_path / "runs"),
                *QUIET,
            ]
        )
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def _own_coco(root: Path) -> Path:
    """A COCO-format folder as a user has one: {train2017,val2017}/ and annotations/instances_*2017.json."""
    made = generate_coco_shapes(root / "gen", num_train=4, num_val=2, img_size=64, num_classes=3, max_objects=2)
    own = root / "my_coco"
    (own / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        shutil.copytree(made / split, own / f"{split}2017")
        shutil.copy(
            made / "annotations" / f"instances_{split}.json", own / "annotations" / f"instances_{split}2017.json"
        )
    return own


def test_detr_on_own_coco_folder_takes_classes_and_ids_from_the_annotations(tmp_path, monkeypatch):
    own = _own_coco(tmp_path)
    categories = json.loads((own / "annotations/instances_train2017.json").read_text())["categories"]
    monkeypatch.chdir(tmp_path)
    cli = VisionAttnCLI(
        args=[
            "fit",
            "--config",
            str(REPO / "configs/finetune_coco.yaml"),
            "--data.init_args.root",
            str(own),
            "--model.init_args.model",
            "detr_tiny_prenorm",
            "--model.init_args.pretrained",
            "false",
            "--data.init_args.scales",
            "[64]",
            "--data.init_args.max_size",
            "96",
            "--data.init_args.val_size",
            "64",
            "--data.init_args.random_crop",
            "false",
            "--data.init_args.num_workers",
            "0",
            "--data.init_args.batch_size",
            "4",
            "--trainer.max_steps",
            "1",
            "--trainer.default_root_dir",
            "runs/fc",
            "--trainer.enable_progress_bar",
            "false",
            *QUIET,
        ]
    )
    assert cli.model.num_classes == len(categories) == 3  # nothing set by hand
    ckpt = torch.load(tmp_path / "runs/fc/version_0/checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["class_names"] == [c["name"] for c in sorted(categories, key=lambda c: c["id"])]
    det = va.pipeline("object-detection", model="runs/fc/version_0", threshold=0.0)
    found = det(sorted(str(p) for p in (own / "val2017").iterdir()))
    ids = {d["category_id"] for r in found for d in r["detections"]}
    assert ids and ids <= {c["id"] for c in categories}  # the file's own ids (1, 3, 5), not labels 0..2


def test_submit_defaults_to_this_machines_gpus_and_documents_the_pass_through(monkeypatch, capsys):
    import submit as submit_tool

    seen = {}

    class Job:
        job_id, paths = "1", type("P", (), {"folder": "f"})

    def fake_submit(config, train_args, **kw):
        seen.update(kw, train_args=train_args)
        return Job()

    monkeypatch.setattr(submit_tool, "submit", fake_submit)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    submit_tool.main(["--config", "c.yaml", "--", "--trainer.max_epochs", "2"])
    assert seen["gpus_per_node"] == 0 and seen["train_args"] == [
        "--trainer.max_epochs",
        "2",
    ]  # was 8: a stalled CPU job
    with pytest.raises(SystemExit):
        submit_tool.main(["--help"])
    assert "Everything after -- is passed to tools/train.py fit" in " ".join(capsys.readouterr().out.split())


def test_an_exported_detr_folder_names_its_inputs_and_outputs(tmp_path):
    from vision_attn.run.export import FORMATS, run_onnx

    torch.manual_seed(0)
    model = va.create_model("detr_tiny_prenorm", num_classes=3).eval()
    model.pretrained_cfg.update(input_size=(3, 64, 64), category_ids=[1, 3, 5])  # a small trace
    out = FORMATS["onnx"](model, tmp_path / "detr")
    config = json.loads((out / "config.json").read_text())
    assert config["inputs"] == ["pixel_values", "pixel_mask"] and config["outputs"] == ["logits", "pred_boxes"]
    assert config["task"] == "object-detection" and config["category_ids"] == [1, 3, 5]
    import onnxruntime as ort

    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["pixel_values", "pixel_mask"]
    assert [o.name for o in session.get_outputs()] == ["logits", "pred_boxes"]
    x, mask = torch.randn(1, 3, 64, 64), torch.zeros(1, 64, 64, dtype=torch.bool)
    logits, boxes = run_onnx(out / "model.onnx", x, mask)
    with torch.no_grad():
        want = model(x, mask)
    assert np.allclose(logits, want["pred_logits"].numpy(), atol=1e-4) and np.allclose(
        boxes, want["pred_boxes"].numpy(), atol=1e-4
    )
