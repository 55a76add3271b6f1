"""DETR training and evaluation: matcher, set criterion, COCO-format data, COCO mAP, the task and its tools."""

import itertools
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import generalized_box_iou

from vision_attn.data.coco import COCODataModule, COCOFormatError, detr_train_transform
from vision_attn.data.synthetic_coco import generate_coco_shapes
from vision_attn.losses import HungarianMatcher, SetCriterion
from vision_attn.metrics.coco import COCO_METRIC_NAMES, coco_evaluate, to_coco_results
from vision_attn.ops.boxes import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))

import eval as eval_tool  # noqa: E402
import train as train_tool  # noqa: E402
import visualize as visualize_tool  # noqa: E402


def random_boxes(n, g):
    """``(n, 4)`` valid normalised cxcywh boxes."""
    c = torch.rand(n, 2, generator=g) * 0.6 + 0.2
    wh = torch.rand(n, 2, generator=g) * 0.3 + 0.05
    return torch.cat([c, wh], -1)


# ---- matcher and criterion -------------------------------------------------------------------------------------
@pytest.mark.parametrize("num_targets", [0, 1, 3, 4])
def test_matcher_minimises_the_cost_like_brute_force(num_targets):
    g = torch.Generator().manual_seed(num_targets)
    Q, K = 5, 3
    out = {
        "pred_logits": torch.randn(2, Q, K + 1, generator=g),
        "pred_boxes": torch.stack([random_boxes(Q, g) for _ in range(2)]),
    }
    targets = [
        {"labels": torch.randint(0, K, (num_targets,), generator=g), "boxes": random_boxes(num_targets, g)}
        for _ in range(2)
    ]
    indices = HungarianMatcher(1, 5, 2)(out, targets)
    for b, (rows, cols) in enumerate(indices):
        assert len(rows) == len(cols) == num_targets
        prob = out["pred_logits"][b].softmax(-1)
        tgt = targets[b]
        cost = (
            -prob[:, tgt["labels"]]
            + 5 * torch.cdist(out["pred_boxes"][b], tgt["boxes"], p=1)
            - 2 * generalized_box_iou(box_cxcywh_to_xyxy(out["pred_boxes"][b]), box_cxcywh_to_xyxy(tgt["boxes"]))
        )
        best = min(
            (sum(cost[q, j] for j, q in enumerate(perm)) for perm in itertools.permutations(range(Q), num_targets)),
            default=0.0,
        )
        got = sum(cost[r, c] for r, c in zip(rows.tolist(), cols.tolist()))
        assert float(got) == pytest.approx(float(best), abs=1e-5)
        assert len(set(rows.tolist())) == num_targets  # one query per target


def _perfect_outputs(targets, Q, K, layers=1):
    logits = torch.full((len(targets), Q, K + 1), -20.0)
    logits[..., K] = 20.0
    boxes = torch.full((len(targets), Q, 4), 0.5)
    for b, t in enumerate(targets):
        n = len(t["labels"])
        logits[b, torch.arange(n), t["labels"]] = 20.0
        logits[b, :n, K] = -20.0
        boxes[b, :n] = t["boxes"]
    out = {"pred_logits": logits, "pred_boxes": boxes}
    out["aux_outputs"] = [{"pred_logits": logits.clone(), "pred_boxes": boxes.clone()} for _ in range(layers - 1)]
    return out


