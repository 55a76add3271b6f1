"""Checkpoint reading and loading on hand-made files and a two-layer model: which tensors land where, which files
are refused (and that nothing in them runs), what the errors say."""

import argparse
import collections
import hashlib
import logging
import pickle

import pytest
import torch
from torch import nn

from vision_attn.models import checkpoint as C
from vision_attn.models.checkpoint import (
    Checkpoint,
    CheckpointError,
    UnsafeCheckpointError,
    load_state_dict,
    read_checkpoint,
    resolve_checkpoint,
)
from vision_attn.models.loader import load_pretrained, num_classes_in

RAN = []


def _run():
    RAN.append(1)
    return {}


class _Code:
    def __reduce__(self):
        return (_run, ())


class Tiny(nn.Module):
    def __init__(self, num_classes=3, extra=0, resettable=True):
        super().__init__()
        self.num_classes = num_classes
        self.body = nn.Linear(2, 4)
        self.head = nn.Linear(4, num_classes + extra)
        if resettable:
            self.reset_classifier = lambda n: None

    def get_classifier(self):
        return self.head


def _sd(model, fill=1.0):
    return {k: torch.full_like(v, fill) for k, v in model.state_dict().items()}


def _save(path, obj):
    torch.save(obj, path)
    return path


def test_resolve_local_paths(tmp_path, monkeypatch):
    f = _save(tmp_path / "w.pth", {"a": torch.ones(1)})
    assert resolve_checkpoint(str(f)) == f and resolve_checkpoint(f) == f
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_checkpoint("~/w.pth") == f
    with pytest.raises(CheckpointError, match=rf"^checkpoint {tmp_path / 'no.pth'} does not exist \(expected a file"):
        resolve_checkpoint(tmp_path / "no.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_checkpoint(tmp_path)  # a folder is no checkpoint


def test_resolve_url_downloads_once_into_the_cache(tmp_path, monkeypatch):
    calls = []

    def download(url, dst, progress=True):
        calls.append((url, dst, progress))
        torch.save({"a": torch.ones(1)}, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    url = "https://example.org/resolve/main/model.pth"
    want = tmp_path / "hub" / "checkpoints" / f"{hashlib.sha256(url.encode()).hexdigest()[:10]}-model.pth"
    assert resolve_checkpoint(url) == want and want.is_file()
    assert resolve_checkpoint(url) == want
    assert calls == [(url, str(want), True)]
    mine = tmp_path / "mine" / "deep"
    assert resolve_checkpoint("http://example.org/x/w.pth", cache_dir=mine).parent == mine

    def offline(url, dst, progress=True):
        raise OSError("no route")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(
        CheckpointError,
        match=r"cannot download https://example.org/b.pth \(no route\); without network"
        r".* or copy it to .*-b.pth$",
    ) as err:
        resolve_checkpoint("https://example.org/b.pth")
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_resolve_hf_hub_goes_through_the_hub_cache(tmp_path, monkeypatch):
    from vision_attn.models import download as hub

    seen = []
    monkeypatch.setattr(
        hub,
        "hub_download",
        lambda repo, names, revision=None, cache_dir=None: (
            seen.append((repo, names, revision, cache_dir)) or tmp_path / "x"
        ),
    )
    assert resolve_checkpoint("hf-hub:org/repo@v2", cache_dir="c") == tmp_path / "x"
    assert seen == [("org/repo", hub.WEIGHTS_NAMES, "v2", "c")]


def test_pickle_imports_reads_opcodes_without_running_them(tmp_path):
    (tmp_path / "p0").write_bytes(pickle.dumps(collections.OrderedDict, protocol=0))
    (tmp_path / "p4").write_bytes(pickle.dumps(["x", collections.OrderedDict], protocol=4))
    (tmp_path / "junk").write_bytes(b"\x00not a pickle")
    assert C._pickle_imports(tmp_path / "p0") == ["collections.OrderedDict"]
    assert C._pickle_imports(tmp_path / "p4") == ["collections.OrderedDict"]
    assert C._pickle_imports(tmp_path / "junk") is None


def test_read_refuses_code_and_names_what_it_would_import(tmp_path):
    RAN.clear()
    path = _save(tmp_path / "evil.pth", {"w": torch.ones(1), "x": _Code()})
    with pytest.raises(
        UnsafeCheckpointError,
        match=r"evil.pth: refused to load: .*it would import .*_run.*Nothing in it "
        r"was executed",
    ) as err:
        load_state_dict(path)
    assert RAN == [] and err.value.__cause__ is None and err.value.__suppress_context__
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps({"f": collections.OrderedDict, "g": _Code()}, protocol=2))
    with pytest.raises(UnsafeCheckpointError, match=r"\(it would import test_checkpoint._run\)"):
        C._read(raw)
    assert RAN == []


def test_read_errors_for_truncated_and_foreign_files(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(CheckpointError, match=r"bad.pth: truncated or not a PyTorch checkpoint \(") as err:
        C._read(bad)
    assert err.value.__cause__ is None
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty.pth: truncated or not a PyTorch checkpoint \(\w+"):
        C._read(empty)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00not a pickle")
    with pytest.raises(
        CheckpointError, match=r"junk.pth: not a PyTorch checkpoint \(the weights-only unpickler"
    ) as err:
        C._read(junk)
    assert type(err.value) is CheckpointError and err.value.__cause__ is None and err.value.__suppress_context__
    st = tmp_path / "w.safetensors"
    st.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(
        CheckpointError, match=r"w.safetensors: not a readable safetensors file \(truncated or foreign\?\)"
    ):
        C._read(st)


def test_read_safetensors_and_training_args(tmp_path):
    from safetensors.torch import save_file

    save_file({"a": torch.arange(3.0)}, str(tmp_path / "w.safetensors"))
    assert torch.equal(load_state_dict(tmp_path / "w.safetensors")["a"], torch.arange(3.0))
    _save(tmp_path / "detr.pth", {"model": {"a": torch.ones(2)}, "args": argparse.Namespace(lr=1e-4)})
    assert list(load_state_dict(tmp_path / "detr.pth")) == ["a"]


@pytest.mark.parametrize(
    "obj,want",
    [
        ({"a": torch.ones(1), "n": 3}, {"a"}),
        ({"state_dict_ema": {"e": torch.ones(1)}, "state_dict": {"s": torch.ones(1)}}, {"e"}),
        ({"model_ema": {"m": torch.ones(1)}, "model": {"x": torch.ones(1)}}, {"m"}),
        ({"epoch": 3, "model": {"module": {"deep": torch.ones(1)}}}, {"deep"}),
        ({"state_dict": {"model.a": torch.ones(1), "model.b": torch.ones(1), "step": 4}}, {"a", "b"}),
        ({"state_dict": {"model.a": torch.ones(1), "ema.module.a": torch.zeros(1), "ema.n": torch.ones(1)}}, {"a"}),
        ({"state_dict": {"model.a": torch.ones(1), "other": torch.ones(1)}}, {"model.a", "other"}),
        ({"module.a": torch.ones(1), "module.b": torch.ones(1)}, {"a", "b"}),
        ({"module.a": torch.ones(1), "b": torch.ones(1)}, {"module.a", "b"}),
        ({"state_dict": {"model.module.a": torch.ones(1)}}, {"a"}),
    ],
)
def test_unwrap_nestings(tmp_path, obj, want):
    sd = C._unwrap(obj, tmp_path / "f")
    assert set(sd) == want
    if "ema.module.a" in str(obj):
        assert sd["a"].item() == 0.0  # the EMA weights, not the raw ones


def test_unwrap_errors(tmp_path):
    with pytest.raises(CheckpointError, match=r"f: expected a dict of tensors, found list"):
        C._unwrap([torch.ones(1)], tmp_path / "f")
    with pytest.raises(
        CheckpointError,
        match=r"f: found no weights; expected a state dict or one nested under one of "
        r"\['state_dict_ema', .*\], found keys \['epoch', 'opt'\]",
    ):
        C._unwrap({"opt": {"lr": 1}, "epoch": 2}, tmp_path / "f")


def test_read_checkpoint_declared_classes(tmp_path):
    w = {"a": torch.ones(1)}
    ck = read_checkpoint(_save(tmp_path / "a.ckpt", {"state_dict": w, "num_classes": 4, "class_names": ["x", 2]}))
    assert ck == Checkpoint(tmp_path / "a.ckpt", ck.state_dict, 4, ["x", "2"]) and set(ck.state_dict) == {"a"}
    assert read_checkpoint(ck) is ck
    ck = read_checkpoint(
        _save(tmp_path / "b.ckpt", {"state_dict": w, "num_classes": torch.tensor(5), "class_names": ("p", "q")})
    )
    assert (ck.num_classes, ck.class_names) == (5, ["p", "q"]) and type(ck.num_classes) is int
    ck = read_checkpoint(
        _save(tmp_path / "c.ckpt", {"state_dict": w, "num_classes": torch.tensor([5, 6]), "class_names": "pq"})
    )
    assert (ck.num_classes, ck.class_names) == (None, None)
    ck = read_checkpoint(_save(tmp_path / "d.ckpt", w))
    assert (ck.path, ck.num_classes, ck.class_names) == (tmp_path / "d.ckpt", None, None)
    assert Checkpoint(tmp_path, {}) == (tmp_path, {}, None, None)


def test_num_classes_in():
    m = Tiny(3)
    assert num_classes_in(m, _sd(Tiny(7))) == 7
    detr = Tiny(3, extra=1)  # one more output: "no object"
    assert num_classes_in(detr, _sd(Tiny(90, extra=1))) == 90
    headless = {k: v for k, v in _sd(m).items() if not k.startswith("head.")}
    assert num_classes_in(m, headless) == 0
    assert num_classes_in(Tiny(3, resettable=False), headless) is None
    assert num_classes_in(m, {**headless, "head.bias": torch.ones(3)}) is None  # a head, but no weight to count
    m.checkpoint_filter_fn = lambda sd: {k.replace("fc.", "head."): v for k, v in sd.items()}
    assert num_classes_in(m, {"fc.weight": torch.ones(6, 4)}) == 6
    m.num_classes_in_state_dict = lambda sd: 42
    assert num_classes_in(m, {}) == 42
    headless_model = Tiny(3)
    headless_model.num_classes, headless_model.head = (
        0,
        nn.Identity(),
    )  # timm's num_classes=0: a head module without weights
    assert num_classes_in(headless_model, _sd(Tiny(7))) == 7
    plain = nn.Linear(2, 2)
    assert num_classes_in(plain, {"weight": torch.ones(2, 2)}) is None
    no_n = Tiny(3)
    del no_n.num_classes
    assert num_classes_in(no_n, _sd(Tiny(7))) is None
    orphan = Tiny(3)
    orphan.get_classifier = lambda: nn.Linear(1, 1)  # not one of its modules
    assert num_classes_in(orphan, _sd(Tiny(7))) is None


def test_load_pretrained_exact(tmp_path):
    src = Tiny(3)
    path = _save(tmp_path / "w.pth", {"state_dict": {f"model.{k}": v for k, v in _sd(src, 2.0).items()}})
    m = load_pretrained(Tiny(3), path)
    assert all(torch.all(v == 2.0) for v in m.state_dict().values())
    m2 = load_pretrained(Tiny(3), read_checkpoint(path))
    assert torch.equal(m2.head.weight, torch.full((3, 4), 2.0))


def test_load_pretrained_other_head_keeps_its_init(tmp_path, caplog):
    m = Tiny(3)
    head = m.head.weight.detach().clone()
    path = _save(tmp_path / "w.pth", _sd(Tiny(5), 2.0))
    with caplog.at_level(logging.WARNING, logger=C.__name__):
        load_pretrained(m, path)
    assert torch.equal(m.head.weight, head) and torch.all(m.body.weight == 2.0)
    assert "w.pth: classifier 'head' has 5 outputs in the checkpoint, 3 in the model; re-initialising it" in caplog.text
    caplog.clear()
    m = Tiny(3)
    head = m.head.bias.detach().clone()
    with caplog.at_level(logging.WARNING, logger=C.__name__):
        load_pretrained(
            m, _save(tmp_path / "h.pth", {k: v for k, v in _sd(m, 2.0).items() if not k.startswith("head.")})
        )
    assert torch.equal(m.head.bias, head) and torch.all(m.body.bias == 2.0)
    assert "h.pth: has no classifier 'head'; it keeps its initialisation" in caplog.text


def test_load_pretrained_other_head_without_bias(tmp_path, caplog):
    m = Tiny(3)
    m.head = nn.Linear(4, 3, bias=False)
    src = Tiny(5)
    src.head = nn.Linear(4, 5, bias=False)
    with caplog.at_level(logging.WARNING, logger=C.__name__):
        load_pretrained(m, _save(tmp_path / "w.pth", _sd(src, 2.0)))
    assert "has 5 outputs in the checkpoint, 3 in the model" in caplog.text and torch.all(m.body.weight == 2.0)


def test_load_pretrained_mismatches_are_errors(tmp_path):
    wide = _sd(Tiny(3), 2.0)
    wide["body.weight"] = torch.ones(4, 5)
    wide["body.bias"] = torch.ones(6)
    with pytest.raises(
        CheckpointError,
        match=r"w.pth: 2 tensor\(s\) do not fit Tiny: body.weight: checkpoint \(4, 5\) "
        r"vs model \(4, 2\); body.bias: checkpoint \(6,\) vs model \(4,\)$",
    ):
        load_pretrained(Tiny(3), _save(tmp_path / "w.pth", wide))
    sd = _sd(Tiny(3), 2.0)
    del sd["body.bias"]
    sd["extra.w"] = torch.ones(1)
    path = _save(tmp_path / "s.pth", sd)
    with pytest.raises(
        CheckpointError,
        match=r"s.pth: does not match Tiny: missing 1 key\(s\) \['body.bias'\], "
        r"unexpected 1 key\(s\) \['extra.w'\]$",
    ):
        load_pretrained(Tiny(3), path)
    only_missing = _save(tmp_path / "m.pth", {k: v for k, v in sd.items() if k != "extra.w"})
    with pytest.raises(CheckpointError, match=r"missing 1 key"):
        load_pretrained(Tiny(3), only_missing)
    m = Tiny(3)
    bias = m.body.bias.detach().clone()
    load_pretrained(m, path, strict=False)
    assert torch.equal(m.body.bias, bias) and torch.all(m.body.weight == 2.0) and torch.all(m.head.weight == 2.0)


def test_load_pretrained_maps_foreign_keys(tmp_path):
    m = Tiny(3)
    m.checkpoint_filter_fn = lambda sd: {k.replace("fc.", "head.").replace("enc.", "body."): v for k, v in sd.items()}
    foreign = {k.replace("head.", "fc.").replace("body.", "enc."): v for k, v in _sd(m, 3.0).items()}
    load_pretrained(m, _save(tmp_path / "f.pth", foreign))
    assert torch.all(m.head.weight == 3.0) and torch.all(m.body.bias == 3.0)
    plain = nn.Sequential(nn.Linear(2, 2))  # no classifier, no filter
    load_pretrained(plain, _save(tmp_path / "p.pth", {"0.weight": torch.ones(2, 2), "0.bias": torch.ones(2)}))
    assert torch.all(plain[0].weight == 1.0)
