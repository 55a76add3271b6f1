"""Exporting models: a shareable folder (``model.safetensors`` + ``config.json``), a ``torch.export`` program
(``.pt2``) or ONNX (torch's dynamo exporter).

:func:`load_model_for_export` builds a config's model with a run's weights (its EMA weights when the run kept them),
its class names (the checkpoint's, else the datamodule's) and its data's preprocessing in ``pretrained_cfg``; each
output format is one function over that model (:data:`FORMATS`), picked by :func:`export` (``tools/export.py``).

Programs and ONNX trace the model once on example inputs and keep the batch axis dynamic, so one file serves any batch
size; image sizes stay those of the example. Models with several tensor inputs share the one batch axis:
DETR exports as ``(images (B, 3, H, W), mask (B, H, W) bool)`` (a padded batch), the conditional SA-GAN
generator as ``(z (B, z_dim), labels (B,) int64)``.

    >>> export_onnx(model.eval(), (images,), "out/model.onnx")
    >>> outs = run_onnx("out/model.onnx", images[:3])          # numpy arrays, as torch's pytree leaves
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_leaves  # private: torch has no public pytree module yet (what export uses)

from ..data import CIFARDataModule, COCODataModule, ImageFolderDataModule
from ..models import load_pretrained, read_checkpoint
from ..models.detr import DETR
from ..models.protocols import ClassifierModel, PretrainedConfigured, conforms
from ..models.sagan import SAGAN

__all__ = [
    "FORMATS",
    "export",
    "export_safetensors",
    "export_program",
    "export_onnx",
    "load_program",
    "run_onnx",
    "flat_outputs",
    "example_inputs",
    "load_model_for_export",
    "data_config_of",
    "BATCH_MIN",
    "BATCH_MAX",
    "NamedOutputs",
    "io_names",
    "write_runtime_config",
]

# A batch of 1 must stay legal: torch.export would otherwise specialise a size-1 example to the constant 1.
BATCH_MIN, BATCH_MAX = 1, 4096

PathLike = Union[str, Path]


def _as_tuple(example_inputs: Union[Tensor, Sequence[Tensor]]) -> Tuple[Tensor, ...]:
    inputs = (example_inputs,) if isinstance(example_inputs, Tensor) else tuple(example_inputs)
    for i, t in enumerate(inputs):
        if not isinstance(t, Tensor) or t.dim() < 1:
            found = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"example_inputs[{i}]: expected a tensor with a batch axis first; got {found}")
    if len({t.shape[0] for t in inputs}) > 1:
        raise ValueError(
            f"example_inputs: every input shares the batch axis 0; got batch sizes {[t.shape[0] for t in inputs]}"
        )
    return inputs


def _dynamic_shapes(inputs: Tuple[Tensor, ...], dynamic_batch: bool) -> Optional[Tuple[Dict[int, Any], ...]]:
    if not dynamic_batch:
        return None
    batch = torch.export.Dim("batch", min=BATCH_MIN, max=BATCH_MAX)
    return tuple({0: batch} for _ in inputs)


def _prepare(model: Union[nn.Module, torch.export.ExportedProgram]) -> Union[nn.Module, torch.export.ExportedProgram]:
    if isinstance(model, torch.export.ExportedProgram):
        return model
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module or ExportedProgram; got {type(model).__name__}")
    if model.training:
        raise ValueError(
            f"{type(model).__name__} is in training mode; call model.eval() before exporting "
            "(dropout, batch-norm statistics and stochastic depth are traced as they run)"
        )
    return model


def export_program(
    model: nn.Module,
    example_inputs: Union[Tensor, Sequence[Tensor]],
    path: Optional[PathLike] = None,
    dynamic_batch: bool = True,
) -> torch.export.ExportedProgram:
    """Trace ``model`` with ``torch.export`` (one graph, no Python at run time); save it to ``path`` (``.pt2``).

    Args:
        model: an ``nn.Module`` in eval mode.
        example_inputs: one tensor or a tuple of tensors, batch first (e.g. ``(B, 3, H, W)`` images, or DETR's
            ``(images (B, 3, H, W), mask (B, H, W))``).
        path: where to save (``torch.export.save``; load with :func:`load_program`); None = do not save.
        dynamic_batch: keep axis 0 of every input dynamic (``BATCH_MIN``..``BATCH_MAX``).

    Returns:
        the ``ExportedProgram``; ``program.module()(*inputs)`` runs it.
    """
    model = _prepare(model)
    inputs = _as_tuple(example_inputs)
    program = torch.export.export(model, inputs, dynamic_shapes=_dynamic_shapes(inputs, dynamic_batch))
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.export.save(program, path)
    return program


def load_program(path: PathLike) -> torch.export.ExportedProgram:
    """An ``ExportedProgram`` saved by :func:`export_program`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"exported program {path} does not exist")
    return torch.export.load(path)


