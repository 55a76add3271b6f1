"""The sweep journal (results.csv, result.json) byte for byte: what a resumed sweep reads back is what was written."""

import json
import os

import pytest

from vision_attn.run.data_size.journal import (
    PROVENANCE_COLUMNS,
    RESULT_COLUMNS,
    append_result,
    read_result_json,
    read_results,
    write_result_json,
)

HEADER = (
    "model,fraction,seed,n_train,top1,top5,train_seconds,images_per_second,devices,steps,params,cell_hash,"
    "code_version\n"
)


def _row(model="vit", fraction=0.5, seed=1, **kw):
    r = {
        "model": model,
        "fraction": fraction,
        "seed": seed,
        "n_train": 25,
        "top1": 0.25,
        "top5": 0.75,
        "train_seconds": 1.5,
        "images_per_second": 12.5,
        "devices": 2,
        "steps": 7,
        "params": 1234,
        "cell_hash": "h1",
        "code_version": "v1",
    }
    r.update(kw)
    return r


def test_columns_are_the_documented_ones():
    assert RESULT_COLUMNS == tuple(HEADER.strip().split(","))
    assert PROVENANCE_COLUMNS == ("cell_hash", "code_version")


def test_append_writes_the_exact_csv_and_reads_back_typed_values(tmp_path):
    path = tmp_path / "new" / "sweep" / "results.csv"  # the folders do not exist yet
    append_result(path, _row())
    append_result(path, _row("cnn", steps=None, params=None, code_version=None))
    assert path.read_text() == (
        HEADER + "vit,0.5,1,25,0.25,0.75,1.5,12.5,2,7,1234,h1,v1\ncnn,0.5,1,25,0.25,0.75,1.5,12.5,2,,,h1,\n"
    )
    assert not (path.parent / "results.csv.tmp").exists()
    first, second = read_results(path)
    assert first == _row()
    assert [type(first[c]) for c in RESULT_COLUMNS] == [
        str,
        float,
        int,
        int,
        float,
        float,
        float,
        float,
        int,
        int,
        int,
        str,
        str,
    ]
    assert second == _row("cnn", steps=None, params=None, code_version="")


