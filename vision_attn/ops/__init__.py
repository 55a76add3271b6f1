"""Floor 1: pure tensor helpers (box ops arrive with the detector)."""