def export_onnx(
    model: Union[nn.Module, torch.export.ExportedProgram],
    example_inputs: Union[Tensor, Sequence[Tensor]],
    path: PathLike,
    dynamic_batch: bool = True,
    input_names: Optional[Sequence[str]] = None,
    output_names: Optional[Sequence[str]] = None,
) -> Path:
    """Export ``model`` to ONNX with torch's dynamo exporter (``torch.export`` underneath) and check the file.

    Args:
        model: an ``nn.Module`` in eval mode, or a program from :func:`export_program` (not traced again).
        example_inputs: as :func:`export_program`.
        path: the ``.onnx`` file to write (weights inside it).
        dynamic_batch: keep axis 0 of every input dynamic (named ``batch`` in the ONNX graph).
        input_names: ONNX input names (default ``input0``, ``input1``, ...).
        output_names: ONNX output names, in :func:`flat_outputs` order (default: the exporter's).

    Returns:
        ``path``. Outputs are the model's outputs flattened as ``torch.utils._pytree.tree_leaves`` orders them
        (see :func:`flat_outputs`), e.g. DETR's ``pred_logits``, ``pred_boxes``, then the auxiliary pairs.
    """
    try:
        import onnx  # noqa: F401  (the exporter needs it; say which extra to install)
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ImportError(f"ONNX export needs onnx and onnxscript: pip install 'vision_attn[export]' ({e})") from None
    model = _prepare(model)
    inputs = _as_tuple(example_inputs)
    names = list(input_names) if input_names is not None else [f"input{i}" for i in range(len(inputs))]
    if len(names) != len(inputs):
        raise ValueError(f"input_names: expected {len(inputs)} names (one per example input); got {names}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model,
        inputs,
        str(path),
        dynamo=True,
        dynamic_shapes=_dynamic_shapes(inputs, dynamic_batch),
        input_names=names,
        output_names=list(output_names) if output_names else None,
        external_data=False,
        verbose=False,
    )
    return path


def flat_outputs(outputs: Any) -> List[Tensor]:
    """A model's outputs (a tensor, tuple or dict of them, nested) as the flat list an ONNX graph returns."""
    return [t for t in tree_leaves(outputs) if isinstance(t, Tensor)]