def test_criterion_perfect_prediction_and_aux_losses():
    g = torch.Generator().manual_seed(0)
    targets = [
        {"labels": torch.tensor([2, 0]), "boxes": random_boxes(2, g)},
        {"labels": torch.tensor([1]), "boxes": random_boxes(1, g)},
        {"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)},
    ]
    crit = SetCriterion(3, eos_coef=0.1)
    losses = crit(_perfect_outputs(targets, 6, 3, layers=3), targets)
    for k in ("loss_bbox", "loss_giou", "loss_ce", "loss_bbox_0", "loss_giou_1", "loss_ce_1"):
        assert float(losses[k]) == pytest.approx(0.0, abs=1e-5), k
    assert float(losses["class_error"]) == 0.0 and float(losses["cardinality_error"]) == 0.0
    assert "loss_ce_2" not in losses  # aux losses: one set per earlier decoder layer
    # the total is the weighted sum over the final and the aux layers
    bad = _perfect_outputs(targets, 6, 3, layers=3)
    bad["aux_outputs"][0]["pred_boxes"] = bad["aux_outputs"][0]["pred_boxes"] * 0.7
    worse = crit(bad, targets)
    expected = sum(w * (worse[k] + worse[f"{k}_0"] + worse[f"{k}_1"]) for k, w in crit.weight_dict.items())
    assert float(worse["loss"]) == pytest.approx(float(expected), rel=1e-6) and float(worse["loss_bbox_0"]) > 0.01
    # no target at all: finite (num_boxes is clamped to 1), only the "no object" cross-entropy
    empty = [targets[2]]
    out = {"pred_logits": torch.randn(1, 6, 4), "pred_boxes": torch.rand(1, 6, 4)}
    assert torch.isfinite(crit(out, empty)["loss"])


def test_loss_decreases_as_prediction_moves_to_target():
    g = torch.Generator().manual_seed(1)
    targets = [{"labels": torch.tensor([0, 1, 2]), "boxes": random_boxes(3, g)}]
    start = torch.rand(1, 4, 4, generator=g) * 0.5 + 0.25
    goal = start.clone()
    goal[0, :3] = targets[0]["boxes"]
    logits = torch.randn(1, 4, 4, generator=g)
    crit = SetCriterion(3, aux_loss=False)
    box_losses = []
    for a in torch.linspace(0, 1, 6):
        boxes = box_xyxy_to_cxcywh(box_cxcywh_to_xyxy(start) * (1 - a) + box_cxcywh_to_xyxy(goal) * a)
        lo = crit({"pred_logits": logits, "pred_boxes": boxes}, targets)
        box_losses.append(float(lo["loss_bbox"] * 5 + lo["loss_giou"] * 2))
    assert all(b < a for a, b in zip(box_losses, box_losses[1:])), box_losses
    assert box_losses[-1] == pytest.approx(0.0, abs=1e-5)
    # and the gradient of the class loss raises the matched class's logit
    logits = logits.clone().requires_grad_(True)
    crit({"pred_logits": logits, "pred_boxes": goal}, targets)["loss"].backward()
    matched = crit.matcher({"pred_logits": logits.detach(), "pred_boxes": goal}, targets)[0]
    q, j = matched[0][0], matched[1][0]
    assert logits.grad[0, q, targets[0]["labels"][j]] < 0


# ---- COCO-format data ------------------------------------------------------------------------------------------
def write_coco(root, split="train", annotations=None, images=None):
    """A tiny hand-made COCO split: 3 images (the last without objects), categories 2 and 7."""
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(exist_ok=True)
    images = images or [
        {"id": 11, "file_name": "a.png", "width": 40, "height": 30},
        {"id": 22, "file_name": "b.png", "width": 30, "height": 40},
        {"id": 33, "file_name": "c.png", "width": 32, "height": 32},
    ]
    for im in images:
        Image.fromarray(np.full((im["height"], im["width"], 3), 60, np.uint8)).save(root / split / im["file_name"])
    if annotations is None:
        annotations = [
            {"id": 1, "image_id": 11, "category_id": 7, "bbox": [5, 5, 10, 8], "iscrowd": 0, "area": 80},
            {"id": 2, "image_id": 11, "category_id": 2, "bbox": [30, 20, 20, 20], "iscrowd": 0, "area": 400},  # clipped
            {"id": 3, "image_id": 22, "category_id": 2, "bbox": [2, 3, 10, 10], "iscrowd": 1, "area": 100},  # crowd
            {"id": 4, "image_id": 22, "category_id": 7, "bbox": [50, 50, 5, 5], "iscrowd": 0, "area": 25},  # outside
            {"id": 5, "image_id": 22, "category_id": 7, "bbox": [4, 4, 0, 6], "iscrowd": 0, "area": 0},  # no width
            {"id": 6, "image_id": 22, "category_id": 2, "bbox": [10, 10, 15, 20], "iscrowd": 0, "area": 300},
        ]
    data = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 7, "name": "seven"}, {"id": 2, "name": "two"}],
    }
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root


