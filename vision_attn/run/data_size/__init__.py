"""Attention vs CNN at varying training-data sizes: a grid of ordinary Lightning fits, resumable, with a plot.

A sweep YAML (:mod:`.spec`) names models (each a LightningCLI config plus overrides), training fractions, seeds and
a budget of optimizer steps.

**Budget rule: equal optimizer steps.** Every cell trains ``budget.steps`` optimizer steps (Lightning ``max_steps``),
so a 1% cell runs 100x the epochs of the 100% cell and every model and fraction gets the same compute; choose
``steps = epochs x N_full / (batch_size x devices)`` to give the full-data cells a usual number of epochs. The
learning-rate schedule (warm-up, cosine) spans those steps. Validation runs once, after the last step (it is
what ``best.ckpt`` records); the reported numbers are top-1/top-5 of the final weights on the full test split.

Each cell runs in its own process (``python -m vision_attn.run.data_size cell ...``, :mod:`.runner`), so Lightning
DDP (``--trainer.devices N``) works inside a cell and a crash stays in its cell. The parent is the only writer
of ``results.csv`` (:mod:`.journal`): one row is appended and fsynced when a cell finishes, so killing the sweep
loses at most the cells running; a rerun skips the cells already in ``results.csv``. ``data_size.png`` (top-1 vs
number of training images, log x, one line per model with the seed spread) and ``data_size.md`` (:mod:`.report`)
are rewritten from ``results.csv`` after every cell.

Clusters: ``print_cells`` (``--print-cells``) prints each remaining cell's command instead of running it, to submit
as jobs (e.g. ``srun`` with ``--trainer.num_nodes``); a cell leaves its row in its ``result.json``, and the next run
of the sweep collects those into ``results.csv`` before running what is still missing.
"""
from .journal import RESULT_COLUMNS, append_result, read_results
from .report import summarize, write_report
from .runner import cell_cli_args, cell_command, run_cell, run_sweep
from .spec import SweepCell, SweepConfigError, SweepSpec, fraction_key, load_sweep

__all__ = [
    "RESULT_COLUMNS", "SweepCell", "SweepConfigError", "SweepSpec", "append_result", "cell_cli_args", "cell_command",
    "fraction_key", "load_sweep", "read_results", "run_cell", "run_sweep", "summarize", "write_report",
]
