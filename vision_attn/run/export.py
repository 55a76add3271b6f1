"""Export a model for deployment: ``torch.export`` programs (``.pt2``) and ONNX (torch's dynamo exporter).

Both trace the model once on ``example_inputs`` and keep the batch axis dynamic, so one file serves any batch
size; image sizes stay those of the example. Models with several tensor inputs share the one batch axis:
DETR exports as ``(images (B, 3, H, W), mask (B, H, W) bool)`` (a padded batch), the conditional SA-GAN
generator as ``(z (B, z_dim), labels (B,) int64)``.

    >>> export_onnx(model.eval(), (images,), "out/model.onnx")
    >>> outs = run_onnx("out/model.onnx", images[:3])          # numpy arrays, as torch's pytree leaves
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_leaves

__all__ = ["export_program", "export_onnx", "load_program", "run_onnx", "flat_outputs", "BATCH_MIN", "BATCH_MAX"]

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
        raise ValueError(f"example_inputs: every input shares the batch axis 0; got batch sizes {[t.shape[0] for t in inputs]}")
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
) -> Path:
    """Export ``model`` to ONNX with torch's dynamo exporter (``torch.export`` underneath) and check the file.

    Args:
        model: an ``nn.Module`` in eval mode, or a program from :func:`export_program` (not traced again).
        example_inputs: as :func:`export_program`.
        path: the ``.onnx`` file to write (weights inside it).
        dynamic_batch: keep axis 0 of every input dynamic (named ``batch`` in the ONNX graph).
        input_names: ONNX input names (default ``input0``, ``input1``, ...).

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
        model, inputs, str(path), dynamo=True, dynamic_shapes=_dynamic_shapes(inputs, dynamic_batch),
        input_names=names, external_data=False, verbose=False,
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