def run_onnx(path: PathLike, *inputs: Tensor) -> List[Any]:
    """Run an exported ``.onnx`` file in onnxruntime (CPU) on torch tensors; returns its outputs (numpy arrays)."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ImportError(f"running ONNX needs onnxruntime: pip install 'vision_attn[export]' ({e})") from None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    if len(names) != len(inputs):
        raise ValueError(f"{path} takes {len(names)} inputs ({names}); got {len(inputs)}")
    return session.run(None, {n: t.detach().cpu().numpy() for n, t in zip(names, inputs)})


_SOURCE_KEYS = ("hf_hub_id", "url", "file", "source")


def data_config_of(datamodule: pl.LightningDataModule) -> Dict[str, Any]:
    """The evaluation preprocessing of our datamodules, in ``pretrained_cfg`` terms (what the model was trained on)."""
    if isinstance(datamodule, COCODataModule):
        o = datamodule.opts  # DETR's eval resize: short side val_size, long side at most max_size
        return dict(
            short_side=o.val_size,
            max_size=o.max_size,
            crop_mode="short_side",
            crop_pct=1.0,
            input_size=(3, o.val_size, o.max_size or o.val_size),
            interpolation="bilinear",
        )
    if isinstance(datamodule, ImageFolderDataModule):  # short side to img_size / crop_pct, center crop
        c = datamodule.data_config
        return dict(
            input_size=(3, c["img_size"], c["img_size"]),
            crop_pct=c["crop_pct"],
            crop_mode="center",
            interpolation=c["interpolation"],
            mean=tuple(c["mean"]),
            std=tuple(c["std"]),
        )
    if isinstance(datamodule, CIFARDataModule):  # the stored images, resized to img_size when set, no crop
        side = datamodule.img_size or datamodule.input_size
        return dict(
            input_size=(3, side, side),
            crop_pct=1.0,
            crop_mode="center",
            interpolation="bilinear",
            mean=tuple(datamodule.spec.mean),
            std=tuple(datamodule.spec.std),
        )
    return {}


def _class_names(datamodule: pl.LightningDataModule, n: int) -> Optional[list]:
    try:
        names = [str(c) for c in datamodule.classes]
    except (AttributeError, RuntimeError, OSError, ValueError):  # not set up, or the data is not on this machine
        return None
    return names if len(names) == n else None


def load_model_for_export(config: str, ckpt: Union[str, Path], overrides: Sequence[str] = ()) -> nn.Module:
    """The model of ``config`` with the weights of training checkpoint ``ckpt`` (EMA when present), in eval mode,
    its ``pretrained_cfg`` carrying the class names and the data's preprocessing."""
    from .cli import load_task

    ck = read_checkpoint(ckpt)
    # the run's weights replace the initial ones: do not fetch the config's pretrained weights first
    task, datamodule, _ = load_task(config, None, ["--model.init_args.pretrained", "null", *overrides])
    model = task.model
    load_pretrained(model, ck)
    cfg = model.pretrained_cfg
    for k in _SOURCE_KEYS:
        cfg.pop(k, None)
    n = model.num_classes if conforms(model, ClassifierModel) else cfg.get("num_classes")
    cfg.update(data_config_of(datamodule), tag=None, num_classes=n)
    n = cfg["num_classes"]
    names = ck.class_names if ck.class_names and len(ck.class_names) == n else _class_names(datamodule, n)
    cfg["label_names_source"] = None
    cfg.pop("label_names", None)
    if names:
        cfg["label_names"] = names
    if isinstance(datamodule, COCODataModule):
        try:  # the data's own category id of each label (what predictions report)
            cfg["category_ids"] = [int(c) for c in datamodule.label_to_category_id]
        except (OSError, ValueError, RuntimeError):
            pass
    return model.eval()


def export_safetensors(model: nn.Module, output: Union[str, Path]) -> Path:
    """``output/model.safetensors`` + ``output/config.json`` (:func:`vision_attn.from_pretrained` rebuilds it)."""
    return model.save_pretrained(output)