def test_coco_loader_ids_crowd_empty_images_and_bad_boxes(tmp_path):
    write_coco(tmp_path, "train")
    write_coco(tmp_path, "val")
    dm = COCODataModule(
        str(tmp_path), train_split="train", val_split="val", batch_size=3, num_workers=0, val_size=32, max_size=64
    )
    assert dm.num_classes == 2 and dm.label_to_category_id == [2, 7] and dm.classes == ["two", "seven"]
    assert {c: dm.label_to_category_id[lab] for c, lab in dm.category_id_to_label.items()} == {2: 2, 7: 7}
    with pytest.warns(UserWarning, match=r"1 boxes .* clipped and 2 boxes .* dropped"):
        ds = dm.dataset("val")
    assert len(ds) == 3  # the image without objects is kept
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images, mask, targets = next(iter(dm.val_dataloader()))
    assert not [w for w in caught if "clipped" in str(w.message)]  # counted once, when the split is read
    assert [t["image_id"] for t in targets] == [11, 22, 33]
    assert targets[0]["labels"].tolist() == [1, 0]  # category 7 -> label 1, category 2 -> label 0
    assert targets[1]["labels"].tolist() == [0]  # crowd, outside and empty boxes left out
    assert len(targets[2]["labels"]) == 0 and targets[2]["boxes"].shape == (0, 4)
    assert targets[0]["orig_size"].tolist() == [30, 40]
    # image 11 (40x30) resized to short side 32: the clipped box [30, 20, 40, 30] in normalised cxcywh
    assert targets[0]["boxes"][1].tolist() == pytest.approx([35 / 40, 25 / 30, 10 / 40, 10 / 30], abs=1e-3)
    # padding: every image's real pixels are False in the mask, the rest True
    for im_mask, t in zip(mask, targets):
        h, w = t["size"].tolist()
        assert not im_mask[:h, :w].any() and im_mask.sum() == im_mask.numel() - h * w
    assert images.shape[-2:] == mask.shape[-2:]


def test_duplicate_ids_missing_and_truncated_images_are_named_at_setup(tmp_path):
    write_coco(tmp_path, "train")
    ann = tmp_path / "annotations" / "instances_train.json"
    data = json.loads(ann.read_text())
    twice = dict(data, images=data["images"] + [dict(data["images"][0], file_name="other.jpg")])
    ann.write_text(json.dumps(twice))
    with pytest.raises(COCOFormatError, match=r"images\[3\] id 11 is used twice \(also images\[0\]\)"):
        COCODataModule(str(tmp_path), train_split="train", val_split="train").setup("fit")
    ann.write_text(json.dumps(data))
    first = tmp_path / "train" / data["images"][0]["file_name"]
    first.rename(tmp_path / "elsewhere.jpg")  # listed in the JSON, absent on disk: named before any epoch starts
    with pytest.raises(FileNotFoundError, match=rf"1 of 3 listed images are not in .*train, e.g. {first.name}"):
        COCODataModule(str(tmp_path), train_split="train", val_split="train").setup("fit")
    (tmp_path / "elsewhere.jpg").rename(first)
    first.write_bytes(first.read_bytes()[:40])  # a truncated file
    dm = COCODataModule(str(tmp_path), train_split="train", val_split="train", num_workers=0)
    dm.setup("fit")
    with pytest.raises(OSError, match=rf"cannot read image .*{first.name} \(image id 11\)"):
        dm.dataset("train")[0]


def test_train_transform_keeps_boxes_on_their_objects():
    img = np.zeros((60, 100, 3), np.uint8)
    img[10:30, 20:50] = 255
    tf = detr_train_transform(scales=[40, 48], max_size=90, random_crop=True, crop_scales=[60], crop_size=(30, 50))
    for seed in range(12):
        tf.set_random_seed(seed)
        out = tf(image=img, bboxes=np.array([[20, 10, 50, 30.0]]), labels=np.array([0]))
        bright = out["image"].mean(0) > 0  # normalised: the white box is positive, black negative
        for x0, y0, x1, y1 in out["bboxes"]:
            inside = bright[int(np.ceil(y0)) : int(y1), int(np.ceil(x0)) : int(x1)]
            assert inside.float().mean() > 0.9
        if len(out["bboxes"]) == 0:
            assert bright.float().mean() < 0.05  # the crop missed the object


