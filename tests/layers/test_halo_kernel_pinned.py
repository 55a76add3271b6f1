"""The halo kernel of LocalSelfAttention2d after issue 24's speed-ups (balanced blocks, no halo along an axis that is one
block, keys and values gathered channels-last with their tails in one copy, a cached float window mask) against its
code before them (e6c4a2a), written out below with that commit's layout: full halos, blocks of ``block_size`` and
padding. Same outputs and gradients up to float rounding: the new kernel skips only keys the old one masked."""

import logging

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import vision_attn as va
from vision_attn.attention import scaled_dot_product_attention
from vision_attn.layers import LocalSelfAttention2d
from vision_attn.layers.local_kernels import _halo_layout


def _shifted_before(rel, block):
    k = rel.shape[1]
    j_minus_i = torch.arange(block + k - 1)[None, :] - torch.arange(block)[:, None]
    inside = (j_minus_i >= 0) & (j_minus_i < k)
    return rel[:, j_minus_i.clamp(0, k - 1)] * inside[None, :, :, None].to(rel.dtype)


def _mask_before(H, W, r, bh, bw, nbh, nbw):
    def axis(b, nb, size):
        start = torch.arange(nb)[:, None] * b
        q = start + torch.arange(b)
        k = start - r + torch.arange(b + 2 * r)
        return (k[:, None, :] - q[:, :, None]).abs() <= r, (k >= 0) & (k < size), q < size

    near_y, key_in_y, q_in_y = axis(bh, nbh, H)
    near_x, key_in_x, q_in_x = axis(bw, nbw, W)
    near = near_y[:, None, :, None, :, None] & near_x[None, :, None, :, None, :]
    key_in = key_in_y[:, None, None, None, :, None] & key_in_x[None, :, None, None, None, :]
    q_in = q_in_y[:, None, :, None, None, None] & q_in_x[None, :, None, :, None, None]
    return (near & (key_in | ~q_in)).reshape(nbh * nbw, 1, bh * bw, (bh + 2 * r) * (bw + 2 * r))


