"""predictions.json record by record: exact scores, boxes, labels, category ids, order, and the writer callback's
choices (names, DDP gathering, rank 0, output folder), with plain stand-ins for the trainer and task."""

import json
from types import SimpleNamespace

import torch
from torch import nn

from vision_attn.callbacks import predictions as P
from vision_attn.callbacks.predictions import (
    PredictionWriter,
    category_map,
    class_names_for,
    classification_records,
    default_prediction_writer,
    detection_records,
    finalize_records,
    is_file_batch,
    write_predictions,
)


def _infos(*errors):
    return [
        {"index": i, "file": f"f{i}.jpg", "width": 40 + i, "height": 30 + i, **({"error": "bad"} if e else {})}
        for i, e in enumerate(errors)
    ]


class _Named(nn.Module):  # a ClassifierModel (num_classes, get_classifier) with a pretrained_cfg
    def __init__(self, n, names=None):
        super().__init__()
        self.num_classes = n
        self.pretrained_cfg = {"label_names": names, "num_classes": n} if names else {"x": 1}

    def get_classifier(self):
        return nn.Identity()


def test_is_file_batch():
    assert is_file_batch([{"file": "a"}]) and is_file_batch(({"file": "a"}, {"file": "b", "x": 1}))
    assert not is_file_batch([]) and not is_file_batch(None) and not is_file_batch({"file": "a"})
    assert not is_file_batch([{"file": "a"}, {"boxes": 1}]) and not is_file_batch(["file"])


def test_classification_records_pin_scores_labels_and_order():
    probs = torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]], dtype=torch.float64)
    infos = _infos(False, True, False)
    recs = classification_records(probs, infos, top_k=2, names=["cat", "", "dog"])
    assert recs == [
        {"_index": 1, "file": "f1.jpg", "error": "bad"},
        {
            "_index": 0,
            "file": "f0.jpg",
            "top_k": [{"class_id": 1, "label": "1", "score": 0.6}, {"class_id": 2, "label": "dog", "score": 0.3}],
        },
        {
            "_index": 2,
            "file": "f2.jpg",
            "top_k": [{"class_id": 0, "label": "cat", "score": 0.5}, {"class_id": 2, "label": "dog", "score": 0.3}],
        },
    ]
    third = torch.tensor([[1 / 3, 0.123456789, 1 - 1 / 3 - 0.123456789]])
    (rec,) = classification_records(third, _infos(False), top_k=10, names=None)  # top_k above K: all K
    assert [t["score"] for t in rec["top_k"]] == [0.54321, 0.333333, 0.123457]
    assert [t["label"] for t in rec["top_k"]] == ["2", "0", "1"]
    assert classification_records(None, _infos(True), 5, None) == [{"_index": 0, "file": "f0.jpg", "error": "bad"}]


def test_detection_records_pin_boxes_threshold_categories_and_sort():
    det = {
        "scores": torch.tensor([0.5, 0.9, 0.4999, 0.7, 0.95]),
        "labels": torch.tensor([1, 2, 1, 3, 1]),
        "boxes": torch.tensor(
            [
                [1.234, 2.345, 11.0, 22.5],
                [0.0, 0.0, 4.0, 3.0],
                [0, 0, 1, 1],
                [5.0, 5.0, 6.0, 6.0],
                [10.111, 20.226, 30.0, 40.0],
            ],
            dtype=torch.float64,
        ),
    }
    cats = {1: (7, "cat"), 2: (9, "dog")}  # label 3 is no category
    recs = detection_records([det], _infos(True, False), 0.5, cats)
    assert recs[0] == {"_index": 0, "file": "f0.jpg", "error": "bad"}
    assert recs[1] == {
        "_index": 1,
        "file": "f1.jpg",
        "width": 41,
        "height": 31,
        "detections": [
            {"bbox": [10.11, 20.23, 19.89, 19.77], "score": 0.95, "category_id": 7, "label": "cat"},
            {"bbox": [0.0, 0.0, 4.0, 3.0], "score": 0.9, "category_id": 9, "label": "dog"},
            {"bbox": [1.23, 2.35, 9.77, 20.15], "score": 0.5, "category_id": 7, "label": "cat"},
        ],
    }
    score = detection_records(
        [{**det, "scores": torch.full((5,), 0.1234567, dtype=torch.float64)}], _infos(False), 0.0, cats
    )[0]["detections"][0]["score"]
    assert score == 0.123457


