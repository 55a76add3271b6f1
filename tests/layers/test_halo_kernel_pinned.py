"""The halo kernel of LocalSelfAttention2d after issue 24's speed-ups (one gather for the halo, k' and padded v' in one
concatenation, a cached float window mask) against its code before them, written out below: same outputs bit for
bit, gradients equal to float rounding (a scatter-add sums the overlapping halos in another order)."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from vision_attn.attention import scaled_dot_product_attention
from vision_attn.layers import LocalSelfAttention2d


def halo_before(self, x):
    """``LocalSelfAttention2d._forward_halo`` at e6c4a2a (before issue 24), unchanged."""
    B, C, H, W = x.shape
    nh, d, r = self.num_heads, self.head_dim, self.kernel_size // 2
    bh, bw, nbh, nbw = self._layout(H, W)
    Hp, Wp, Kh, Kw = nbh * bh, nbw * bw, bh + 2 * r, bw + 2 * r
    nblocks = nbh * nbw
    q, k, v = self.qkv(x).chunk(3, dim=1)
    q = F.pad(q, (0, Wp - W, 0, Hp - H)).reshape(B, nh, d, nbh, bh, nbw, bw).permute(3, 5, 0, 1, 4, 6, 2)
    dr = d // 2
    rows = torch.einsum("abnhijc,hikc->abnhijk", q[..., :dr], self._shifted(self.rel_pos_h, bh))
    cols = torch.einsum("abnhijc,hjkc->abnhijk", q[..., dr:], self._shifted(self.rel_pos_w, bw))
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
    mask = self._window_mask(H, W, x.device)
    out = scaled_dot_product_attention(q, k, v, mask, scale=d**-0.5)
    return out.reshape(nbh, nbw, B, nh, bh, bw, d).permute(2, 3, 6, 0, 4, 1, 5).reshape(B, C, Hp, Wp)[:, :, :H, :W]


@pytest.mark.parametrize(
    "channels,heads,kernel,size,block,stride",
    [
        (16, 2, 3, (5, 7), 4, 1),
        (32, 4, 7, (12, 12), 8, 2),
        (16, 2, 7, (3, 3), 2, 1),
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
    assert torch.equal(out1, out0)
    for g1, g0 in zip(grads1, grads0):
        torch.testing.assert_close(g1, g0, rtol=1e-5, atol=1e-6)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(m._forward_halo(x), halo_before(m, x))


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
