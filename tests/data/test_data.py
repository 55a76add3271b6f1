"""Data layer: seeded stratified fractions, the offline shapes task in CIFAR's format, datamodules' splits and errors."""

from __future__ import annotations

import json
import pickle
import socket
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import CIFAR10

from vision_attn.data import (
    AlbumentationsTransform,
    CIFARDataModule,
    ImageFolderDataModule,
    ShapesDataset,
    SyntheticShapesDataModule,
    eval_transform,
    generate_shapes,
    stratified_subset,
    train_transform,
)
from vision_attn.data.synthetic import SHAPE_CLASSES, shapes_folder_name

SMALL = dict(num_train=600, num_test=200, seed=3)


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    generate_shapes(root, **SMALL)
    return root


def _small_dm(root: Path, **kwargs) -> SyntheticShapesDataModule:
    return SyntheticShapesDataModule(root=str(root), **{"batch_size": 32, "val_split": 100, **SMALL, **kwargs})


# ---- stratified_subset ---------------------------------------------------------------------------------------------
LABELS = np.repeat(np.arange(7), [50, 120, 33, 80, 7, 200, 61])


def test_subset_same_seed_same_indices_other_seed_other_indices():
    a = stratified_subset(LABELS, 0.3, seed=1)
    assert (
        a == stratified_subset(LABELS.tolist(), 0.3, seed=1) == stratified_subset(torch.as_tensor(LABELS), 0.3, seed=1)
    )
    assert a == sorted(a) and len(set(a)) == len(a)
    assert a != stratified_subset(LABELS, 0.3, seed=2)


def test_subset_nested_across_fractions():
    for seed in (0, 5):
        previous: set[int] = set()
        for fraction in (0.05, 0.1, 0.2, 0.5, 1.0):
            current = set(stratified_subset(LABELS, fraction, seed))
            assert previous <= current, (seed, fraction)
            previous = current
        assert previous == set(range(len(LABELS)))


def test_subset_keeps_class_proportions():
    for fraction in (0.01, 0.1, 0.37):
        counts = Counter(LABELS[stratified_subset(LABELS, fraction, seed=0)].tolist())
        for c, n_c in Counter(LABELS.tolist()).items():
            assert abs(counts[c] - fraction * n_c) <= 1 and counts[c] >= 1, (fraction, c)


def test_subset_of_a_class_depends_only_on_that_class():
    # adding images of another class does not change which images of class 0 are picked
    more = np.concatenate([LABELS, np.full(40, 9)])
    pick = lambda labels: [i for i in stratified_subset(labels, 0.2, 4) if labels[i] == 0]  # noqa: E731
    assert pick(LABELS) == pick(more)


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_subset_rejects_bad_fraction(fraction):
    with pytest.raises(ValueError, match=rf"train_fraction.*{fraction}"):
        stratified_subset(LABELS, fraction, seed=0)


# ---- transforms ----------------------------------------------------------------------------------------------------
def test_transforms_accept_pil_and_numpy_and_return_normalised_chw_float():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    ev = eval_transform(mean, std)
    out = ev(Image.fromarray(image))
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    expected = (
        torch.from_numpy(image).permute(2, 0, 1).float() / 255 - torch.tensor(mean)[:, None, None]
    ) / torch.tensor(std)[:, None, None]
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(ev(image), out)
    assert eval_transform(mean, std, img_size=224)(image).shape == (3, 224, 224)
    assert train_transform(mean, std, img_size=64)(image).shape == (3, 64, 64)


def test_train_transform_pads_with_zeros_and_crops_back():
    image = np.full((32, 32, 3), 255, dtype=np.uint8)
    tf = train_transform((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), crop_padding=4)
    outs = [tf(image) for _ in range(30)]
    assert all(o.shape == (3, 32, 32) for o in outs)
    assert all(o.min() >= 0 and o.max() <= 1 for o in outs)
    assert any(o.min() == 0 for o in outs), "random crop never showed the zero padding"
    assert any(not torch.equal(outs[0], o) for o in outs[1:]), "training transform is not random"