def test_category_map_sources():
    assert category_map(3) == {0: (0, "0"), 1: (1, "1"), 2: (2, "2")}
    assert category_map(4, ["", "a", "", "b"]) == {1: (1, "a"), 3: (3, "b")}
    assert category_map(3, ["", "a"]) == {1: (1, "a"), 2: (2, "2")}  # names shorter than the head
    assert category_map(2, ["x", "y"], label_to_category_id=[5, 8]) == {0: (5, "x"), 1: (8, "y")}
    coco = SimpleNamespace(label_to_category_id=[1, 3, 4], category_ids=[1, 4])
    assert category_map(3, ["p", "q", "r"], coco) == {0: (1, "p"), 2: (4, "r")}
    assert category_map(3, ["p", "q", "r"], coco, label_to_category_id=[9, 9, 9]) == {0: (1, "p"), 2: (4, "r")}

    class NoFile:
        label_to_category_id = [1, 3]

        @property
        def category_ids(self):
            raise FileNotFoundError("instances.json")

    assert category_map(2, ["p", "q"], NoFile()) == {0: (0, "p"), 1: (1, "q")}
    assert category_map(2, None, SimpleNamespace(classes=["z"]), label_to_category_id=[4, 6]) == {
        0: (4, "0"),
        1: (6, "1"),
    }


def test_class_names_for_order_of_sources():
    own = _Named(2, ["own0", "own1"])
    dm = SimpleNamespace(classes=[10, 11])
    assert class_names_for(own, dm, checkpoint_names=[1, 2]) == ["1", "2"]
    assert class_names_for(own, dm) == ["own0", "own1"]
    assert class_names_for(_Named(2), dm) == ["10", "11"]
    assert class_names_for(_Named(2), None) is None

    class Broken:
        @property
        def classes(self):
            raise RuntimeError("no files")

    assert class_names_for(_Named(2), Broken()) is None
    coco = class_names_for(_Named(91), None, detection=True)
    assert len(coco) == 91 and coco[0] == "" and coco[1] == "person" and coco[12] == "" and coco[13] == "stop sign"
    assert class_names_for(_Named(91), None) is None and class_names_for(_Named(90), None, detection=True) is None


def test_finalize_and_write_predictions(tmp_path, capsys):
    recs = [{"_index": 2, "file": "c"}, {"_index": 0, "file": "a", "error": "unreadable"}, {"_index": 1, "file": "b"}]
    assert finalize_records(recs) == [{"file": "a", "error": "unreadable"}, {"file": "b"}, {"file": "c"}]
    path = tmp_path / "new" / "predictions.json"
    out = write_predictions(recs, path)
    assert out == finalize_records(recs)
    assert path.read_text() == json.dumps(out, indent=2) + "\n"
    assert capsys.readouterr().err == "skipped a: unreadable\n"


def _module(n=3, detection=False, names=None):
    model = _Named(n, names)
    return SimpleNamespace(model=model, num_classes=n, class_names=None)


def _trainer(tmp_path, rank=0, dm=None, log_dir="log"):
    return SimpleNamespace(
        datamodule=dm,
        global_rank=rank,
        log_dir=str(tmp_path / log_dir) if log_dir else None,
        default_root_dir=str(tmp_path / "root"),
        callbacks=[],
    )


def test_writer_defaults_and_reset():
    w = PredictionWriter()
    assert (w.output_dir, w.top_k, w.threshold, w.records, w.path, w._names) == (None, 5, 0.5, [], None, None)
    assert w.interval.on_batch and not w.interval.on_epoch
    w.records, w._names = [1], ["x"]
    w.on_predict_start(None, None)
    assert (w.records, w._names) == ([], None)


def test_writer_classification_end_to_end(tmp_path, capsys):
    w = PredictionWriter(top_k="2")
    pl_module, trainer = (
        _module(3, names=["a", "b", "c"]),
        _trainer(tmp_path, dm=SimpleNamespace(classes=["x", "y", "z"])),
    )
    w.on_predict_start(trainer, pl_module)
    w.write_on_batch_end(trainer, pl_module, None, None, ({"boxes": 1},), 0)  # not a file batch: ignored
    w.write_on_batch_end(trainer, pl_module, None, None, {"file": "x"}, 0)
    assert w.records == []
    infos = _infos(False, True)
    w.write_on_batch_end(trainer, pl_module, torch.tensor([[0.2, 0.7, 0.1]]), None, (torch.zeros(1), infos), 0)
    w.write_on_batch_end(trainer, pl_module, None, None, (torch.zeros(0), [{"index": 2, "file": "g", "error": "e"}]), 1)
    w.on_predict_end(trainer, pl_module)
    assert w.path == tmp_path / "log" / "predictions.json"
    assert json.loads(w.path.read_text()) == [
        {
            "file": "f0.jpg",
            "top_k": [{"class_id": 1, "label": "b", "score": 0.7}, {"class_id": 0, "label": "a", "score": 0.2}],
        },
        {"file": "f1.jpg", "error": "bad"},
        {"file": "g", "error": "e"},
    ]
    assert f"wrote {w.path}" in capsys.readouterr().out


