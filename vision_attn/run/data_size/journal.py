"""The sweep's journal: ``results.csv`` (one fsynced row per finished cell) and each cell's ``result.json``.

The sweep process is the only writer of ``results.csv``; a cell process leaves its row in its own ``result.json``
(written atomically), which the sweep then appends. So a kill loses at most the cells that were running.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

__all__ = ["RESULT_COLUMNS", "append_result", "read_result_json", "read_results", "write_result_json"]

RESULT_COLUMNS = ("model", "fraction", "seed", "n_train", "top1", "top5", "train_seconds", "images_per_second", "devices",
                  "steps", "params")
# files written before `steps` (optimizer steps the cell took) and `params` were added: read, their values None
_OLD_COLUMNS = RESULT_COLUMNS[:9]


def read_results(path: str | os.PathLike) -> List[Dict[str, Any]]:
    """The finished cells in ``results.csv``, typed. A torn last line (a kill during the write) is dropped and the
    file rewritten without it; any other malformed row is an error naming the file and line (nothing is rewritten)."""
    path = Path(path)
    if not path.is_file():
        return []
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    if not lines:
        return []
    header = tuple(next(csv.reader([lines[0]])))
    if header not in (RESULT_COLUMNS, _OLD_COLUMNS):
        raise ValueError(f"{path}: header {list(header)} is not {list(RESULT_COLUMNS)}; move the file away or pick another --output-dir")
    rows: List[Dict[str, Any]] = []
    for i, line in enumerate(lines[1:], start=2):
        last = i == len(lines)
        try:
            (values,) = list(csv.reader([line]))
            if len(values) != len(header):
                raise ValueError(f"{len(values)} fields, expected {len(header)}")
            row = dict(zip(header, values))
            rows.append({
                "model": row["model"], "fraction": float(row["fraction"]), "seed": int(row["seed"]),
                "n_train": int(row["n_train"]), "top1": float(row["top1"]), "top5": float(row["top5"]),
                "train_seconds": float(row["train_seconds"]), "images_per_second": float(row["images_per_second"]),
                "devices": int(row["devices"]),
                "steps": _int_or_none(row.get("steps")), "params": _int_or_none(row.get("params")),
            })
        except ValueError as err:
            if last and not line.endswith("\n"):
                # the process was killed while appending this row: the cell did not finish; forget it
                _atomic_write(path, "".join(lines[:-1]))
                break
            raise ValueError(f"{path}, line {i}: malformed row {line.strip()!r}: {err}") from None
    return rows


def _int_or_none(text: Optional[str]) -> Optional[int]:
    return int(text) if text not in (None, "") else None


def append_result(path: Path, row: Dict[str, Any]) -> None:
    """Append one row (writing the header first if the file is new) and fsync, so a finished cell survives a kill.
    A file with the old header is first rewritten with the new one (its rows get empty ``steps`` and ``params``)."""
    new = not path.is_file() or path.stat().st_size == 0
    if not new:
        with open(path) as f:
            header = f.readline().rstrip("\n")
        if header != ",".join(RESULT_COLUMNS):
            old = read_results(path)  # raises unless it is the old header
            _atomic_write(path, _csv_text([RESULT_COLUMNS] + [[_cell(r.get(c)) for c in RESULT_COLUMNS] for r in old]))
    with open(path, "a", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        if new:
            w.writerow(RESULT_COLUMNS)
        w.writerow([_cell(row.get(c)) for c in RESULT_COLUMNS])
        f.flush()
        os.fsync(f.fileno())


def write_result_json(path: str | os.PathLike, row: Dict[str, Any]) -> None:
    """Leave a finished cell's row in ``path`` (atomically: a reader sees the whole row or no file)."""
    _atomic_write(Path(path), json.dumps(row) + "\n")


def read_result_json(path: Path) -> Optional[Dict[str, Any]]:
    """The row a finished cell left in its result.json, or None when there is none (or it is unreadable)."""
    try:
        row = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return row if isinstance(row, dict) and set(_OLD_COLUMNS) <= set(row) <= set(RESULT_COLUMNS) else None


def _cell(value: Any) -> Any:
    return "" if value is None else value


def _csv_text(rows: List[Any]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
