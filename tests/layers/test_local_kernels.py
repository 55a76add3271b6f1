"""LocalSelfAttention2d's kernels (halo, unfold, flex) are exact: each equals the brute-force definition."""

import pytest
import torch
from test_pixel_attention import brute_force_local

from vision_attn.attention import capture_attention
from vision_attn.layers import LocalSelfAttention2d

CASES = [((7, 10), 3, 2, 1), ((7, 10), 5, 4, 1), ((5, 5), 7, 2, 2), ((1, 6), 3, 2, 1)]


@pytest.mark.parametrize("size,kernel,heads,stride", CASES)
def test_unfold_kernel_equals_brute_force_forward_and_backward(size, kernel, heads, stride):
    torch.manual_seed(0)
    m = LocalSelfAttention2d(16, kernel, heads, stride=stride, backend="unfold")
    x = torch.randn(2, 16, *size, requires_grad=True)
    m(x).square().sum().backward()
    grads = [x.grad.clone()] + [p.grad.clone() for p in m.parameters()]
    x.grad = None
    m.zero_grad()
    ref, _ = brute_force_local(m, x)
    ref.square().sum().backward()
    torch.testing.assert_close(m(x), ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, [x.grad] + [p.grad for p in m.parameters()]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_flex_kernel_equals_brute_force():
    """One shape: each new shape compiles FlexAttention on CPU (seconds). Inference only on CPU (no backward)."""
    pytest.importorskip("torch.nn.attention.flex_attention")
    torch.manual_seed(0)
    m = LocalSelfAttention2d(16, 5, 4, backend="flex").eval()
    x = torch.randn(2, 16, 7, 10)
    with torch.no_grad():
        out = m(x)
        ref, _ = brute_force_local(m, x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_the_cores_flex_attention_is_softmax_attention_under_a_rule_mask_and_a_score_term():
    """``vision_attn.attention.flex_attention`` (the one FlexAttention entry): with a block mask of a rule and a
    ``score_mod`` it equals the dense softmax((q k^T) * scale + bias) v restricted to that rule, written out."""
    flex = pytest.importorskip("torch.nn.attention.flex_attention")
    from vision_attn.attention import flex_attention

    torch.manual_seed(0)
    B, H, N, d = 1, 2, 16, 8
    q, k, v = (torch.randn(B, H, N, d) for _ in range(3))
    bias = torch.randn(H, N, N)
    near = lambda b, h, qi, ki: (qi - ki).abs() <= 2  # noqa: E731
    mask = flex.create_block_mask(near, None, None, N, N, device="cpu")
    with torch.no_grad():
        out = flex_attention(q, k, v, score_mod=lambda s, b, h, qi, ki: s + bias[h, qi, ki], block_mask=mask, scale=0.3)
    idx = torch.arange(N)
    scores = (q @ k.transpose(-1, -2)) * 0.3 + bias
    scores = scores.masked_fill((idx[:, None] - idx[None, :]).abs() > 2, float("-inf"))
    torch.testing.assert_close(out, scores.softmax(-1) @ v, rtol=1e-5, atol=1e-5)


def test_the_cores_flex_attention_pads_heads_smaller_than_the_kernels_take(monkeypatch):
    """On CUDA FlexAttention's kernels need head size >= 16 (SASA's heads are 8): the core zero-pads q, k and v and
    keeps the scale of the true size, so nothing changes. Exercised on CPU by asking for the CUDA minimum here."""
    flex = pytest.importorskip("torch.nn.attention.flex_attention")
    from vision_attn.attention import core

    torch.manual_seed(0)
    q, k = torch.randn(1, 2, 16, 8), torch.randn(1, 2, 16, 8)
    v = torch.randn(1, 2, 16, 4)
    mask = flex.create_block_mask(lambda b, h, qi, ki: (qi - ki).abs() <= 3, None, None, 16, 16, device="cpu")
    with torch.no_grad():
        plain = core.flex_attention(q, k, v, block_mask=mask)
        monkeypatch.setitem(core.FLEX_MIN_HEAD_DIM, "cpu", 16)
        padded = core.flex_attention(q, k, v, block_mask=mask)
    assert padded.shape == (1, 2, 16, 4)
    torch.testing.assert_close(padded, plain, rtol=1e-5, atol=1e-5)


def test_flex_without_a_backward_is_refused_with_the_way_out():
    m = LocalSelfAttention2d(16, 3, 2, backend="flex")
    with pytest.raises(RuntimeError, match="backend='flex' needs FlexAttention with a backward on cpu"):
        m(torch.randn(1, 16, 5, 5))


@pytest.mark.parametrize("backend", ["unfold", "flex"])
def test_capture_gives_the_same_window_weights_with_every_kernel(backend):
    torch.manual_seed(0)
    m = LocalSelfAttention2d(8, 3, 2, block_size=4).eval()
    x = torch.randn(2, 8, 5, 6)
    with torch.no_grad(), capture_attention(m) as maps:
        m(x)
    halo = maps["self"]
    m.backend = backend
    with torch.no_grad(), capture_attention(m) as maps:
        out = m(x)
    torch.testing.assert_close(maps["self"], halo, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out, brute_force_local(m, x)[0], rtol=1e-5, atol=1e-5)


def test_backend_is_checked():
    with pytest.raises(
        ValueError, match="backend must be one of \\('auto', 'halo', 'flex', 'unfold'\\); got backend='cuda'"
    ):
        LocalSelfAttention2d(16, 3, 2, backend="cuda")


def test_auto_runs_the_measured_fastest_cpu_kernel_for_training_and_inference():
    """The rule measured on CPU (benchmark.py pixel --kernel-shapes sasa): halo with and without gradients."""
    m = LocalSelfAttention2d(16, 3, 2)
    x = torch.randn(1, 16, 5, 5)
    assert m.backend == "auto" and m.pick_backend(x) == "halo"
    with torch.no_grad():
        assert m.pick_backend(x) == "halo"
    assert LocalSelfAttention2d(16, 3, 2, backend="unfold").pick_backend(x) == "unfold"
