"""A saved folder's or Hub repo's ``config.json``, read and checked before anything is built from it.

A downloaded ``config.json`` is data from elsewhere: it may name an architecture, the options of that architecture
and its preprocessing, and nothing that reaches out. ``model_args`` pass an allow-list (the factory's typed options
less every weights source, path or download switch, each value type-checked and within bounds); ``pretrained_cfg``
is checked field by field. Anything else is a :class:`~vision_attn.models.errors.CheckpointError` of one line naming
the file and the key.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

from .errors import CheckpointError
from .options import factory_options, matches, type_name
from .registry import UnknownModelError, is_model, model_entrypoint

__all__ = ["read_config", "check_model_args", "check_pretrained_cfg", "SOURCE_OPTIONS", "INTERPOLATIONS"]

# options that fetch or read weights, or switch on a download: never taken from a file
SOURCE_OPTIONS = frozenset(
    {
        "pretrained",
        "checkpoint_path",
        "pretrained_cfg",
        "pretrained_cfg_overlay",
        "cache_dir",
        "pretrained_backbone",
        "backbone_pretrained",
        "backbone_kwargs",
        "features_only",
        "out_indices",
        "feature_cls",
        "device",
        "dtype",
    }
)
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")  # timm's str_to_interp_mode
CROP_MODES = ("center", "squash", "border", "short_side")
_INT_BOUND = 1_000_000
# (low, high) of the options whose scale allocates memory
_BOUNDS: Dict[str, Tuple[float, float]] = {
    "num_classes": (0, 100_000),
    "img_size": (1, 8192),
    "patch_size": (1, 8192),
    "in_chans": (1, 64),
    "depth": (0, 1000),
    "embed_dim": (1, 65_536),
    "num_heads": (1, 1024),
    "nheads": (1, 1024),
    "hidden_dim": (1, 65_536),
    "dim_feedforward": (1, 262_144),
    "enc_layers": (0, 1000),
    "dec_layers": (0, 1000),
    "num_queries": (1, 10_000),
    "ch": (1, 4096),
    "g_ch": (1, 4096),
    "d_ch": (1, 4096),
    "z_dim": (1, 65_536),
    "layers": (0, 1000),
    "channels": (1, 65_536),
    "kernel_size": (1, 255),
    "stem_width": (1, 65_536),
}


class _Bad(ValueError):
    """A value refused; the caller names the file and the key."""


def _check_value(value: Any, key: str) -> None:
    """Strings that are no paths or URLs; finite numbers within the key's bounds; containers recursively."""
    if isinstance(value, str):
        if any(c in value for c in "/\\:") or value.startswith(("~", ".")):
            raise _Bad(f"expected an option value, found a path or URL {value[:60]!r}")
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, (int, float)):
        low, high = _BOUNDS.get(key, (-_INT_BOUND, _INT_BOUND))
        if not math.isfinite(value) or not low <= value <= high:
            raise _Bad(f"expected a number in [{low:g}, {high:g}], found {value!r}")
    elif isinstance(value, (list, tuple)):
        if len(value) > 64:
            raise _Bad(f"expected at most 64 entries, found {len(value)}")
        for v in value:
            _check_value(v, key)
    elif isinstance(value, dict):
        raise _Bad("expected an option value, found a mapping")
    else:
        raise _Bad(f"expected a number, string, bool or list, found {type(value).__name__}")


def check_model_args(arch: str, args: Any, where: str) -> Dict[str, Any]:
    """``args`` (a file's ``model_args`` for ``arch``) if every entry is an architecture option of the right type
    within bounds; else :class:`CheckpointError` naming ``where`` and the key."""
    if not isinstance(args, dict):
        raise CheckpointError(f"{where}: model_args: expected a JSON object of options, found {type(args).__name__}")
    options, _ = factory_options(model_entrypoint(arch))
    for key, value in args.items():
        if key in SOURCE_OPTIONS and value in (False, None):  # switched off: reaches nothing (saved DETRs say so)
            continue
        if key in SOURCE_OPTIONS or key not in options:
            what = "a weights source or download switch" if key in SOURCE_OPTIONS else f"no option of {arch!r}"
            raise CheckpointError(f"{where}: model_args.{key}: not allowed in a config file ({what})")
        try:
            _check_value(value, key)
        except _Bad as e:
            raise CheckpointError(f"{where}: model_args.{key}: {e}") from None
        if not matches(value, options[key].annotation):
            raise CheckpointError(
                f"{where}: model_args.{key}: expected {type_name(options[key].annotation)}, "
                f"found {type(value).__name__} {value!r}"[:300]
            )
    return dict(args)


