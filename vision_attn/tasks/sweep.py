"""Deprecated location of the data-size sweep, moved to the top floor: :mod:`vision_attn.run.data_size`.

``python -m vision_attn.tasks.sweep cell ...`` still runs one cell (through ``python -m vision_attn.run.data_size``).
"""
import warnings

from ..run.data_size import (  # noqa: F401
    RESULT_COLUMNS,
    SweepCell,
    SweepConfigError,
    SweepSpec,
    append_result,
    cell_cli_args,
    cell_command,
    fraction_key,
    load_sweep,
    read_results,
    run_cell,
    run_sweep,
    summarize,
    write_report,
)
from ..run.data_size.__main__ import main as _main

# run as a script, the warning is attributed to __main__ so Python's default filters show it
warnings.warn("vision_attn.tasks.sweep moved to vision_attn.run.data_size; the old path goes away in the next release",
              DeprecationWarning, stacklevel=1 if __name__ == "__main__" else 2)

if __name__ == "__main__":
    _main()
