"""The mutation check (``make mutation``): single-change mutants of a module and whether its tests catch them."""