def test_writer_uses_checkpoint_names_and_caches_them(tmp_path):
    w = PredictionWriter(output_dir=str(tmp_path / "out"), top_k=1)
    pl_module, trainer = _module(2), _trainer(tmp_path, dm=SimpleNamespace(classes=["x", "y"]))
    pl_module.class_names = ["ck0", "ck1"]
    w.write_on_batch_end(trainer, pl_module, torch.tensor([[0.3, 0.7]]), None, (0, _infos(False)), 0)
    pl_module.class_names = ["other0", "other1"]  # names are looked up once per predict
    w.write_on_batch_end(trainer, pl_module, torch.tensor([[0.8, 0.2]]), None, (0, [{"index": 1, "file": "h"}]), 0)
    assert [r["top_k"][0]["label"] for r in w.records] == ["ck1", "ck0"]
    w.on_predict_end(trainer, pl_module)
    assert w.path == tmp_path / "out" / "predictions.json" and w.path.is_file()


def test_writer_detection_uses_the_category_map(tmp_path):
    w = PredictionWriter(threshold=0.3)
    pl_module = _module(3, names=["", "cat", "dog"])
    trainer = _trainer(tmp_path, log_dir=None)
    det = {
        "scores": torch.tensor([0.35, 0.2, 0.9]),
        "labels": torch.tensor([1, 2, 0]),
        "boxes": torch.tensor([[0.0, 0.0, 2.0, 2.0]] * 3),
    }
    w.write_on_batch_end(trainer, pl_module, [det], None, (0, _infos(False)), 0)
    w.on_predict_end(trainer, pl_module)
    assert w.path == tmp_path / "root" / "predictions.json"  # no log_dir: the root dir
    (rec,) = json.loads(w.path.read_text())
    assert rec["detections"] == [{"bbox": [0.0, 0.0, 2.0, 2.0], "score": 0.35, "category_id": 1, "label": "cat"}]


def test_writer_writes_nothing_without_records_or_off_rank_zero(tmp_path):
    w = PredictionWriter()
    pl_module = _module(2)
    w.on_predict_end(_trainer(tmp_path), pl_module)
    assert w.path is None
    w.records = [{"_index": 0, "file": "a", "top_k": []}]
    w.on_predict_end(_trainer(tmp_path, rank=1), pl_module)
    assert w.path is None and not (tmp_path / "log").exists()


def test_writer_gathers_every_rank_and_keeps_a_repeated_file_once(tmp_path, monkeypatch):
    other = [{"_index": 1, "file": "b", "top_k": []}, {"_index": 0, "file": "a", "top_k": [], "dup": 1}]

    def all_gather_object(parts, obj):
        assert parts == [None, None]
        parts[0], parts[1] = obj, other

    fake = SimpleNamespace(
        is_available=lambda: True,
        is_initialized=lambda: True,
        get_world_size=lambda: 2,
        all_gather_object=all_gather_object,
    )
    monkeypatch.setattr(P, "dist", fake)
    w = PredictionWriter()
    w.records = [{"_index": 0, "file": "a", "top_k": []}, {"_index": 2, "file": "c", "top_k": []}]
    w.on_predict_end(_trainer(tmp_path), _module(2))
    assert [r["file"] for r in json.loads(w.path.read_text())] == ["a", "b", "c"]
    fake.get_world_size = lambda: 1  # one process: nothing to gather
    fake.all_gather_object = None
    w.on_predict_end(_trainer(tmp_path), _module(2))
    assert [r["file"] for r in json.loads(w.path.read_text())] == ["a", "c"]


def test_default_prediction_writer_defers_to_the_users():
    (w,) = default_prediction_writer(SimpleNamespace(callbacks=[object()]))
    assert isinstance(w, PredictionWriter)
    assert len(default_prediction_writer(SimpleNamespace(callbacks=None))) == 1
    assert len(default_prediction_writer(object())) == 1
    assert default_prediction_writer(SimpleNamespace(callbacks=[PredictionWriter()])) == []
