"""FID, Inception Score and KID of generated images, through torchmetrics, with cached real-image features.

The feature extractor is one of:

* :class:`InceptionFeatures` - the standard one (torch-fidelity's TF-ported Inception-v3, as torchmetrics uses):
  2048-d pool features for FID / KID and the 1008 unbiased logits for IS. Its weights are fetched by
  torchmetrics / torch-fidelity on first use when online, or read from ``inception_weights=PATH``; offline
  without them, :func:`resolve_inception_weights` raises :class:`InceptionWeightsMissingError` naming the file,
  the URL and the option, and never starts a download.
* :class:`ClassifierFeatures` - any classifier of ours (penultimate features + logits). Numbers computed with it
  are NOT comparable to Inception FID / IS / KID.
* any ``nn.Module`` mapping images ``(B, 3, H, W)`` in [-1, 1] to features ``(B, D)`` or to ``(features (B, D),
  logits (B, K))`` (IS needs logits; without them IS is left out).

Real-image features are computed once per (dataset key, extractor, number of images) and stored under
``cache_dir`` (:func:`real_features`). torchmetrics computes the numbers from the features (its FID, KID, IS).
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Callable, Dict, Iterable, Optional, Tuple, Union, cast

import torch
from torch import Tensor, nn

from ..models.protocols import FeatureHeadModel, conforms

__all__ = [
    "INCEPTION_URL",
    "InceptionWeightsMissingError",
    "resolve_inception_weights",
    "InceptionFeatures",
    "ClassifierFeatures",
    "extractor_id",
    "extract_features",
    "real_features",
    "generation_metrics_from_features",
]

INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
INCEPTION_FILE = INCEPTION_URL.rsplit("/", 1)[-1]

Features = Tuple[Tensor, Optional[Tensor]]


class InceptionWeightsMissingError(FileNotFoundError):
    """The standard Inception-v3 weights (for FID / IS / KID) are neither given nor in torch's hub cache."""


def _hub_cache_file() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def resolve_inception_weights(
    path: Optional[Union[str, os.PathLike]] = None, allow_download: bool = False
) -> Optional[str]:
    """The local Inception weights file to use, checked to exist; never downloads.

    ``path`` given: it must exist. Otherwise torch's hub cache (where torch-fidelity puts it on first use online)
    is looked at. ``allow_download=True`` returns None when nothing is found, letting torch-fidelity fetch it.
    """
    if path is not None:
        if not Path(path).is_file():
            raise InceptionWeightsMissingError(
                f"inception_weights={str(path)!r}: no such file (expected {INCEPTION_FILE}, from {INCEPTION_URL})"
            )
        return str(path)
    cached = _hub_cache_file()
    if cached.is_file():
        return str(cached)
    if allow_download:
        return None
    raise InceptionWeightsMissingError(
        f"FID / IS / KID need the Inception-v3 weights {INCEPTION_FILE} and they are not in torch's hub cache "
        f"({cached}). Download {INCEPTION_URL} on a machine with internet and either put it there or pass its path: "
        f"--inception-weights PATH (tools/eval.py), --model.init_args.inception_weights PATH "
        f"(GenerationTask config), or inception_weights=PATH (Python). Set allow_download (inception_download=true) "
        f"to let torch-fidelity download it when online. Offline, a classifier checkpoint can serve as the feature "
        f"extractor instead (feature_extractor='classifier'; not comparable to Inception numbers)."
    )


