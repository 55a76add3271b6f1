"""Bad files and refusals end a tool with ONE ``error:`` line naming the file or value and what was expected, a non-zero
exit status, and nothing written; images and zipped records are refused by their declared size, before decoding."""

import hashlib
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vision_attn.data.coco import COCOFormatError
from vision_attn.data.coco.validate import load_coco_annotations
from vision_attn.data.images import ImageFiles
from vision_attn.data.synthetic import generate_shapes
from vision_attn.models.checkpoint import CheckpointError, load_state_dict
from vision_attn.run.bench.cli import main as benchmark_main
from vision_attn.run.cli import main
from vision_attn.run.data_size.journal import RESULT_COLUMNS
from vision_attn.run.data_size.runner import sweep_lock

REPO = Path(__file__).resolve().parents[2]
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "PYTHONWARNINGS": "ignore",
    "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
}


def quickstart(tmp_path, *extra):
    return [
        "--config",
        str(REPO / "configs/quickstart.yaml"),
        "--trainer.accelerator",
        "cpu",
        "--trainer.max_epochs",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        "--model.init_args.model_args",
        '{"embed_dim": 16, "depth": 1, "num_heads": 2}',
        "--data.init_args.root",
        str(tmp_path / "data"),
        "--data.init_args.num_train",
        "60",
        "--data.init_args.num_test",
        "20",
        "--data.init_args.val_split",
        "20",
        "--data.init_args.batch_size",
        "20",
        "--trainer.default_root_dir",
        str(tmp_path / "run"),
        *extra,
    ]


