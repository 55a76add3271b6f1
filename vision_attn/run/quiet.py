"""Third-party messages a user cannot act on, hidden only while we call the library that prints them.

Each entry names the message and the module it comes from (``warnings.filterwarnings(message=, module=)``), inside
``warnings.catch_warnings``: nothing is filtered globally, and any other warning of those libraries still shows.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Iterator

__all__ = ["quiet_library", "LIBRARY_NOISE"]

# (message regex, module regex): warnings raised with a stacklevel name the caller's module, hence the wide ones
LIBRARY_NOISE = (
    # we pass args= and read sys.argv ourselves (tools/eval.py --config ...): not the mistake it warns about
    (r"LightningCLI's args parameter is intended", r"pytorch_lightning\.cli"),
    # Lightning 2.6's own pytree helper on torch 2.9+: fixed upstream, nothing for a user to change
    (r".*isinstance\(treespec, LeafSpec\)", r"(pytorch_lightning|torch)\..*"),
    # jsonargparse deprecating an argument Lightning's CLI passes it
    (r"\s*skip_none parameter was deprecated", r"pytorch_lightning\.cli"),
)
# Lightning's adverts (rank_zero_info records, not warnings)
_ADVERTS = ("💡 Tip:",)
_RANK_ZERO_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero")


class _DropAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(_ADVERTS)


@contextlib.contextmanager
def quiet_library() -> Iterator[None]:
    """While inside: :data:`LIBRARY_NOISE` warnings and Lightning's adverts are not shown."""
    drop = _DropAdverts()
    loggers = [logging.getLogger(name) for name in _RANK_ZERO_LOGGERS]
    with warnings.catch_warnings():
        for message, module in LIBRARY_NOISE:
            warnings.filterwarnings("ignore", message=message, module=module)
        for log in loggers:
            log.addFilter(drop)
        try:
            yield
        finally:
            for log in loggers:
                log.removeFilter(drop)
