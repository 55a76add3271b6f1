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

__all__ = [
    "RESULT_COLUMNS",
    "ResultsFileError",
    "PROVENANCE_COLUMNS",
    "append_result",
    "read_result_json",
    "read_results",
    "write_result_json",
]

RESULT_COLUMNS = (
    "model",
    "fraction",
    "seed",
    "n_train",
    "top1",
    "top5",
    "train_seconds",
    "images_per_second",
    "devices",
    "steps",
    "params",
    "cell_hash",
    "code_version",
)
# what produced a row: files written before provenance existed lack these (their rows count as stale and rerun)
PROVENANCE_COLUMNS = ("cell_hash", "code_version")
# added later too: optimizer steps the cell took and the model's parameters (None in older files)
_OPTIONAL_COLUMNS = ("steps", "params") + PROVENANCE_COLUMNS


def _int_or_none(text: Optional[str]) -> Optional[int]:
    return int(text) if text not in (None, "") else None


_TYPES = {
    "fraction": float,
    "seed": int,
    "n_train": int,
    "top1": float,
    "top5": float,
    "train_seconds": float,
    "images_per_second": float,
    "devices": int,
    "steps": _int_or_none,
    "params": _int_or_none,
}


class ResultsFileError(ValueError):
    """``results.csv`` has a foreign header, a malformed row or a duplicated cell; the message names file and line."""


def read_results(path: str | os.PathLike) -> List[Dict[str, Any]]:
    """The finished cells in ``results.csv``, typed. A torn last line (a kill during the write) is dropped and the
    file rewritten without it; any other malformed row, or a row repeating an earlier one (same model, fraction, seed
    and cell hash), is an error naming the file and line (nothing is rewritten). A complete last row without its
    newline is kept."""
    path = Path(path)
    if not path.is_file():
        return []
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    if not lines:
        return []
    header = tuple(next(csv.reader([lines[0]])))
    known = set(RESULT_COLUMNS)
    if not set(RESULT_COLUMNS) - set(_OPTIONAL_COLUMNS) <= set(header) or not set(header) <= known:
        raise ResultsFileError(
            f"{path}: header {list(header)} is not {list(RESULT_COLUMNS)}; move the file away or pick "
            "another --output-dir"
        )
    rows: List[Dict[str, Any]] = []
    seen: Dict[tuple, int] = {}
    for i, line in enumerate(lines[1:], start=2):
        last = i == len(lines)
        try:
            (values,) = list(csv.reader([line]))
            if len(values) != len(header):
                raise ValueError(f"{len(values)} fields, expected {len(header)}")
            raw = dict(zip(header, values))
            row = {c: _TYPES.get(c, str)(raw.get(c, "")) for c in RESULT_COLUMNS}
        except ValueError as err:
            if last and not line.endswith("\n"):
                # the process was killed while appending this row: the cell did not finish; forget it
                _atomic_write(path, "".join(lines[:-1]))
                break
            raise ResultsFileError(f"{path}, line {i}: malformed row {line.strip()!r}: {err}") from None
        key = (row["model"], row["fraction"], row["seed"], row["cell_hash"])
        if key in seen:
            raise ResultsFileError(
                f"{path}, line {i}: duplicate of line {seen[key]} (model {row['model']}, fraction "
                f"{row['fraction']}, seed {row['seed']}); a cell is counted once: delete one of them"
            )
        seen[key] = i
        rows.append(row)
    return rows


def append_result(path: Path, row: Dict[str, Any]) -> None:
    """Append one row (writing the header first if the file is new) and fsync, so a finished cell survives a kill."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.is_file() or path.stat().st_size == 0
    if not new:
        text = path.read_text()
        if tuple(next(csv.reader([text.splitlines()[0]]))) != RESULT_COLUMNS:  # an older file: add the new columns
            _atomic_write(
                path, _csv_text([RESULT_COLUMNS, *([_cell(r[c]) for c in RESULT_COLUMNS] for r in read_results(path))])
            )
        elif not text.endswith("\n"):  # a complete last row without its newline: do not glue this row onto it
            with open(path, "a") as f:
                f.write("\n")
    with open(path, "a", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        if new:
            w.writerow(RESULT_COLUMNS)
        w.writerow([_cell(row.get(c)) for c in RESULT_COLUMNS])
        f.flush()
        os.fsync(f.fileno())


def _csv_text(rows) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def write_result_json(path: str | os.PathLike, row: Dict[str, Any]) -> None:
    """Leave a finished cell's row in ``path`` (atomically: a reader sees the whole row or no file)."""
    _atomic_write(Path(path), json.dumps(row) + "\n")


def read_result_json(path: Path) -> Optional[Dict[str, Any]]:
    """The row a finished cell left in its result.json, or None when there is none (or it is unreadable)."""
    try:
        row = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    required = set(RESULT_COLUMNS) - set(_OPTIONAL_COLUMNS)
    return row if isinstance(row, dict) and required <= set(row) <= set(RESULT_COLUMNS) else None


def _cell(value: Any) -> Any:
    return "" if value is None else value


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