def test_adapter_converts_uint8_pipeline_output_to_float():
    import albumentations as A

    out = AlbumentationsTransform(A.Compose([A.HorizontalFlip(p=1.0)]))(np.zeros((8, 6, 3), np.uint8))
    assert out.shape == (3, 8, 6) and out.is_floating_point()


# ---- shapes: generation and torchvision's loader -------------------------------------------------------------------
def test_generation_is_deterministic_and_in_cifar_layout(tmp_path):
    a = generate_shapes(tmp_path / "a", **SMALL)
    b = generate_shapes(tmp_path / "b", **SMALL)
    assert a.name == shapes_folder_name(600, 200, 32, 3)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta", "checksums.json"]
    assert sorted(p.name for p in a.iterdir()) == sorted(names)
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    sums = json.loads((a / "checksums.json").read_text())
    assert set(sums) == set(names) - {"checksums.json"}
    with open(a / "data_batch_1", "rb") as f:
        batch = pickle.load(f, encoding="latin1")
    assert batch["data"].dtype == np.uint8 and batch["data"].shape == (120, 3 * 32 * 32)
    assert len(batch["labels"]) == 120
    with open(a / "batches.meta", "rb") as f:
        assert pickle.load(f)["label_names"] == list(SHAPE_CLASSES)
    # a different seed gives different images; the existing folder is left alone
    assert (generate_shapes(tmp_path / "a", **{**SMALL, "seed": 4}) / "test_batch").read_bytes() != (
        a / "test_batch"
    ).read_bytes()
    mtime = (a / "data_batch_1").stat().st_mtime_ns
    assert generate_shapes(tmp_path / "a", **SMALL) == a and (a / "data_batch_1").stat().st_mtime_ns == mtime
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".")], "temporary folder left behind"


def test_torchvision_cifar10_loader_reads_the_shapes(shapes_root):
    folder = shapes_root / shapes_folder_name(600, 200, 32, 3)
    sums = json.loads((folder / "checksums.json").read_text())

    class Plain(CIFAR10):  # torchvision's class, only pointed at our files
        base_folder = folder.name
        train_list = [[f"data_batch_{i}", sums[f"data_batch_{i}"]] for i in range(1, 6)]
        test_list = [["test_batch", sums["test_batch"]]]
        meta = {"filename": "batches.meta", "key": "label_names", "md5": sums["batches.meta"]}

    train, test = Plain(shapes_root, train=True), Plain(shapes_root, train=False)
    assert len(train) == 600 and len(test) == 200
    assert train.classes == list(SHAPE_CLASSES) and len(SHAPE_CLASSES) >= 10
    image, label = train[0]
    assert image.size == (32, 32) and image.mode == "RGB"
    assert set(train.targets) == set(range(len(SHAPE_CLASSES)))  # every class present, no label out of range
    assert max(Counter(train.targets).values()) - min(Counter(train.targets).values()) <= 1  # balanced: chance = 10%
    # ShapesDataset is the same loader
    ours = ShapesDataset(shapes_root, train=True, **SMALL)
    np.testing.assert_array_equal(ours.data, train.data)
    assert ours.targets == train.targets
    # not blank: the images vary, and a shape differs from its background
    assert train.data.std() > 20


def test_relational_task_is_deterministic_balanced_and_has_four_relation_classes(tmp_path):
    from vision_attn.data.synthetic import RELATIONAL_CLASSES

    args = dict(num_train=200, num_test=40, seed=5, task="relational")
    a, b = generate_shapes(tmp_path / "a", **args), generate_shapes(tmp_path / "b", **args)
    assert a.name == shapes_folder_name(200, 40, 32, 5, "relational") != shapes_folder_name(200, 40, 32, 5)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    train, test = (ShapesDataset(tmp_path / "a", train=t, **args) for t in (True, False))
    assert train.classes == list(RELATIONAL_CLASSES) and len(RELATIONAL_CLASSES) == 4
    assert Counter(train.targets) == {c: 50 for c in range(4)} and Counter(test.targets) == {c: 10 for c in range(4)}
    shapes = ShapesDataset(
        generate_shapes(tmp_path / "a", num_train=200, num_test=40, seed=5).parent,
        train=False,
        num_train=200,
        num_test=40,
        seed=5,
    )
    assert not np.array_equal(shapes.data, test.data)  # a different task, not a relabelling
    dm = SyntheticShapesDataModule(root=str(tmp_path / "a"), val_split=40, train_fraction=0.5, **args)
    dm.setup()
    assert dm.num_classes == 4 and dm.classes == list(RELATIONAL_CLASSES) and dm.n_train == 80
    with pytest.raises(ValueError, match=r"task must be one of \['shapes', 'relational'\]; got 'relation'"):
        SyntheticShapesDataModule(task="relation")


