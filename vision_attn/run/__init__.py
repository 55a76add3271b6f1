"""Floor 5, the top floor: what drives a Trainer or a process (CLI, evaluation, benchmarks, sweeps, plots).

May import every floor below; nothing below imports it. ``tools/`` are argparse shims over this floor.
"""