def one_error_line(args):
    """Run ``tools/train.py`` main in this process; the SystemExit's text (one line) and that nothing was written."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    line = str(exit_info.value.code)
    assert line.startswith("error: ") and "\n" not in line, line
    return line


def bad_checkpoints(tmp_path):
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1000)}, "epoch": 0}, good)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[:700])
    malicious = tmp_path / "malicious.ckpt"
    torch.save({"state_dict": {}, "x": _Code()}, malicious)
    weights = tmp_path / "weights.pth"
    torch.save({"w": torch.ones(2)}, weights)
    return {
        "missing": (tmp_path / "missing.ckpt", "does not exist"),
        "truncated": (truncated, "truncated"),
        "malicious": (malicious, "refused to load: it holds pickled code"),
        "weights": (weights, "not a Lightning checkpoint"),
        "text": (_text(tmp_path), "truncated or not"),
    }


class _Code:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _text(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")
    return path


def test_train_py_fit_with_a_missing_ckpt_path_is_one_stderr_line_and_writes_nothing(tmp_path):
    missing = tmp_path / "missing.ckpt"
    r = subprocess.run(
        [sys.executable, str(REPO / "tools/train.py"), "fit", *quickstart(tmp_path), "--ckpt_path", str(missing)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 1 and r.stdout == "", r.stdout
    assert r.stderr.splitlines() == [
        f"error: checkpoint {missing} does not exist (expected a .ckpt file a fit wrote)"
    ], r.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["fit", "test"])
def test_every_bad_ckpt_path_is_one_line_naming_the_file(tmp_path, command):
    for name, (path, why) in bad_checkpoints(tmp_path).items():
        line = one_error_line([command, *quickstart(tmp_path), "--ckpt_path", str(path)])
        assert str(path) in line and why in line, (name, line)
    assert not (tmp_path / "run").exists()


def test_a_text_file_as_pretrained_is_one_line(tmp_path):
    text = _text(tmp_path)
    line = one_error_line(["fit", *quickstart(tmp_path, "--model.init_args.pretrained", str(text))])
    assert line == f"error: {text}: truncated or not a PyTorch checkpoint (KeyError: 104)" or str(text) in line, line
    with pytest.raises(CheckpointError, match=f"^{text}: truncated or not a PyTorch checkpoint"):
        load_state_dict(text)
    assert not (tmp_path / "run").exists()


def test_a_cifar_batch_with_the_wrong_dtype_is_one_line(tmp_path):
    folder = generate_shapes(tmp_path / "data", num_train=60, num_test=20)
    batch = pickle.loads((folder / "data_batch_1").read_bytes())
    batch["data"] = batch["data"].astype(np.float64)
    raw = pickle.dumps(batch, protocol=4)
    (folder / "data_batch_1").write_bytes(raw)
    sums = json.loads((folder / "checksums.json").read_text())  # the user's own data: its checksums match
    sums["data_batch_1"] = hashlib.md5(raw).hexdigest()
    (folder / "checksums.json").write_text(json.dumps(sums))
    line = one_error_line(["fit", *quickstart(tmp_path)])
    assert line.startswith(f"error: {folder / 'data_batch_1'}: 'data' must be a uint8 array of shape (N, 3*S*S)")
    assert line.endswith("found float64 array of shape (12, 3072)")
    assert not (tmp_path / "run" / "version_0" / "checkpoints").exists()


def test_a_coco_bbox_of_ten_to_the_400_is_named(tmp_path):
    ann = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10}],
        "categories": [{"id": 1, "name": "x"}],
        "annotations": [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10**400, 1]}],
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(ann))
    with pytest.raises(COCOFormatError, match=r"annotations\[0\] bbox must be 4 finite numbers"):
        load_coco_annotations(path)
    path.write_text(json.dumps(ann).replace("1" + "0" * 400, "1" + "0" * 5000))  # beyond Python's int parsing limit
    with pytest.raises(COCOFormatError, match="not valid JSON"):
        load_coco_annotations(path)


def _results(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    values = {
        "model": "vit",
        "fraction": "0.5",
        "seed": "0",
        "n_train": "10",
        "top1": "0.5",
        "top5": "0.9",
        "train_seconds": "1.0",
        "images_per_second": "10.0",
        "devices": "1",
        "steps": "3",
        "params": "100",
        "cell_hash": "abc",
        "code_version": "x",
    }
    path.write_text(
        ",".join(RESULT_COLUMNS)
        + "\n"
        + "".join(",".join(values[c] for c in RESULT_COLUMNS) + "\n" for _ in range(rows))
    )


def test_the_sweeps_lock_and_duplicate_row_refusals_are_one_line(tmp_path):
    sweep = ["data-size", "--config", str(REPO / "configs/benchmark/data_size_quick.yaml")]
    _results(tmp_path / "dup" / "results.csv", rows=2)
    with pytest.raises(SystemExit) as exit_info:
        benchmark_main([*sweep, "--output-dir", str(tmp_path / "dup")])
    assert str(exit_info.value.code) == (
        f"error: {tmp_path / 'dup' / 'results.csv'}, line 3: duplicate of line 2 (model vit, "
        "fraction 0.5, seed 0); a cell is counted once: delete one of them"
    )
    with sweep_lock(tmp_path / "busy"), pytest.raises(SystemExit) as exit_info:
        benchmark_main([*sweep, "--output-dir", str(tmp_path / "busy")])
    line = str(exit_info.value.code)
    assert (
        line.startswith(f"error: {tmp_path / 'busy'}: another sweep (pid {os.getpid()}) is running")
        and "\n" not in line
    )
    assert sorted(p.name for p in (tmp_path / "busy").iterdir()) == [".sweep.lock"]


# ---- declared sizes, checked before decoding -------------------------------------------------------------------------
def _peak_rss_kib() -> int:
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM:")).split()[1])


def test_a_huge_bilevel_png_is_refused_from_its_header_without_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (12000, 12000)).save(path, optimize=True)
    assert path.stat().st_size < 40_000
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak memory")
    Path("/proc/self/clear_refs").write_text("5")  # reset this process's peak resident memory (VmHWM)
    before = _peak_rss_kib()
    image, info = ImageFiles([str(path)], transform=lambda im: im)[0]
    grown_kib = _peak_rss_kib() - before
    assert image is None and info["error"] == (
        f"ImageTooLargeError: {path}: 12000x12000 = 144000000 pixels, more "
        "than max_pixels=89478485 (raise --max-pixels to read it)"
    )
    assert grown_kib < 50 * 1024, grown_kib  # the peak grew by less than 50 MiB (decoding it takes > 400 MiB)


def test_a_compressed_checkpoint_record_is_refused_before_inflating(tmp_path):
    path = tmp_path / "bomb.pth"
    torch.save({"w": torch.ones(4)}, path)
    with zipfile.ZipFile(path) as z:
        records = [(i.filename, z.read(i)) for i in z.infolist()]
    with zipfile.ZipFile(path, "w") as z:  # the same records, one deflated and declaring 20 MB
        for name, data in records:
            z.writestr(name, data, compress_type=zipfile.ZIP_STORED)
        z.writestr("archive/data/9", b"\0" * 20_000_000, compress_type=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 100_000
    with pytest.raises(CheckpointError, match=r"record archive/data/9 declares 20000000 bytes \(compressed\)"):
        load_state_dict(path)