def test_malformed_annotations_name_the_file_and_record(tmp_path):
    write_coco(tmp_path, "train")
    ann = tmp_path / "annotations" / "instances_train.json"
    data = json.loads(ann.read_text())

    def fails(text, error, match, read=lambda dm: dm.num_classes):
        ann.write_text(text)
        before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in tmp_path.rglob("*")}
        with pytest.raises(error, match=match):
            read(COCODataModule(str(tmp_path), train_split="train", val_split="train"))
        assert {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in tmp_path.rglob("*")} == before  # nothing touched

    fails('{"images": [', COCOFormatError, "instances_train.json: not valid JSON")
    fails(
        json.dumps({k: v for k, v in data.items() if k != "categories"}),
        COCOFormatError,
        "instances_train.json: missing .*'categories'",
    )
    bad_box = dict(
        data, annotations=[data["annotations"][0], {"id": 2, "image_id": 11, "category_id": 7, "bbox": [1, 1, -2, "x"]}]
    )
    fails(
        json.dumps(bad_box),
        COCOFormatError,
        r"instances_train.json: annotations\[1\] bbox must be 4 finite numbers.*\"id\": 2",
    )
    bad_image = dict(data, annotations=[{"id": 1, "image_id": 99, "category_id": 7, "bbox": [1, 1, 2, 2]}])
    fails(
        json.dumps(bad_image),
        COCOFormatError,
        r"annotations\[0\] image_id 99 is not in 'images'",
        lambda dm: dm.setup("fit"),
    )
    with pytest.raises(FileNotFoundError, match=r"nowhere"):
        COCODataModule(str(tmp_path / "nowhere")).num_classes
    ann.write_text(json.dumps(data))
    (tmp_path / "train").rename(tmp_path / "moved")
    with pytest.raises(FileNotFoundError, match=r"image folder .*train not found"):
        COCODataModule(str(tmp_path), train_split="train", val_split="train").setup("fit")


def test_albumentations_is_imported_offline_whichever_coco_module_comes_first():
    """albumentations asks PyPI for updates on import unless NO_ALBUMENTATIONS_UPDATE is set: DETR's transforms,
    imported on their own in a fresh process (as in a spawned DataLoader worker), must find it set."""
    import os
    import subprocess

    probe = (
        "import os, sys\n"
        "class Probe:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'albumentations':\n"
        "            print('at import:', os.environ.get('NO_ALBUMENTATIONS_UPDATE'))\n"
        "sys.meta_path.insert(0, Probe())\n"
        "import vision_attn.data.coco.transforms\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    proc = subprocess.run([sys.executable, "-c", probe], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[0] == "at import: 1"


def test_synthetic_coco_is_deterministic_with_gaps_in_category_ids(tmp_path):
    a = generate_coco_shapes(tmp_path / "a", num_train=12, num_val=4, img_size=48, num_classes=3, max_objects=3, seed=5)
    b = generate_coco_shapes(tmp_path / "b", num_train=12, num_val=4, img_size=48, num_classes=3, max_objects=3, seed=5)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    ann = json.loads((a / "annotations" / "instances_train.json").read_text())
    assert [c["id"] for c in ann["categories"]] == [1, 3, 5]
    per_image = {im["id"]: 0 for im in ann["images"]}
    for x in ann["annotations"]:
        per_image[x["image_id"]] += 1
        im = next(i for i in ann["images"] if i["id"] == x["image_id"])
        bx, by, bw, bh = x["bbox"]
        assert bw > 0 and bh > 0 and bx >= 0 and by >= 0 and bx + bw <= im["width"] and by + bh <= im["height"]
    assert min(per_image.values()) == 0 and max(per_image.values()) >= 2


# ---- metrics ---------------------------------------------------------------------------------------------------
def test_coco_metrics_equal_pycocotools_and_perfect_predictions_score_one(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    root = generate_coco_shapes(tmp_path, num_train=2, num_val=30, img_size=64, num_classes=3, max_objects=3, seed=1)
    ann_file = root / "annotations" / "instances_val.json"
    gt = json.loads(ann_file.read_text())
    perfect = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
        for a in gt["annotations"]
        if not a["iscrowd"]
    ]
    m = coco_evaluate(ann_file, perfect)
    assert list(m) == list(COCO_METRIC_NAMES) and m["AP"] == pytest.approx(1.0) and m["AP50"] == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    noisy = [dict(r, bbox=[v + float(rng.normal(0, 2)) for v in r["bbox"]], score=float(rng.random())) for r in perfect]
    noisy += [dict(r, category_id=5, score=0.5) for r in perfect[::3]]  # some wrong classes
    (tmp_path / "predictions.json").write_text(json.dumps(noisy))
    ours = coco_evaluate(ann_file, tmp_path / "predictions.json")
    coco = COCO(str(ann_file))
    ev = COCOeval(coco, coco.loadRes(str(tmp_path / "predictions.json")), "bbox")
    ev.evaluate(), ev.accumulate(), ev.summarize()
    assert [ours[k] for k in COCO_METRIC_NAMES] == pytest.approx(list(ev.stats), abs=1e-12)
    assert 0.05 < ours["AP"] < 0.99


def test_model_outputs_to_coco_results_in_original_pixels_and_ids():
    # one image, original 200x100 (h, w); query 0: label 1 at centre box; query 1 is "no object"-best
    logits = torch.tensor([[[0.0, 5.0, 0.0, 1.0], [0.0, 0.0, 0.0, 9.0]]])
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.1], [0.1, 0.1, 0.1, 0.1]]])
    res = to_coco_results(
        {"pred_logits": logits, "pred_boxes": boxes},
        [{"image_id": 42, "orig_size": torch.tensor([200, 100])}],
        [3, 8, 17],
    )
    assert len(res) == 2 and res[0]["image_id"] == 42 and res[0]["category_id"] == 8
    assert res[0]["bbox"] == pytest.approx([40.0, 90.0, 20.0, 20.0])
    assert res[0]["score"] == pytest.approx(float(logits[0, 0].softmax(-1)[1]), abs=1e-5)