def test_shapes_at_64px(tmp_path):
    generate_shapes(tmp_path, num_train=50, num_test=20, img_size=64)
    ds = ShapesDataset(tmp_path, train=False, num_train=50, num_test=20, img_size=64)
    assert ds.data.shape == (20, 64, 64, 3) and ds[0][0].size == (64, 64)
    with pytest.raises(ValueError, match="img_size"):
        generate_shapes(tmp_path, num_train=50, num_test=20, img_size=40)


def test_tampered_batch_file_is_refused_naming_it(tmp_path):
    folder = generate_shapes(tmp_path, **SMALL)
    raw = bytearray((folder / "data_batch_3").read_bytes())
    raw[-100] ^= 0xFF  # one flipped pixel byte: still a valid pickle
    (folder / "data_batch_3").write_bytes(bytes(raw))
    with pytest.raises(RuntimeError, match=r"data_batch_3.*md5"):
        ShapesDataset(tmp_path, train=False, **SMALL)  # the test split reads fine, but torchvision checks all files
    dm = _small_dm(tmp_path)
    with pytest.raises(RuntimeError, match=r"data_batch_3"):
        dm.setup("fit")


def test_shapes_dataset_without_generated_data_says_how_to_generate(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"checksums\.json.*generate_shapes"):
        ShapesDataset(tmp_path, **SMALL)


