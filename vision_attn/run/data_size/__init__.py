"""Attention vs CNN at varying training-data sizes: a grid of ordinary Lightning fits, resumable, with a plot.

A sweep YAML (:mod:`.spec`) names models (each a LightningCLI config plus overrides), training fractions, seeds, a
budget and the ``baseline`` model the others are compared to.

**Budget rules.** ``budget: {steps: N}``, equal optimizer steps: every cell trains N steps (Lightning ``max_steps``),
so a 1% cell runs 100x the epochs of the 100% cell (the large sets get few passes: the rule starves them unless N is
large). ``budget: {epochs: E, min_steps: S}``, equal epochs: every cell makes E passes over its own training images,
``max(S, ceil(E x floor(n_train / batch)))`` steps (:func:`.spec.epoch_budget_steps`, computed in the cell once
its data is set up), the floor S keeping the smallest sets from stopping after a handful of steps. Each cell's
steps are in ``results.csv`` (``steps``) and the report. The learning-rate schedule (warm-up, cosine) spans them. Validation runs once, after the last step (it is
what ``best.ckpt`` records); the reported numbers are top-1/top-5 of the final weights on the full test split.

Each cell runs in its own process (``python -m vision_attn.run.data_size cell ...``, :mod:`.runner`), so Lightning
DDP (``--trainer.devices N``) works inside a cell and a crash stays in its cell. The parent is the only writer
of ``results.csv`` (:mod:`.journal`): one row is appended and fsynced when a cell finishes, so killing the sweep
loses at most the cells running; a rerun skips the cells already in ``results.csv``. ``data_size.png`` (top-1 vs
number of training images, log x, one line per model with the seed spread) and ``data_size.md`` (:mod:`.report`)
are rewritten from ``results.csv`` after every cell; the report's gaps (model − baseline, paired by seed, 95%
t-interval) and its sentence on whether each gap shrinks and crosses zero are :func:`.report.gap_trend`'s.

Clusters: ``print_cells`` (``--print-cells``) prints each remaining cell's command instead of running it, to submit
as jobs (e.g. ``srun`` with ``--trainer.num_nodes``); a cell leaves its row in its ``result.json``, and the next run
of the sweep collects those into ``results.csv`` before running what is still missing.
"""

from .journal import RESULT_COLUMNS, append_result, read_results
from .report import gap_trend, paired_gaps, summarize, t_interval, write_report
from .runner import cell_cli_args, cell_command, run_cell, run_sweep
from .spec import SweepCell, SweepConfigError, SweepSpec, epoch_budget_steps, fraction_key, load_sweep

__all__ = [
    "RESULT_COLUMNS",
    "SweepCell",
    "SweepConfigError",
    "SweepSpec",
    "append_result",
    "cell_cli_args",
    "cell_command",
    "epoch_budget_steps",
    "fraction_key",
    "gap_trend",
    "load_sweep",
    "paired_gaps",
    "read_results",
    "run_cell",
    "run_sweep",
    "summarize",
    "t_interval",
    "write_report",
]