# ---- the task and tools ----------------------------------------------------------------------------------------
TINY = (
    '{"backbone": "test_resnet", "dilation": true, "pre_norm": true, "hidden_dim": 32, "nheads": 2, "enc_layers": 1, '
    '"dec_layers": 2, "dim_feedforward": 64, "num_queries": 8}'
)


def test_fit_then_eval_and_visualize_write_coco_files(tmp_path):
    data = [
        "--data.init_args.root",
        str(tmp_path / "data"),
        "--data.init_args.num_train",
        "16",
        "--data.init_args.num_val",
        "6",
        "--data.init_args.img_size",
        "64",
        "--data.init_args.batch_size",
        "8",
        "--data.init_args.scales",
        "[48, 64]",
        "--data.init_args.val_size",
        "64",
        "--data.init_args.max_size",
        "96",
    ]
    model = ["--model.init_args.model_args", TINY]
    train_tool.main(
        [
            "fit",
            "--config",
            str(REPO / "configs/detr_shapes.yaml"),
            *model,
            *data,
            "--trainer.max_epochs",
            "2",
            "--trainer.default_root_dir",
            str(tmp_path / "run"),
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.precision",
            "bf16-mixed",
        ]
    )
    run = tmp_path / "run" / "version_0"
    rows = [r for r in (run / "metrics.csv").read_text().splitlines()]
    header = rows[0].split(",")
    assert {"val/AP", "val/AP50", "val/ARl", "train/loss_ce", "val/class_error"} <= set(header)
    ckpt = run / "checkpoints" / "best.ckpt"
    assert ckpt.is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    # the checkpoint says how many classes and which: loading it without num_classes keeps its class head
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert saved["num_classes"] == 4 and len(saved["class_names"]) == 4
    from vision_attn import create_model

    assert create_model("detr_tiny_prenorm", pretrained=str(ckpt), **json.loads(TINY)).num_classes == 4
    out = tmp_path / "eval"
    report = eval_tool.main(
        [
            "--config",
            str(REPO / "configs/detr_shapes.yaml"),
            "--ckpt",
            str(ckpt),
            "--output-dir",
            str(out),
            "--split",
            "val",
            *model,
            *data,
        ]
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(COCO_METRIC_NAMES) <= set(metrics) and metrics["AP"] == report["AP"]
    preds = json.loads((out / "predictions.json").read_text())
    ann_file = next((tmp_path / "data").glob("shapes-coco-*")) / "annotations" / "instances_val.json"
    gt = json.loads(ann_file.read_text())
    assert len(preds) == 8 * len(gt["images"])  # every query of every val image
    assert {p["image_id"] for p in preds} == {im["id"] for im in gt["images"]}  # original ids
    assert {p["category_id"] for p in preds} <= {c["id"] for c in gt["categories"]}  # original (odd) category ids
    assert coco_evaluate(ann_file, preds)["AP"] == pytest.approx(metrics["AP"])
    pngs = visualize_tool.main(
        [
            "--config",
            str(REPO / "configs/detr_shapes.yaml"),
            "--ckpt",
            str(ckpt),
            "--out",
            str(tmp_path / "vis"),
            "--images",
            "2",
            "--queries",
            "0",
            "3",
            "--threshold",
            "0.0",
            *model,
            *data,
        ]
    )
    assert len(pngs) == 4 and all(p.stat().st_size > 1000 and p.read_bytes()[:4] == b"\x89PNG" for p in pngs)


@pytest.mark.slow
def test_ddp_fit_with_two_processes_evaluates_every_val_image_once(tmp_path):
    """2 CPU processes (gloo): the set criterion's num_boxes all-reduce runs, and validation mAP is computed over the
    predictions of BOTH processes, merged by image id (5 val images: the sampler pads one rank with a duplicate)."""
    import csv
    import os
    import subprocess

    cmd = [
        sys.executable,
        str(REPO / "tools/train.py"),
        "fit",
        "--config",
        str(REPO / "configs/detr_shapes.yaml"),
        "--model.init_args.model_args",
        TINY,
        "--data.init_args.root",
        str(tmp_path / "data"),
        "--data.init_args.num_train",
        "8",
        "--data.init_args.num_val",
        "5",
        "--data.init_args.img_size",
        "64",
        "--data.init_args.batch_size",
        "2",
        "--data.init_args.scales",
        "[64]",
        "--data.init_args.val_size",
        "64",
        "--data.init_args.max_size",
        "96",
        "--trainer.max_epochs",
        "1",
        "--trainer.default_root_dir",
        str(tmp_path / "run"),
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.devices",
        "2",
        "--trainer.strategy",
        "ddp",
        "--trainer.accelerator",
        "cpu",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "run" / "version_0" / "metrics.csv")))
    val = [r for r in rows if r.get("val/images")]
    assert val and all(float(r["val/images"]) == 5 for r in val)
    assert all(-1.0 <= float(r["val/AP50"]) <= 1.0 for r in val)
    ckpt = torch.load(
        tmp_path / "run" / "version_0" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
    )
    assert ckpt["global_step"] == 2  # 8 images / (2 processes x batch 2)


