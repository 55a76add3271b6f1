"""Test folders mirror the package; the shared helpers here (families, hub_fixtures, _pause_once) import by bare name."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