def halo_before(self, x):
    """``LocalSelfAttention2d._forward_halo`` at e6c4a2a (before issue 24), its layout and helpers inlined."""
    B, C, H, W = x.shape
    nh, d, r = self.num_heads, self.head_dim, self.kernel_size // 2
    bh, bw = min(self.block_size, H), min(self.block_size, W)
    nbh, nbw = -(-H // bh), -(-W // bw)
    Hp, Wp, Kh, Kw = nbh * bh, nbw * bw, bh + 2 * r, bw + 2 * r
    nblocks = nbh * nbw
    q, k, v = self.qkv(x).chunk(3, dim=1)
    q = F.pad(q, (0, Wp - W, 0, Hp - H)).reshape(B, nh, d, nbh, bh, nbw, bw).permute(3, 5, 0, 1, 4, 6, 2)
    dr = d // 2
    rows = torch.einsum("abnhijc,hikc->abnhijk", q[..., :dr], _shifted_before(self.rel_pos_h, bh))
    cols = torch.einsum("abnhijc,hjkc->abnhijk", q[..., dr:], _shifted_before(self.rel_pos_w, bw))
    q = torch.cat([q, rows, cols], dim=-1).reshape(nblocks, B * nh, bh * bw, d + Kh + Kw)
    kv = F.pad(torch.cat([k, v], dim=1), (r, r + Wp - W, r, r + Hp - H))
    kv = kv.unfold(2, Kh, bh).unfold(3, Kw, bw)
    kv = kv.reshape(B, 2, nh, d, nbh, nbw, Kh, Kw).permute(1, 4, 5, 0, 2, 6, 7, 3)
    kv = kv.reshape(2, nblocks, B * nh, Kh * Kw, d)
    k, v = kv.unbind(0)
    code = torch.cat(
        [
            torch.eye(Kh, dtype=k.dtype, device=k.device).repeat_interleave(Kw, dim=0),
            torch.eye(Kw, dtype=k.dtype, device=k.device).repeat(Kh, 1),
        ],
        dim=1,
    )
    k = torch.cat([k, code.expand(nblocks, B * nh, -1, -1)], dim=-1)
    mask = _mask_before(H, W, r, bh, bw, nbh, nbw)
    out = scaled_dot_product_attention(q, k, v, mask, scale=d**-0.5)
    return out.reshape(nbh, nbw, B, nh, bh, bw, d).permute(2, 3, 6, 0, 4, 1, 5).reshape(B, C, Hp, Wp)[:, :, :H, :W]


@pytest.mark.parametrize(
    "channels,heads,kernel,size,block,stride",
    [
        (16, 2, 3, (5, 7), 4, 1),
        (32, 4, 7, (12, 12), 8, 2),
        (16, 2, 7, (3, 3), 2, 1),
        (16, 2, 7, (12, 7), 8, 1),  # balanced: 2 blocks of 6 rows (not 8 + 4 of padding); columns: one block, no halo
        (16, 4, 5, (9, 10), 4, 1),
    ],
)
def test_the_halo_kernel_gives_the_same_outputs_and_gradients_as_before(channels, heads, kernel, size, block, stride):
    torch.manual_seed(0)
    m = LocalSelfAttention2d(channels, kernel, heads, stride=stride, block_size=block, backend="halo")
    x = torch.randn(2, channels, *size, requires_grad=True)
    grad = torch.randn_like(m(x))
    results = []
    for halo in (lambda t: halo_before(m, t), m._forward_halo):
        x.grad = None
        m.zero_grad()
        out = m.pool(halo(x))
        out.backward(grad)
        results.append(
            (
                out.detach(),
                x.grad.clone(),
                m.qkv.weight.grad.clone(),
                m.rel_pos_h.grad.clone(),
                m.rel_pos_w.grad.clone(),
            )
        )
    (out0, *grads0), (out1, *grads1) = results
    torch.testing.assert_close(out1, out0, rtol=1e-5, atol=1e-6)
    for g1, g0 in zip(grads1, grads0):  # sums over B*H*W (and overlapping halos) in another order: rounding
        torch.testing.assert_close(g1, g0, rtol=1e-5, atol=1e-5 * g0.abs().max().item())
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(m._forward_halo(x), halo_before(m, x), rtol=2e-2, atol=2e-2)


class _Ops(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def test_the_halo_kernel_builds_its_mask_once_per_shape_and_pads_nothing_in_the_core(monkeypatch):
    torch.manual_seed(0)
    m = LocalSelfAttention2d(16, 5, 2, block_size=4, backend="halo")
    built = []
    window_mask = LocalSelfAttention2d._window_mask
    monkeypatch.setattr(LocalSelfAttention2d, "_window_mask", lambda self, *a: built.append(a) or window_mask(self, *a))
    x = torch.randn(1, 16, 8, 8)
    for _ in range(3):
        m(x)
    m(torch.randn(1, 16, 6, 10))
    assert [a[:2] for a in built] == [(8, 8), (6, 10)]
    forward, both = _Ops(), _Ops()
    with forward:
        m(x)
    with both:
        m(x.requires_grad_()).sum().backward()
    # two zero-paddings (query blocks, halo border), none of v in the core; no unfold backward (slow) for the halo
    assert forward.names.count("constant_pad_nd") == 2, forward.names
    assert "unfold_backward" not in both.names and "index_add_" in both.names, both.names


class _Shapes(TorchDispatchMode):
    """Records the (query, key) lengths of every fused attention call."""

    def __init__(self):
        super().__init__()
        self.sdpa = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if "scaled_dot_product" in func.overloadpacket.__name__:
            self.sdpa.append((args[0].shape[-2], args[1].shape[-2]))
        return func(*args, **(kwargs or {}))


def test_blocks_are_balanced_and_an_axis_of_one_block_has_no_halo():
    for size in range(1, 40):
        for block in range(1, 10):
            b, _, nb, _ = _halo_layout(size, 1, block)
            assert nb == -(-size // block) and b <= block and 0 <= nb * b - size < nb, (size, block)
    m = LocalSelfAttention2d(16, 7, 2, block_size=8)
    for size, seen in [(28, (49, 13 * 13)), (7, (49, 49)), ((12, 7), (42, 12 * 7))]:
        size = size if isinstance(size, tuple) else (size, size)
        with _Shapes() as shapes, torch.no_grad():
            m(torch.randn(1, 16, *size))
        # 28 px: 4 blocks of 7 (was 4 of 8, a quarter of the queries padding); 7 px: the map's own 49 keys (was 13 x 13)
        assert shapes.sdpa == [seen], (size, shapes.sdpa)


def test_a_first_call_under_inference_mode_does_not_break_training():
    m = LocalSelfAttention2d(16, 3, 2)
    x = torch.randn(1, 16, 6, 6)
    with torch.inference_mode():
        m(x)  # builds the shape cache
    m(x.requires_grad_()).sum().backward()
    assert x.grad is not None and m.rel_pos_h.grad is not None


def test_a_forward_logs_no_torch_fx_warning(caplog):
    import torch.fx._symbolic_trace as symbolic_trace

    if hasattr(symbolic_trace, "is_fx_tracing_warning"):  # logged once per process: forget that it was
        symbolic_trace.is_fx_tracing_warning.cache_clear()
    model = va.create_model("sasa_resnet26_cifar", num_classes=10, layers=(1, 1, 1, 1)).eval()
    with caplog.at_level(logging.WARNING), torch.no_grad():
        model(torch.randn(1, 3, 16, 16))
    assert not [r for r in caplog.records if "fx" in r.getMessage()], caplog.text