# ---- datamodules -----------------------------------------------------------------------------------------------------
@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("name, folder", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")])
def test_cifar_missing_files_name_the_folder_and_never_download(tmp_path, no_network, name, folder):
    dm = CIFARDataModule(name=name, root=str(tmp_path / "nowhere"), num_workers=0)
    assert dm.num_classes == (10 if name == "cifar10" else 100)
    for step in (dm.prepare_data, dm.setup):
        with pytest.raises(FileNotFoundError) as err:
            step()
        message = str(err.value)
        assert str(tmp_path / "nowhere" / folder) in message
        assert "download=True" in message and "--data.init_args.download true" in message
    assert not (tmp_path / "nowhere").exists()


def test_cifar_partial_download_names_missing_files(tmp_path, no_network):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py.*data_batch_2"):
        CIFARDataModule(root=str(tmp_path)).prepare_data()


def test_cifar_corrupted_file_is_named(tmp_path, no_network):
    # the real file names with the wrong content: torchvision's md5 check refuses it, our error names the file
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name, _ in CIFAR10.train_list + CIFAR10.test_list + [[CIFAR10.meta["filename"], None]]:
        (folder / name).write_bytes(b"not cifar")
    with pytest.raises(RuntimeError, match=r"cifar-10-batches-py/data_batch_1 is corrupted"):
        CIFARDataModule(root=str(tmp_path), num_workers=0).setup("fit")


def test_cifar_datamodule_argument_errors():
    with pytest.raises(ValueError, match=r"cifar10.*cifar100.*'mnist'"):
        CIFARDataModule(name="mnist")
    with pytest.raises(ValueError, match=r"train_fraction.*1\.5"):
        CIFARDataModule(train_fraction=1.5)


def test_shapes_datamodule_splits(tmp_path):
    dm = _small_dm(tmp_path)
    assert dm.num_classes == len(SHAPE_CLASSES) == len(dm.classes)
    assert dm.hparams["num_train"] == 600 and "name" not in dm.hparams  # the CLI sees this class's arguments
    dm.prepare_data()
    dm.setup("fit")
    assert dm.n_train == 500 and len(dm.val_set) == 100 and len(dm.test_set) == 200
    assert not set(dm.train_indices) & set(dm.val_indices), "train and validation images overlap"
    val_labels = Counter(np.asarray(dm.train_set.dataset.targets)[dm.val_indices].tolist())
    assert set(val_labels.values()) == {10}, "validation hold-out is not stratified"

    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert len(dm.train_dataloader()) == 500 // 32, "train loader should drop the last partial batch"
    xv, yv = next(iter(dm.val_dataloader()))
    assert xv.shape == (32, 3, 32, 32) and -1.0 <= xv.min() and xv.max() <= 1.0  # (x - 0.5) / 0.5
    assert sum(len(b[1]) for b in dm.test_dataloader()) == 200
    # evaluation is deterministic, training augments
    assert torch.equal(dm.val_set[0][0], dm.val_set[0][0])


def test_validation_fixed_across_fraction_seed_and_fractions_nested(shapes_root):
    modules = {}
    for fraction, seed in [(0.2, 0), (0.5, 0), (1.0, 0), (0.2, 1)]:
        dm = _small_dm(shapes_root, train_fraction=fraction, fraction_seed=seed)
        dm.setup("fit")
        modules[fraction, seed] = dm
    vals = {tuple(dm.val_indices) for dm in modules.values()}
    assert len(vals) == 1, "validation images changed with train_fraction / fraction_seed"
    train = {k: set(dm.train_indices) for k, dm in modules.items()}
    assert train[0.2, 0] < train[0.5, 0] < train[1.0, 0]
    assert train[0.2, 0] != train[0.2, 1]
    assert modules[0.2, 0].n_train == 100
    again = _small_dm(shapes_root, train_fraction=0.2, fraction_seed=0)
    again.setup("fit")
    assert again.train_indices == modules[0.2, 0].train_indices


def test_val_split_zero_validates_on_test_split(shapes_root):
    dm = _small_dm(shapes_root, val_split=0)
    dm.setup("fit")
    assert dm.n_train == 600 and dm.val_set is dm.test_set and len(dm.val_set) == 200


def test_setup_without_prepare_data_generates(tmp_path):
    dm = _small_dm(tmp_path)
    dm.setup("fit")  # e.g. a DDP rank that skipped prepare_data
    assert dm.n_train == 500 and dm.dataset_dir.is_dir()


# ---- image folders -------------------------------------------------------------------------------------------------
def _write_folder(root: Path, split: str, classes: list[str], per_class: int) -> None:
    rng = np.random.default_rng(0)
    for c in classes:
        (root / split / c).mkdir(parents=True)
        for i in range(per_class):
            size = (int(rng.integers(40, 80)), int(rng.integers(40, 80)), 3)
            Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8)).save(root / split / c / f"{i}.png")


def test_image_folder_datamodule(tmp_path):
    _write_folder(tmp_path, "train", ["cat", "dog", "emu"], per_class=6)
    _write_folder(tmp_path, "val", ["cat", "dog", "emu"], per_class=2)
    dm = ImageFolderDataModule(str(tmp_path), img_size=32, batch_size=4, num_workers=0, train_fraction=0.5)
    assert dm.num_classes == 3 and dm.classes == ["cat", "dog", "emu"]
    dm.prepare_data()
    dm.setup("fit")
    assert dm.n_train == 9 and Counter(dm.train_set.dataset.targets[i] for i in dm.train_set.indices) == {
        0: 3,
        1: 3,
        2: 3,
    }
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    xt, yt = next(iter(dm.test_dataloader()))  # test_dir defaults to val_dir
    assert xt.shape == (4, 3, 32, 32) and len(dm.test_set) == 6


def test_image_folder_errors(tmp_path):
    _write_folder(tmp_path, "train", ["cat", "dog"], per_class=1)
    _write_folder(tmp_path, "val", ["cat", "emu"], per_class=1)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "holdout")):
        ImageFolderDataModule(str(tmp_path), test_dir="holdout", num_workers=0).prepare_data()
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope" / "train")):
        ImageFolderDataModule(str(tmp_path / "nope")).num_classes
    with pytest.raises(ValueError) as err:
        ImageFolderDataModule(str(tmp_path), num_workers=0).setup("fit")
    message = str(err.value)
    assert str(tmp_path / "train") in message and str(tmp_path / "val") in message
    assert "dog" in message and "emu" in message