def _numbers(value: Any, n: Sequence[int], positive: bool, kind: type = float) -> bool:
    ok = isinstance(value, (list, tuple)) and len(value) in n
    return ok and all(
        isinstance(v, (int, float))
        and not isinstance(v, bool)
        and math.isfinite(v)
        and (v > 0 if positive else v >= 0)
        and (kind is float or float(v).is_integer())
        for v in value
    )


def _check_cfg_entry(key: str, value: Any) -> Optional[str]:
    """What is wrong with one ``pretrained_cfg`` entry, or None."""
    if key in ("mean", "std"):
        return (
            None
            if _numbers(value, (1, 3), positive=key == "std")
            else "expected 3 finite numbers" + (" > 0" if key == "std" else " >= 0")
        )
    if key in ("input_size", "test_input_size", "min_input_size"):
        ok = _numbers(value, (3,), True, int) and value[0] <= 64 and max(value[1:]) <= 8192
        return None if ok else "expected 3 positive ints (C <= 64, H and W <= 8192)"
    if key in ("pool_size", "test_pool_size"):
        return None if value is None or _numbers(value, (1, 2, 3), True, int) else "expected positive ints or null"
    if key == "interpolation":
        return None if value in INTERPOLATIONS else f"expected one of {', '.join(INTERPOLATIONS)}"
    if key in ("crop_pct", "test_crop_pct"):
        ok = (
            value is None
            and key == "test_crop_pct"
            or isinstance(value, (int, float))
            and not isinstance(value, bool)
            and 0 < value <= 1
        )
        return None if ok else "expected a number in (0, 1]"
    if key == "crop_mode":
        return None if value in CROP_MODES else f"expected one of {', '.join(CROP_MODES)}"
    if key in ("num_classes", "short_side", "max_size"):
        high = 100_000 if key == "num_classes" else 8192
        ok = (
            isinstance(value, int)
            and not isinstance(value, bool)
            and 0 <= value <= high
            or value is None
            and key != "num_classes"
        )
        return None if ok else f"expected an int in [0, {high}]"
    if key == "label_names":
        ok = isinstance(value, (list, tuple)) and len(value) <= 100_000 and all(isinstance(v, str) for v in value)
        return None if ok else "expected a list of strings"
    if (
        value is None
        or isinstance(value, (bool, int, float))
        and not isinstance(value, float)
        or isinstance(value, str)
    ):
        return None
    if isinstance(value, float) and math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float)) for v in value):
        return None
    return f"expected a string, number or list, found {type(value).__name__}"


def check_pretrained_cfg(cfg: Any, where: str) -> Dict[str, Any]:
    """``cfg`` (a file's ``pretrained_cfg``) if every entry is of timm's form (statistics, sizes, interpolation, crop);
    else :class:`CheckpointError` naming ``where`` and the key. Weight sources in it are ignored by the caller."""
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{where}: pretrained_cfg: expected a JSON object, found {type(cfg).__name__}")
    for key, value in cfg.items():
        why = _check_cfg_entry(str(key), value)
        if why:
            raise CheckpointError(f"{where}: pretrained_cfg.{key}: {why}; found {value!r}"[:300])
    return cfg


def read_config(path: Path) -> Dict[str, Any]:
    """The checked ``config.json`` at ``path``: a registered ``architecture`` (a string), an integer ``num_classes``
    within bounds, ``label_names`` strings, and ``model_args`` / ``pretrained_cfg`` as above (also under our
    ``"vision_attn"`` key)."""
    try:
        config = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable JSON config ({e})") from None
    if not isinstance(config, dict) or not config.get("architecture"):
        raise CheckpointError(
            f"{path}: expected a JSON object with an 'architecture' (a model name); found {str(config)[:80]}"
        )
    arch = config["architecture"]
    if not isinstance(arch, str):
        raise CheckpointError(f"{path}: architecture: expected a model name (a string), found {type(arch).__name__}")
    if not is_model(arch) or "." in arch:
        raise UnknownModelError(
            f"{path}: architecture {arch!r} is not a vision_attn model (see vision_attn.list_models())"
        )
    for key in ("num_classes", "label_names"):
        why = _check_cfg_entry(key, config[key]) if key in config else None
        if why:
            raise CheckpointError(f"{path}: {key}: {why}; found {config[key]!r}"[:300])
    check_model_args(arch, config.get("model_args") or {}, str(path))
    check_pretrained_cfg(config.get("pretrained_cfg") or {}, str(path))
    ours = config.get("vision_attn") or {}
    if not isinstance(ours, dict):
        raise CheckpointError(f"{path}: vision_attn: expected a JSON object, found {type(ours).__name__}")
    check_pretrained_cfg(ours.get("pretrained_cfg") or {}, f"{path}: vision_attn")
    return config
