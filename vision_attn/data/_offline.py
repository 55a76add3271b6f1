"""Keeps albumentations offline: imported first by :mod:`vision_attn.data`, before any module that imports it.

albumentations asks PyPI for a newer version when it is imported (every process, every DataLoader worker) unless
``NO_ALBUMENTATIONS_UPDATE`` is set. Python runs a package's ``__init__`` before any of its submodules, so setting
the variable here covers every module of ``vision_attn.data``, however it is imported.
"""

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
