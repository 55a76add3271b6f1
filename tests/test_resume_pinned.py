"""What ``fit --ckpt_path last`` picks and what the continued metrics.csv holds, on hand-made files (no training)."""
import csv
import os

import pytest
import torch

from vision_attn.run.resume import NothingToResumeError, Resume, ResumableCSVLogger, find_last_checkpoint
from vision_attn.run.resume import _ContinuingWriter, _logged_steps

EXECUTED = []


def _record():
    EXECUTED.append(1)
    return 0


class _Code:
    """An object whose unpickling runs code: a weights-only reader must refuse it, not run it."""

    def __reduce__(self):
        return (_record, ())


def _ckpt(path, step=7, mtime=1000, extra=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"loops": {"fit_loop": {"epoch_loop.state_dict": {"_batches_that_stepped": torch.tensor(step)}}}}
    torch.save({**state, **(extra or {})}, path)
    os.utime(path, (mtime, mtime))
    return path


def test_logged_steps_reads_lightnings_counter_and_refuses_code(tmp_path):
    assert _logged_steps(_ckpt(tmp_path / "a.ckpt", step=12)) == 12
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    assert _logged_steps(tmp_path / "foreign.ckpt") is None
    _ckpt(tmp_path / "code.ckpt", extra={"x": _Code()})
    EXECUTED.clear()
    assert _logged_steps(tmp_path / "code.ckpt") is None and EXECUTED == []


def test_resume_is_a_frozen_record():
    r = Resume("p", 1, 2)
    with pytest.raises(AttributeError):
        r.step = 3


def test_newest_version_wins_and_ties_go_to_the_higher_version(tmp_path):
    _ckpt(tmp_path / "version_0/checkpoints/last.ckpt", step=3, mtime=1000)
    _ckpt(tmp_path / "version_1/checkpoints/last.ckpt", step=5, mtime=3000)
    _ckpt(tmp_path / "version_2/checkpoints/last.ckpt", step=9, mtime=2000)
    _ckpt(tmp_path / "version_x/checkpoints/last.ckpt", mtime=9000)  # not a version folder
    _ckpt(tmp_path / "version_3/checkpoints/other.ckpt", mtime=9000)  # no last.ckpt
    (tmp_path / "version_4" / "checkpoints" / "last.ckpt").mkdir(parents=True)  # not a file
    os.utime(tmp_path / "version_4" / "checkpoints" / "last.ckpt", (9000, 9000))
    assert find_last_checkpoint(tmp_path) == Resume(tmp_path / "version_1/checkpoints/last.ckpt", 1, 5)
    _ckpt(tmp_path / "version_10/checkpoints/last.ckpt", step=11, mtime=3000)  # same time: the later version
    assert find_last_checkpoint(str(tmp_path)) == Resume(tmp_path / "version_10/checkpoints/last.ckpt", 10, 11)
    _ckpt(tmp_path / "checkpoints/last.ckpt", step=1, mtime=3000)  # a run without logger, same time: loses
    assert find_last_checkpoint(tmp_path).version == 10
    os.utime(tmp_path / "checkpoints/last.ckpt", (4000, 4000))
    assert find_last_checkpoint(tmp_path) == Resume(tmp_path / "checkpoints/last.ckpt", None, 1)


def test_a_run_without_logger_and_relative_roots(tmp_path, monkeypatch):
    _ckpt(tmp_path / "run/checkpoints/last.ckpt", step=4, mtime=3000)
    _ckpt(tmp_path / "run/version_0/checkpoints/last.ckpt", step=2, mtime=3000)  # same time: the version wins
    monkeypatch.chdir(tmp_path)
    found = find_last_checkpoint("run")
    assert found == Resume(tmp_path / "run/version_0/checkpoints/last.ckpt", 0, 2) and found.ckpt.is_absolute()
    os.remove(tmp_path / "run/version_0/checkpoints/last.ckpt")
    assert find_last_checkpoint("run") == Resume(tmp_path / "run/checkpoints/last.ckpt", None, 4)


