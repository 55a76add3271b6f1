"""``python -m vision_attn.run.data_size cell --result R --model-label M --fraction F --seed S [--epochs E --min-steps N]
-- <LightningCLI args>``:
run one cell of a sweep in this process (the command :func:`~vision_attn.run.data_size.cell_command` builds)."""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

from .runner import run_cell


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(prog="python -m vision_attn.run.data_size", description="run one cell of a sweep")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("cell")
    c.add_argument("--result", required=True)
    c.add_argument("--model-label", required=True)
    c.add_argument("--fraction", type=float, required=True)
    c.add_argument("--seed", type=int, required=True)
    c.add_argument("--cell-hash", default="", help="what the sweep computed for this cell (recorded in its row)")
    c.add_argument("--epochs", type=float, default=None, help="equal-epochs budget (default: the args' max_steps)")
    c.add_argument("--min-steps", type=int, default=1, help="with --epochs: at least this many optimizer steps")
    c.add_argument("cli_args", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    cli_args = a.cli_args[1:] if a.cli_args[:1] == ["--"] else a.cli_args
    run_cell(cli_args, a.result, a.model_label, a.fraction, a.seed, a.cell_hash, a.epochs, a.min_steps)


if __name__ == "__main__":
    main()