def _to_uint8(images: Tensor) -> Tensor:
    """``[-1, 1]`` float -> ``[0, 255]`` uint8, as images are saved."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


class InceptionFeatures(nn.Module):
    """torch-fidelity's Inception-v3 (torchmetrics' ``NoTrainInceptionV3``): images ``(B, 3, H, W)`` in [-1, 1] ->
    ``(pool features (B, 2048), unbiased logits (B, 1008))``. Images are quantised to uint8 first, as saved images."""

    def __init__(self, weights: Optional[Union[str, os.PathLike]] = None, allow_download: bool = False) -> None:
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3

        path = resolve_inception_weights(weights, allow_download)
        self.net = NoTrainInceptionV3(
            name="inception-v3-compat", features_list=["2048", "logits_unbiased"], feature_extractor_weights_path=path
        )
        self.cache_id = "inception-v3-compat-2048"

    def forward(self, images: Tensor) -> Features:
        feats, logits = self.net(_to_uint8(images))
        return feats, logits


class ClassifierFeatures(nn.Module):
    """A classifier as the feature extractor: images ``(B, 3, H, W)`` in [-1, 1] -> ``(features (B, D), logits (B, K))``.

    Args:
        classifier: a model with timm's ``forward_features`` / ``forward_head(x, pre_logits=True)`` (our CNNs and
            ViTs); otherwise its output serves as both features and logits.
        mean, std: the per-channel normalisation the classifier was trained with (in [0, 1] units); images
            are mapped from [-1, 1] to it.
    """

    mean: Tensor  # buffers (1, 3, 1, 1): the classifier's input normalisation
    std: Tensor

    def __init__(
        self, classifier: nn.Module, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), cache_id: Optional[str] = None
    ) -> None:
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.cache_id = cache_id or f"classifier-{_state_hash(classifier)}"

    def train(self, mode: bool = True) -> ClassifierFeatures:
        return super().train(False)  # never leaves eval mode (BatchNorm statistics stay fixed)

    def forward(self, images: Tensor) -> Features:
        x = ((images.float() + 1) / 2 - self.mean) / self.std
        m = self.classifier
        if conforms(m, FeatureHeadModel):
            split = cast(FeatureHeadModel, m)
            h = split.forward_features(x)
            return split.forward_head(h, pre_logits=True), split.forward_head(h)
        out = m(x)
        return out, out


def _state_hash(module: nn.Module) -> str:
    h = hashlib.sha1(type(module).__name__.encode())
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()[:16]


def extractor_id(extractor: nn.Module) -> str:
    """What identifies an extractor in the cache: its ``cache_id`` attribute, else a hash of its class and weights."""
    return getattr(extractor, "cache_id", None) or f"{type(extractor).__name__}-{_state_hash(extractor)}"


def _split(out) -> Features:
    if isinstance(out, (tuple, list)):
        return out[0], (out[1] if len(out) > 1 else None)
    return out, None


@torch.no_grad()
def extract_features(
    extractor: nn.Module,
    batches: Iterable[Tensor],
    max_images: Optional[int] = None,
    device: Optional[torch.device] = None,
) -> Features:
    """Run ``extractor`` over image batches ``(B, 3, H, W)`` in [-1, 1] (or ``(images, labels)`` pairs).

    Returns ``(features (N, D), logits (N, K) or None)``, float64 on CPU, ``N <= max_images``.
    """
    device = device or next((p.device for p in extractor.parameters()), torch.device("cpu"))
    feats, logits, n = [], [], 0
    for batch in batches:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        if max_images is not None:
            images = images[: max_images - n]
        if images.shape[0] == 0:
            break
        f, lg = _split(extractor(images.to(device)))
        feats.append(f.double().cpu().flatten(1))
        if lg is not None:
            logits.append(lg.double().cpu())
        n += images.shape[0]
        if max_images is not None and n >= max_images:
            break
    if not feats:
        raise ValueError("extract_features: got no images")
    return torch.cat(feats), (torch.cat(logits) if logits else None)


def real_features(
    extractor: nn.Module,
    batches: Callable[[], Iterable[Tensor]],
    dataset_key: str,
    max_images: int,
    cache_dir: Optional[Union[str, os.PathLike]] = None,
    device: Optional[torch.device] = None,
) -> Tensor:
    """Features ``(N, D)`` of real images, computed once and cached.

    Args:
        batches: a callable returning an iterable of image batches in [-1, 1] (called only on a cache miss).
        dataset_key: identifies the images (e.g. dataset folder + split + normalisation); part of the cache key,
            with :func:`extractor_id` and ``max_images``.
        cache_dir: where ``real-features-<hash>.pt`` goes; None = no cache.
    """
    key = f"{dataset_key}|{extractor_id(extractor)}|{max_images}"
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"real-features-{hashlib.sha1(key.encode()).hexdigest()[:20]}.pt"
        if path.is_file():
            saved = torch.load(path, map_location="cpu", weights_only=True)
            if saved.get("key") == key:
                return saved["features"]
    feats, _ = extract_features(extractor, batches(), max_images, device)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save({"key": key, "features": feats}, tmp)
        os.replace(tmp, path)  # atomic: concurrent evaluations never read a half-written file
    return feats


class _Given(nn.Module):
    """Identity "feature extractor": lets torchmetrics' metrics consume features we already have."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: Tensor) -> Tensor:
        return x


def generation_metrics_from_features(
    real: Tensor,
    fake: Tensor,
    fake_logits: Optional[Tensor] = None,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    is_splits: int = 10,
    seed: int = 0,
) -> Dict[str, float]:
    """FID, KID (mean, std) and IS (mean, std; when ``fake_logits`` is given) from features.

    Args:
        real: ``(N_r, D)`` real-image features; fake: ``(N_f, D)`` generated-image features.
        fake_logits: ``(N_f, K)`` class logits of the generated images (IS).
        kid_subset_size: capped at ``min(N_r, N_f)``.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.inception import InceptionScore
    from torchmetrics.image.kid import KernelInceptionDistance

    if real.dim() != 2 or fake.dim() != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"real and fake features must be (N, D) with the same D; got {tuple(real.shape)} and {tuple(fake.shape)}"
        )
    if min(len(real), len(fake)) < 2:
        raise ValueError(f"need at least 2 real and 2 fake images; got {len(real)} and {len(fake)}")
    d = real.shape[1]
    fid = FrechetInceptionDistance(feature=_Given(d), reset_real_features=False)
    fid.update(real.double(), real=True)
    fid.update(fake.double(), real=False)
    out = {"fid": float(fid.compute())}
    size = min(kid_subset_size, len(real), len(fake))
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        kid = KernelInceptionDistance(feature=_Given(d), subsets=kid_subsets, subset_size=size)
    kid.update(real.double(), real=True)
    kid.update(fake.double(), real=False)
    with torch.random.fork_rng(devices=[]):  # KID draws random subsets: seeded, without touching the caller's RNG
        torch.manual_seed(seed)
        kid_mean, kid_std = kid.compute()
    out.update(kid_mean=float(kid_mean), kid_std=float(kid_std))
    if fake_logits is not None:
        isc = InceptionScore(feature=_Given(fake_logits.shape[1]), splits=min(is_splits, len(fake_logits)))
        isc.update(fake_logits.double())
        with torch.random.fork_rng(devices=[]):  # IS shuffles before splitting
            torch.manual_seed(seed)
            is_mean, is_std = isc.compute()
        out.update(is_mean=float(is_mean), is_std=float(is_std))
    out = {k: (v if math.isfinite(v) else float("nan")) for k, v in out.items()}
    return out