def test_nothing_to_resume_names_the_folders(tmp_path):
    with pytest.raises(NothingToResumeError, match=rf"^--ckpt_path last: nothing to resume, no last.ckpt in "
                                                   rf"{tmp_path}/version_\*/checkpoints/$"):
        find_last_checkpoint(tmp_path)
    assert issubclass(NothingToResumeError, FileNotFoundError)
    with pytest.raises(NothingToResumeError, match=rf"no last.ckpt in {tmp_path / 'a'}, {tmp_path / 'b'}$"):
        find_last_checkpoint(tmp_path, [tmp_path / "a", str(tmp_path / "b")])


def test_user_dirpaths_take_the_newest_last_star(tmp_path):
    _ckpt(tmp_path / "version_0/checkpoints/last.ckpt", mtime=9000)  # ignored when dirpaths are given
    _ckpt(tmp_path / "mine/last.ckpt", step=1, mtime=1000)
    _ckpt(tmp_path / "mine/last-v1.ckpt", step=2, mtime=2000)
    _ckpt(tmp_path / "other/last.ckpt", step=3, mtime=1500)
    _ckpt(tmp_path / "other/best.ckpt", step=4, mtime=5000)
    assert find_last_checkpoint(tmp_path, [tmp_path / "mine", tmp_path / "other"]) == Resume(
        tmp_path / "mine/last-v1.ckpt", None, 2)


def _metrics(path, rows, keys=("epoch", "loss", "step")):
    path.mkdir(parents=True, exist_ok=True)
    with open(path / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(keys))
        w.writeheader()
        w.writerows(rows)


def _read(path):
    with open(path / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


ROWS = [{"epoch": 0, "loss": 1.0, "step": 2}, {"epoch": 0, "loss": "", "step": ""}, {"epoch": 0, "loss": 0.5, "step": 4.0},
        {"epoch": 1, "loss": 0.25, "step": 5}, {"epoch": 1, "loss": 0.1, "step": 6}]


def test_continuing_writer_drops_rows_from_the_checkpoint_step_on(tmp_path):
    log = tmp_path / "version_0"
    _metrics(log, ROWS)
    w = _ContinuingWriter(str(log), keep_before_step=5)
    assert w.metrics_keys == ["epoch", "loss", "step"]
    assert _read(log) == [{"epoch": "0", "loss": "1.0", "step": "2"}, {"epoch": "0", "loss": "", "step": ""},
                          {"epoch": "0", "loss": "0.5", "step": "4.0"}]
    w.log_metrics({"loss": 0.3, "acc": 0.9}, step=5)
    w.save()
    assert _read(log)[-1] == {"acc": "0.9", "epoch": "", "loss": "0.3", "step": "5"}
    assert len(_read(log)) == 4


def test_continuing_writer_without_a_step_keeps_every_row(tmp_path):
    log = tmp_path / "version_0"
    _metrics(log, ROWS)
    _ContinuingWriter(str(log), keep_before_step=None)
    assert len(_read(log)) == 5
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metrics.csv").write_text("")
    assert _ContinuingWriter(str(empty), keep_before_step=3).metrics_keys == []
    fresh = _ContinuingWriter(str(tmp_path / "new" / "version_0"), keep_before_step=3)
    assert fresh.metrics_keys == [] and (tmp_path / "new" / "version_0").is_dir()
    assert not (tmp_path / "new" / "version_0" / "metrics.csv").exists()


def test_resumable_logger_continues_its_version(tmp_path):
    _metrics(tmp_path / "runs" / "version_3", ROWS)
    logger = ResumableCSVLogger(str(tmp_path), name="runs", version=3, keep_before_step=4)
    assert logger.experiment is logger.experiment  # built once
    assert isinstance(logger.experiment, _ContinuingWriter)
    logger.log_metrics({"loss": 0.7}, step=4)
    logger.save()
    assert [(r["loss"], r["step"]) for r in _read(tmp_path / "runs" / "version_3")] == [("1.0", "2"), ("", ""), ("0.7", "4")]
    plain = ResumableCSVLogger(str(tmp_path / "plain"), name="x", version=0)
    plain.log_metrics({"loss": 1.5}, step=0)
    plain.save()
    assert _read(tmp_path / "plain" / "x" / "version_0") == [{"loss": "1.5", "step": "0"}]
