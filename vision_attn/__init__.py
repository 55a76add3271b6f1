"""vision_attn: attention-based image models on one shared multi-head attention core."""

from .attention import MultiHeadAttention, capture_attention
from .models import (
    create_eval_transform,
    create_model,
    from_pretrained,
    list_models,
    load_pretrained,
    resolve_data_config,
)

__version__ = "0.1.0"

__all__ = [
    "MultiHeadAttention",
    "capture_attention",
    "create_model",
    "list_models",
    "load_pretrained",
    "from_pretrained",
    "resolve_data_config",
    "create_eval_transform",
    "pipeline",
    "__version__",
]


def __getattr__(name: str):
    # the pipeline lives on the run floor (Lightning, tasks): imported on first use, not with the models
    if name == "pipeline":
        from .run.pipeline import pipeline

        return pipeline
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