def test_append_to_an_empty_file_writes_the_header(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text("")
    assert read_results(path) == []
    append_result(path, _row())
    assert path.read_text().startswith(HEADER) and path.read_text().count("\n") == 2


def test_missing_file_reads_as_no_rows(tmp_path):
    assert read_results(tmp_path / "nothing.csv") == []
    assert read_results(str(tmp_path / "nothing.csv")) == []


def test_append_after_a_row_without_newline_starts_a_new_line(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text(HEADER + "vit,0.5,1,25,0.25,0.75,1.5,12.5,2,7,1234,h1,v1")  # complete, no newline
    assert [r["model"] for r in read_results(str(path))] == ["vit"]
    assert path.read_text().endswith("v1")  # a complete row is not rewritten away
    inode = path.stat().st_ino
    append_result(path, _row("cnn"))
    assert path.read_text() == (
        HEADER + "vit,0.5,1,25,0.25,0.75,1.5,12.5,2,7,1234,h1,v1\ncnn,0.5,1,25,0.25,0.75,1.5,12.5,2,7,1234,h1,v1\n"
    )
    assert path.stat().st_ino == inode  # appended in place: a current journal is never rewritten


def test_append_to_a_current_file_never_rewrites_its_rows(tmp_path):
    path = tmp_path / "results.csv"
    text = HEADER + "vit,0.50,1,25,0.25,0.75,1.5,12.5,2,7,1234,h1,v1\n"  # as a user may have edited it
    path.write_text(text)
    append_result(path, _row("cnn"))
    assert path.read_text() == text + "cnn,0.5,1,25,0.25,0.75,1.5,12.5,2,7,1234,h1,v1\n"


def test_a_torn_last_line_is_dropped_and_the_file_rewritten(tmp_path):
    path = tmp_path / "results.csv"
    good = "vit,0.5,1,25,0.25,0.75,1.5,12.5,2,7,1234,h1,v1\n"
    path.write_text(HEADER + good + "cnn,0.5,1,2")  # killed mid-write
    rows = read_results(path)
    assert [r["model"] for r in rows] == ["vit"]
    assert path.read_text() == HEADER + good
    assert not (tmp_path / "results.csv.tmp").exists()


def test_a_torn_line_that_ends_with_a_newline_or_is_not_last_is_an_error(tmp_path):
    path = tmp_path / "results.csv"
    good = "vit,0.5,1,25,0.25,0.75,1.5,12.5,2,7,1234,h1,v1\n"
    text = HEADER + "cnn,0.5,1,2\n" + good
    path.write_text(text)
    with pytest.raises(ValueError, match=r"results.csv, line 2: malformed row 'cnn,0.5,1,2': 4 fields, expected 13"):
        read_results(path)
    assert path.read_text() == text  # nothing rewritten
    path.write_text(HEADER + good + "cnn,0.5,1,2\n")
    with pytest.raises(ValueError, match=r"line 3: malformed row"):
        read_results(path)
    path.write_text(HEADER + good + "cnn,half,1,25,0.25,0.75,1.5,12.5,2,7,1234,h1,v1\n")  # right count, bad value
    with pytest.raises(ValueError, match=r"line 3: malformed row .*could not convert") as err:
        read_results(path)
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_header_checks(tmp_path):
    path = tmp_path / "results.csv"
    old = "model,fraction,seed,n_train,top1,top5,train_seconds,images_per_second,devices\n"  # before the optional ones
    path.write_text(old + "vit,0.5,1,25,0.25,0.75,1.5,12.5,2\n")
    (r,) = read_results(path)
    assert r == _row(steps=None, params=None, cell_hash="", code_version="")
    path.write_text(HEADER.replace(",devices", "") + "vit,0.5,1,25,0.25,0.75,1.5,12.5,7,1234,h1,v1\n")
    with pytest.raises(ValueError, match=r"header .* is not .*another --output-dir"):
        read_results(path)
    path.write_text(HEADER.strip() + ",extra\n")
    with pytest.raises(ValueError, match="header"):
        read_results(path)
    path.write_text(HEADER)
    assert read_results(path) == []


def test_append_to_an_older_file_adds_the_new_columns_and_keeps_its_rows(tmp_path):
    path = tmp_path / "results.csv"
    old = "model,fraction,seed,n_train,top1,top5,train_seconds,images_per_second,devices\n"
    path.write_text(old + "vit,0.5,1,25,0.25,0.75,1.5,12.5,2\n")
    append_result(path, _row("cnn"))
    assert path.read_text() == (
        HEADER + "vit,0.5,1,25,0.25,0.75,1.5,12.5,2,,,,\ncnn,0.5,1,25,0.25,0.75,1.5,12.5,2,7,1234,h1,v1\n"
    )


def test_duplicates_are_keyed_on_model_fraction_seed_and_hash(tmp_path):
    path = tmp_path / "results.csv"
    append_result(path, _row())
    append_result(path, _row(cell_hash="h2"))  # another cell's code: not a duplicate
    append_result(path, _row(seed=2))
    append_result(path, _row(fraction=1.0))
    append_result(path, _row("cnn"))
    assert len(read_results(path)) == 5
    append_result(path, _row(top1=0.9))
    with pytest.raises(ValueError, match=r"line 7: duplicate of line 2 \(model vit, fraction 0.5, seed 1\)"):
        read_results(path)


def test_result_json_round_trip_and_validation(tmp_path):
    path = tmp_path / "cell" / "result.json"
    path.parent.mkdir()
    write_result_json(str(path), _row())
    assert path.read_text() == json.dumps(_row()) + "\n"
    assert not (path.parent / "result.json.tmp").exists()
    assert read_result_json(path) == _row()
    required = {c: v for c, v in _row().items() if c not in ("steps", "params", "cell_hash", "code_version")}
    path.write_text(json.dumps(required))
    assert read_result_json(path) == required
    for bad in ({**_row(), "extra": 1}, {k: v for k, v in _row().items() if k != "top1"}, [_row()], "x"):
        path.write_text(json.dumps(bad))
        assert read_result_json(path) is None, bad
    path.write_text("{not json")
    assert read_result_json(path) is None
    assert read_result_json(tmp_path / "absent.json") is None


def test_atomic_writes_leave_no_open_files(tmp_path):
    fds = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    for i in range(5):
        write_result_json(tmp_path / "result.json", _row(seed=i))
    if fds is not None:
        assert len(os.listdir("/proc/self/fd")) == fds
