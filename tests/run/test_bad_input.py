"""Bad input is refused or named: code-carrying CIFAR pickles, unreadable images, unknown model names."""

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vision_attn.data import SyntheticShapesDataModule
from vision_attn.data.cifar_format import UnsafeDataError, read_cifar_file
from vision_attn.data.folder import BadImageError
from vision_attn.data.synthetic import generate_shapes
from vision_attn.models.registry import UnknownModelError
from vision_attn.run.cli import VisionAttnCLI, main

REPO = Path(__file__).resolve().parents[2]


class _Payload:
    """Unpickling this runs code: it writes ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pwned')",)


def test_a_cifar_batch_carrying_code_is_refused_without_running_it(tmp_path):
    folder = generate_shapes(tmp_path / "data", num_train=20, num_test=10)
    marker = tmp_path / "pwned"
    evil = pickle.dumps({"batch_label": "x", "labels": [0] * 4, "data": _Payload(marker)}, protocol=2)
    pickle.loads(evil)  # the payload is real: plain pickle runs it
    assert marker.is_file()
    marker.unlink()
    (folder / "data_batch_1").write_bytes(evil)
    sums = json.loads((folder / "checksums.json").read_text())  # whoever writes the data writes its checksums too
    sums["data_batch_1"] = hashlib.md5(evil).hexdigest()
    (folder / "checksums.json").write_text(json.dumps(sums))
    dm = SyntheticShapesDataModule(root=str(tmp_path / "data"), num_train=20, num_test=10, val_split=5)
    with pytest.raises(
        UnsafeDataError, match=r"data_batch_1 is not plain CIFAR data: it imports (__builtin__|builtins)\.exec; refused"
    ):
        dm.setup()
    assert not marker.exists()


def test_plain_cifar_batches_of_any_protocol_still_load(tmp_path):
    batch = {
        b"batch_label": b"training batch 1 of 5",
        b"labels": [3, 1],
        b"data": np.arange(12, dtype=np.uint8).reshape(2, 6),
    }
    for protocol in (2, 4, 5):
        path = tmp_path / f"p{protocol}"
        path.write_bytes(pickle.dumps(batch, protocol=protocol))
        got = read_cifar_file(path)
        assert got[b"labels"] == [3, 1] and np.array_equal(got[b"data"], batch[b"data"])
    path.write_bytes(pickle.dumps({"data": np.array([object()], dtype=object)}, protocol=2))
    with pytest.raises(UnsafeDataError, match="object arrays"):
        read_cifar_file(path)


def _image_tree(root, truncated):
    """root/{train,val}/{a,b}/k.jpg, 16x16; ``truncated`` (a path under root) cut to half its bytes."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for k in range(3):
                Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / split / cls / f"{k}.jpg")
    data = (root / truncated).read_bytes()
    (root / truncated).write_bytes(data[: len(data) // 2])
    return root / truncated


def test_a_truncated_image_is_named_or_skipped_and_counted(tmp_path):
    from vision_attn.data import ImageFolderDataModule

    bad = _image_tree(tmp_path / "imgs", "train/b/1.jpg")
    dm = ImageFolderDataModule(str(tmp_path / "imgs"), img_size=16, batch_size=2, num_workers=0)
    dm.setup()
    with pytest.raises(BadImageError, match=rf"^{bad}: unreadable image \((?i:.*truncated.*)\); skip_bad_images=True"):
        list(dm.train_dataloader())
    dm = ImageFolderDataModule(str(tmp_path / "imgs"), img_size=16, batch_size=2, num_workers=0, skip_bad_images=True)
    dm.setup()
    seen = sum(len(y) for _, y in dm.train_dataloader())
    assert seen == 5  # every readable image; the batch that held the truncated one is one smaller
    assert dm.bad_images == [str(bad)]


def test_an_unknown_model_name_is_one_line_with_close_matches(tmp_path):
    args = [
        "--config",
        str(REPO / "configs/quickstart.yaml"),
        "--model.init_args.model",
        "vit_nan_patch4_32",
        "--trainer.default_root_dir",
        str(tmp_path / "run"),
        "--data.init_args.root",
        str(tmp_path / "data"),
        "--data.init_args.num_train",
        "20",
        "--data.init_args.num_test",
        "10",
        "--data.init_args.val_split",
        "5",
    ]
    with pytest.raises(UnknownModelError):  # in Python: the registry's own error, not jsonargparse's wrapper
        VisionAttnCLI(args=args, run=False)
    with pytest.raises(SystemExit) as exit_info:  # the command line: one line, no traceback
        main(["fit", *args])
    line = str(exit_info.value.code)
    assert line.startswith("error: unknown model 'vit_nan_patch4_32'") and "\n" not in line
    assert "vit_nano_patch4_32" in line  # the close match


def test_a_setting_out_of_range_or_data_too_small_for_the_split_is_one_line(tmp_path):
    """Our own checks (a ValueError raised in vision_attn) reach the command line as one line naming the setting,
    whether they fire while building (jsonargparse wraps them) or in the datamodule's setup during the fit."""
    base = [
        "--config",
        str(REPO / "configs/quickstart.yaml"),
        "--trainer.default_root_dir",
        str(tmp_path / "run"),
        "--data.init_args.root",
        str(tmp_path / "data"),
        "--data.init_args.num_train",
        "20",
        "--data.init_args.num_test",
        "10",
    ]
    with pytest.raises(SystemExit) as exit_info:  # built: the task's constructor refuses the value
        main(["fit", *base, "--data.init_args.val_split", "5", "--model.init_args.ema_decay", "1.5"])
    line = str(exit_info.value.code)
    assert line.startswith("error: ") and "\n" not in line and "ema_decay must be in [0, 1); got 1.5" in line
    with pytest.raises(SystemExit) as exit_info:  # fit: the datamodule's setup refuses the split
        main(["fit", *base, "--data.init_args.val_split", "50"])
    line = str(exit_info.value.code)
    assert line == "error: val_split must be in [0, 20) (the train split has 20 images); got 50"
    with pytest.raises(ValueError, match="val_split must be in"):  # in Python: the error itself
        cli = VisionAttnCLI(args=[*base, "--data.init_args.val_split", "50"], run=False)
        cli.trainer.fit(cli.model, cli.datamodule)