def test_the_criterion_is_saved_as_plain_values_and_rebuilt_from_them():
    import io

    from vision_attn.losses import SetCriterionConfig
    from vision_attn.tasks import DetectionTask

    task = DetectionTask("detr_tiny_prenorm", num_classes=3, criterion=SetCriterionConfig(loss_giou=3.0, eos_coef=0.2))
    buffer = io.BytesIO()
    torch.save({"hyper_parameters": dict(task.hparams)}, buffer)
    buffer.seek(0)
    hparams = torch.load(buffer, weights_only=True)["hyper_parameters"]  # a pickled dataclass would be refused
    assert hparams["criterion"]["loss_giou"] == 3.0
    again = DetectionTask(**hparams)
    assert again.criterion.weight_dict["loss_giou"] == 3.0 and float(again.criterion.empty_weight[-1]) == pytest.approx(
        0.2
    )
    with pytest.raises(TypeError, match="criterion has no option 'giou'"):
        DetectionTask("detr_tiny_prenorm", num_classes=3, criterion={"giou": 1.0})


def test_load_from_checkpoint_of_a_run_saved_with_flat_criterion_options_keeps_them(tmp_path):
    """A checkpoint from before ``criterion:`` (flat cost_* / loss_* / eos_coef) loads with its own weights, not the
    defaults Lightning would silently give by dropping what ``__init__`` no longer takes."""
    import pytorch_lightning as pl

    from vision_attn.tasks import DetectionTask

    old = DetectionTask("detr_tiny_prenorm", num_classes=3)
    flat = {k: v for k, v in old.hparams.items() if k != "criterion"}
    flat.update(cost_bbox=3.0, loss_giou=4.0, eos_coef=0.3)
    ckpt = tmp_path / "old.ckpt"
    torch.save(
        {"state_dict": old.state_dict(), "hyper_parameters": flat, "pytorch-lightning_version": pl.__version__}, ckpt
    )
    task = DetectionTask.load_from_checkpoint(ckpt)
    assert task.criterion.weight_dict["loss_giou"] == 4.0 and task.criterion.matcher.cost_bbox == 3.0
    assert float(task.criterion.empty_weight[-1]) == pytest.approx(0.3)
