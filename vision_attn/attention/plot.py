"""Deprecated location of the attention plots, now in :mod:`vision_attn.run.viz.attention` (plotting is top-floor code)."""
import warnings


def __getattr__(name):
    from ..run.viz import attention

    if not hasattr(attention, name):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(f"vision_attn.attention.plot.{name} moved to vision_attn.run.viz.attention; the old path goes away "
                  "in the next release", DeprecationWarning, stacklevel=2)
    return getattr(attention, name)