def example_inputs(model: nn.Module, batch: int = 2) -> Tuple[nn.Module, Tuple[Tensor, ...]]:
    """What to trace for ``model``: ``(module, inputs)``. A classifier: images at its ``pretrained_cfg`` input size;
    DETR: a padded batch ``(images, mask)`` (the second image half padding); SA-GAN: its sampling generator with
    ``(z, labels)``."""
    if isinstance(model, SAGAN):
        gen = model.sampler
        z = torch.randn(batch, model.z_dim)
        labels = torch.arange(batch) % model.num_classes if model.num_classes else None
        return gen, (z,) if labels is None else (z, labels)
    c, h, w = (model.pretrained_cfg or {}).get("input_size", (3, 224, 224))
    images = torch.randn(batch, c, h, w)
    if isinstance(model, DETR):
        mask = torch.zeros(batch, h, w, dtype=torch.bool)
        mask[-1, :, w // 2 :] = True
        return model, (images, mask)
    return model, (images,)


class NamedOutputs(nn.Module):
    """``model`` returning only what an exported file serves: a classifier's ``logits (B, K)``; a DETR's
    ``logits (B, Q, K + 1)`` and ``pred_boxes (B, Q, 4)`` (normalised cxcywh), without the auxiliary outputs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, pixel_values: Tensor, pixel_mask: Optional[Tensor] = None
    ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """``pixel_values (B, 3, H, W)`` (+ DETR's ``pixel_mask (B, H, W)`` True on padding) -> see the class."""
        out = self.model(pixel_values) if pixel_mask is None else self.model(pixel_values, pixel_mask)
        return (out["pred_logits"], out["pred_boxes"]) if isinstance(out, dict) else out


def io_names(model: nn.Module) -> Tuple[List[str], List[str]]:
    """The exported file's input and output names: ``pixel_values`` -> ``logits``; DETR ``pixel_values``,
    ``pixel_mask`` (True on padding) -> ``logits``, ``pred_boxes``; SA-GAN ``z`` (+ ``labels``) -> ``images``."""
    if isinstance(model, SAGAN):
        return (["z", "labels"] if model.num_classes else ["z"]), ["images"]
    if isinstance(model, DETR):
        return ["pixel_values", "pixel_mask"], ["logits", "pred_boxes"]
    return ["pixel_values"], ["logits"]


def _preprocessing(model: nn.Module) -> Dict[str, Any]:
    """What a runtime does to an image before ``pixel_values``: size, mean, std, interpolation, crop (or DETR's
    short side and long-side cap)."""
    from ..models import resolve_data_config

    cfg = resolve_data_config(model)
    keys = ("input_size", "mean", "std", "interpolation", "crop_pct", "crop_mode", "short_side", "max_size")
    return {k: list(cfg[k]) if isinstance(cfg.get(k), tuple) else cfg[k] for k in keys if k in cfg}


def write_runtime_config(model: nn.Module, folder: Path, file: str) -> Path:
    """``folder/config.json`` of an exported file: the model's ``config.json`` (:func:`save_pretrained`'s, with the
    class names) plus ``task``, ``file``, ``inputs``, ``outputs``, ``preprocessing`` and, for a detector,
    ``category_ids`` (the data's own id of each label)."""
    import json

    from ..models.hub import model_config

    config = model_config(model)
    inputs, outputs = io_names(model)
    task = (
        "object-detection"
        if isinstance(model, DETR)
        else "image-generation"
        if isinstance(model, SAGAN)
        else "image-classification"
    )
    config.update(task=task, file=file, inputs=inputs, outputs=outputs)
    if not isinstance(model, SAGAN):
        config["preprocessing"] = _preprocessing(model)
    ids = (model.pretrained_cfg if conforms(model, PretrainedConfigured) else {}).get("category_ids")
    if ids:
        config["category_ids"] = [int(c) for c in ids]
    path = folder / "config.json"
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def _traced(model: nn.Module) -> Tuple[nn.Module, Tuple[Tensor, ...]]:
    module, inputs = example_inputs(model)
    return (module if isinstance(model, SAGAN) else NamedOutputs(module).eval()), inputs


def _export_program_folder(model: nn.Module, output: Union[str, Path]) -> Path:
    module, inputs = _traced(model)
    out = Path(output)
    export_program(module, inputs, out / "model.pt2")
    write_runtime_config(model, out, "model.pt2")
    return out


def _export_onnx_folder(model: nn.Module, output: Union[str, Path]) -> Path:
    module, inputs = _traced(model)
    out = Path(output)
    names_in, names_out = io_names(model)
    export_onnx(module, inputs, out / "model.onnx", input_names=names_in, output_names=names_out)
    write_runtime_config(model, out, "model.onnx")
    return out


FORMATS: Dict[str, Callable[[nn.Module, Union[str, Path]], Path]] = {
    "safetensors": export_safetensors,
    "exported_program": _export_program_folder,
    "onnx": _export_onnx_folder,
}


def export(
    config: str,
    ckpt: Union[str, Path],
    output: Union[str, Path],
    format: str = "safetensors",
    overrides: Sequence[str] = (),
) -> Path:
    """Export training checkpoint ``ckpt`` of ``config``'s model to ``output`` in ``format``; returns the folder."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {sorted(FORMATS)}; got {format!r}")
    model = load_model_for_export(config, ckpt, overrides)
    out = FORMATS[format](model, output)
    print(f"wrote {out}")
    return Path(out)
