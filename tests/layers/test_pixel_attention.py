"""Pixel-level self-attention: exact local windows, identity at init, capture, the models, bad input."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import profile

import vision_attn as va
from vision_attn.attention import capture_attention, local_window_mask, scaled_dot_product_attention
from vision_attn.layers import LocalSelfAttention2d, NonLocalBlock2d
from vision_attn.run.viz.attention import pixel_attention_maps, plot_pixel_attention, window_weights_to_dense
from vision_attn.tasks import ClassificationTask

FLASH_CPU = "aten::_scaled_dot_product_flash_attention_for_cpu"
MATH = "aten::_scaled_dot_product_attention_math"


def _kernels(fn):
    with profile() as prof:
        fn()
    return {e.key for e in prof.key_averages()}


def brute_force_local(m: LocalSelfAttention2d, x: torch.Tensor) -> torch.Tensor:
    """The definition, on the core: global attention over all H*W pixels with a dense float mask holding
    -inf outside each k x k window and the relative term q . r[dy, dx] / sqrt(d) inside it."""
    B, C, H, W = x.shape
    nh, d, k = m.num_heads, m.head_dim, m.kernel_size
    r = k // 2
    q, key, v = (t.reshape(B, nh, d, H * W).transpose(-1, -2) for t in m.qkv(x).chunk(3, 1))
    ys, xs = torch.arange(H).repeat_interleave(W), torch.arange(W).repeat(H)
    dy = (ys[None, :] - ys[:, None]).clamp(-r, r) + r  # (N, N) row offset of key from query, as an index
    dx = (xs[None, :] - xs[:, None]).clamp(-r, r) + r
    half = d // 2
    rel = torch.einsum("bhnc,hnmc->bhnm", q[..., :half], m.rel_pos_h[:, dy]) + torch.einsum(
        "bhnc,hnmc->bhnm", q[..., half:], m.rel_pos_w[:, dx]
    )
    bias = (rel * d**-0.5).masked_fill(local_window_mask(H, W, k), float("-inf"))
    out, weights = scaled_dot_product_attention(q, key, v, bias, need_weights=True)
    return m.pool(out.transpose(-1, -2).reshape(B, C, H, W)), weights


# --- LocalSelfAttention2d ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "size,kernel,heads,block,stride",
    [((7, 10), 3, 2, 4, 1), ((7, 10), 5, 4, 8, 1), ((5, 5), 7, 2, 2, 2), ((9, 4), 3, 4, 3, 1), ((1, 6), 3, 2, 8, 1)],
)
def test_local_attention_equals_brute_force_masked_global_attention(size, kernel, heads, block, stride):
    """Odd, non-square sizes, windows larger than the map, blocks not dividing it: every pixel, borders included."""
    torch.manual_seed(0)
    m = LocalSelfAttention2d(16, kernel, heads, stride=stride, block_size=block).eval()
    x = torch.randn(2, 16, *size)
    ref, _ = brute_force_local(m, x)
    out = m(x)
    assert out.shape == (2, 16, -(-size[0] // stride), -(-size[1] // stride))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_local_attention_gradients_equal_brute_force():
    torch.manual_seed(0)
    m = LocalSelfAttention2d(8, 3, 2, block_size=3)
    x = torch.randn(1, 8, 5, 7, requires_grad=True)
    m(x).square().sum().backward()
    grads = [x.grad.clone()] + [p.grad.clone() for p in m.parameters()]
    x.grad = None
    m.zero_grad()
    brute_force_local(m, x)[0].square().sum().backward()
    for got, want in zip(grads, [x.grad] + [p.grad for p in m.parameters()]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert m.rel_pos_h.grad.abs().sum() > 0 and m.rel_pos_w.grad.abs().sum() > 0


def test_a_pixel_outside_the_window_has_no_effect():
    torch.manual_seed(0)
    m = LocalSelfAttention2d(8, 3, 2, block_size=4).eval()
    x = torch.randn(1, 8, 9, 11)
    x2 = x.clone()
    x2[:, :, 2, 6] = 100 * torch.randn(8)  # only queries in rows 1-3, columns 5-7 have it in their 3x3 window
    a, b = m(x), m(x2)
    torch.testing.assert_close(a[:, :, 0, 3:6], b[:, :, 0, 3:6])  # queries whose windows miss (2, 6)
    torch.testing.assert_close(a[:, :, 4:, :], b[:, :, 4:, :])
    assert not torch.allclose(a[:, :, 1, 5], b[:, :, 1, 5])  # a neighbour of (2, 6) does see it


def test_local_attention_is_translation_equivariant_inside_the_image():
    torch.manual_seed(0)
    m = LocalSelfAttention2d(8, 5, 2, block_size=4).eval()
    content = torch.randn(1, 8, 6, 7)
    canvas = torch.zeros(1, 8, 17, 19)
    a = canvas.clone()
    a[:, :, 2:8, 3:10] = content
    b = canvas.clone()
    b[:, :, 7:13, 9:16] = content  # shifted by (5, 6): not a multiple of the block size
    torch.testing.assert_close(m(a)[:, :, 2:8, 3:10], m(b)[:, :, 7:13, 9:16], rtol=1e-5, atol=1e-5)


def test_local_attention_runs_the_fused_kernel_forward_and_backward():
    m = LocalSelfAttention2d(16, 7, 4)
    x = torch.randn(2, 16, 12, 13, requires_grad=True)
    names = _kernels(lambda: m(x).sum().backward())
    assert FLASH_CPU in names and FLASH_CPU + "_backward" in names and MATH not in names


def test_local_attention_capture_gives_per_pixel_window_weights():
    torch.manual_seed(0)
    m = LocalSelfAttention2d(8, 3, 2, block_size=4).eval()
    x = torch.randn(2, 8, 5, 6)
    ref = m(x)
    with capture_attention(m) as maps:
        out = m(x)
    assert torch.equal(out, ref)
    w = maps["self"]
    assert w.shape == (2, 2, 30, 9)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 2, 30))
    assert torch.all(w[:, :, 0, :3] == 0) and torch.all(
        w[:, :, 0, [0, 3, 6]] == 0
    )  # corner: row/col above/left are outside
    _, dense_ref = brute_force_local(m, x)
    torch.testing.assert_close(window_weights_to_dense(w, 5, 6, 3), dense_ref, rtol=1e-5, atol=1e-6)
    assert m._capture is None


# --- NonLocalBlock2d --------------------------------------------------------------------------------------
def test_nonlocal_block_is_the_identity_at_init_and_not_after_gamma_moves():
    torch.manual_seed(0)
    m = NonLocalBlock2d(32, num_heads=2)
    x = torch.randn(2, 32, 5, 7)
    assert torch.equal(m(x), x)
    with torch.no_grad():
        m.gamma.fill_(0.5)
    assert not torch.allclose(m(x), x)


@pytest.mark.parametrize("kv_pool,size,nk", [(1, (6, 8), 48), (2, (6, 8), 12), (2, (7, 9), 20)])
def test_nonlocal_block_attends_to_all_pixels_or_to_pooled_ones(kv_pool, size, nk):
    torch.manual_seed(0)
    m = NonLocalBlock2d(16, num_heads=2, kv_pool=kv_pool)
    with torch.no_grad():
        m.gamma.fill_(1.0)
    x = torch.randn(2, 16, *size)
    with capture_attention(m) as maps:
        out = m(x)
    assert out.shape == x.shape and torch.equal(out, m(x))
    assert maps["self"].shape == (2, 2, size[0] * size[1], nk)
    torch.testing.assert_close(maps["self"].sum(-1), torch.ones(2, 2, size[0] * size[1]))


def test_nonlocal_block_is_global():
    """Changing one far pixel changes every output pixel (unlike the local window)."""
    torch.manual_seed(0)
    m = NonLocalBlock2d(16).eval()
    with torch.no_grad():
        m.gamma.fill_(1.0)
    x = torch.randn(1, 16, 8, 8)
    x2 = x.clone()
    x2[:, :, 7, 7] += 5.0
    changed = (m(x) - m(x2)).abs().amax(1)[0]
    assert torch.all(changed > 0)


def test_nonlocal_block_runs_the_fused_kernel():
    m = NonLocalBlock2d(32, num_heads=2, kv_pool=2)
    x = torch.randn(2, 32, 10, 10, requires_grad=True)
    names = _kernels(lambda: m(x).sum().backward())
    assert FLASH_CPU in names and FLASH_CPU + "_backward" in names and MATH not in names


# --- bad input --------------------------------------------------------------------------------------------
def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="channels=30 is not divisible by num_heads=4"):
        LocalSelfAttention2d(30, 7, 4)
    with pytest.raises(ValueError, match="kernel_size=4"):
        LocalSelfAttention2d(32, 4, 4)
    with pytest.raises(ValueError, match="channels=30 is not divisible by num_heads=4"):
        NonLocalBlock2d(30, num_heads=4)
    with pytest.raises(ValueError, match="reduction=8"):
        NonLocalBlock2d(36, reduction=8)
    with pytest.raises(ValueError, match="kv_pool"):
        NonLocalBlock2d(32, kv_pool=0)
    with pytest.raises(ValueError, match=r"expects a feature map of shape \(B, 16, H, W\).*\(2, 8, 5, 5\)"):
        LocalSelfAttention2d(16, 3, 2)(torch.randn(2, 8, 5, 5))
    with pytest.raises(ValueError, match="attn_window=4"):
        va.create_model("vit_tiny_patch4_32", depth=1, attn_window=4)


# --- ViT attention window -----------------------------------------------------------------------------------
def test_vit_attn_window_restricts_patch_attention_and_not_the_class_token():
    torch.manual_seed(0)
    m = va.create_model(
        "vit_tiny_patch4_32", img_size=(24, 20), depth=2, embed_dim=32, num_heads=2, attn_window=3
    ).eval()
    x = torch.randn(2, 3, 24, 20)
    with capture_attention(m) as maps:
        m(x)
    w = maps["blocks.1.attn"]  # (B, heads, 1 + 6*5, 1 + 6*5)
    assert w.shape == (2, 2, 31, 31)
    outside = local_window_mask(6, 5, 3)
    assert torch.all(w[:, :, 1:, 1:][:, :, outside] == 0)
    assert torch.all(w[:, :, 1:, 1:][:, :, ~outside] > 0) and torch.all(w[:, :, 1:, 0] > 0)
    assert torch.all(w[:, :, 0] > 0)  # the class token sees everything
    glob = va.create_model("vit_tiny_patch4_32", img_size=(24, 20), depth=2, embed_dim=32, num_heads=2)
    glob.load_state_dict(m.state_dict())  # same weights, global attention: a different function
    assert not torch.allclose(glob.eval()(x), m(x), atol=1e-4)


# --- visualisation ------------------------------------------------------------------------------------------
def test_plot_helper_writes_a_png_for_both_blocks(tmp_path):
    torch.manual_seed(0)
    local, glob = LocalSelfAttention2d(8, 3, 2), NonLocalBlock2d(8, kv_pool=2)
    x = torch.randn(1, 8, 6, 7)
    with capture_attention(torch.nn.ModuleDict({"local": local, "global": glob})) as maps:
        local(x), glob(x)
    maps_local = pixel_attention_maps(maps["local"][0], (6, 7), [(0, 0), (3, 3)], kernel_size=3)
    assert maps_local.shape == (2, 2, 6, 7) and maps_local[1, :, 5, 6].abs().sum() == 0
    torch.testing.assert_close(maps_local.sum((-1, -2)), torch.ones(2, 2))
    image = torch.rand(3, 12, 14)
    p1 = plot_pixel_attention(
        maps["local"], (6, 7), [(0, 0), (3, 3)], tmp_path / "local.png", image=image, kernel_size=3, heads="all"
    )
    p2 = plot_pixel_attention(maps["global"], (6, 7), [(5, 6)], tmp_path / "global.png")  # 3x4 pooled key grid inferred
    for p in (p1, p2):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- models -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,kwargs,size",
    [
        ("sasa_resnet26", dict(channels=(16, 16, 16, 16), num_heads=4), 64),
        ("sasa_resnet50", dict(channels=(8, 8, 8, 8), layers=(1, 1, 1, 1), num_heads=2), 64),
        ("sasa_resnet26_cifar", dict(channels=(8, 16, 16, 16), layers=(1, 1, 1, 1), num_heads=2), 32),
        ("nonlocal_resnet18_cifar", dict(channels=(8, 16, 16, 16), layers=(1, 1, 1, 1)), 32),
    ],
)
def test_registered_pixel_models_train_with_the_classification_task(name, kwargs, size, tmp_path):
    """A one-batch fit (train + validation step) through Lightning, then capture on the trained model."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    task = ClassificationTask(name, model_args=kwargs, num_classes=10, warmup_epochs=0)
    data = DataLoader(TensorDataset(torch.randn(4, 3, size, size), torch.randint(0, 10, (4,))), batch_size=4)
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(task, train_dataloaders=data, val_dataloaders=data)
    assert trainer.global_step == 1 and torch.isfinite(trainer.callback_metrics["train/loss"])
    attn = [n for n, m in task.model.named_modules() if isinstance(m, (LocalSelfAttention2d, NonLocalBlock2d))]
    x = torch.randn(2, 3, size, size)
    with torch.no_grad(), capture_attention(task.model.eval()) as maps:
        logits = task.model(x)
    assert logits.shape == (2, 10) and attn and set(maps) == set(attn)


def test_sasa_models_have_the_papers_size_and_no_3x3_convs_outside_the_stem():
    with torch.device("meta"):
        m26, m50 = va.create_model("sasa_resnet26"), va.create_model("sasa_resnet50")
    # Ramachandran et al. 2019, Table 1: 10.3M and 18.0M parameters.
    assert round(sum(p.numel() for p in m26.parameters()) / 1e6, 1) == 10.3
    assert round(sum(p.numel() for p in m50.parameters()) / 1e6, 1) == 18.0
    convs = [n for n, m in m50.named_modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)]
    assert convs == ["conv1"]
    assert len([m for m in m50.modules() if isinstance(m, LocalSelfAttention2d)]) == 16


def test_nonlocal_resnet_is_resnet18_cifar_plus_identity_blocks():
    torch.manual_seed(0)
    cnn = va.create_model("resnet18_cifar", channels=(8, 16, 16, 16)).eval()
    nl = va.create_model("nonlocal_resnet18_cifar", channels=(8, 16, 16, 16)).eval()
    missing, unexpected = nl.load_state_dict(cnn.state_dict(), strict=False)
    assert not unexpected and missing and all(".attn." in k for k in missing)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(nl(x), cnn(x))
    with pytest.raises(ValueError, match="nonlocal_resnet18_cifar expects 3 input channels"):
        nl(torch.randn(1, 1, 32, 32))


# LocalSelfAttention2d pinned where the brute-force comparison does not reach: a 1x1 window, initial values,
# argument checks and the printed summary.
@pytest.mark.parametrize("size,block", [((5, 7), 4), ((3, 3), 2)])
def test_a_1x1_window_returns_each_pixel_s_own_value_with_finite_gradients(size, block):
    """k = 1: every pixel's softmax runs over itself alone, padded blocks or not."""
    torch.manual_seed(0)
    m = LocalSelfAttention2d(8, kernel_size=1, num_heads=2, block_size=block)
    x = torch.randn(2, 8, *size, requires_grad=True)
    out = m(x)
    torch.testing.assert_close(out, m.qkv(x).chunk(3, dim=1)[2], rtol=1e-5, atol=1e-6)
    out.square().sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(m.qkv.weight.grad).all()


def test_initialisation():
    torch.manual_seed(0)
    C, heads, k = 256, 2, 7
    m = LocalSelfAttention2d(C, kernel_size=k, num_heads=heads)
    head_dim = C // heads
    # qkv: Kaiming normal, fan_out = 3C (a 1x1 convolution), ReLU gain; no bias (SASA)
    assert float(m.qkv.weight.detach().std()) == pytest.approx(math.sqrt(2 / (3 * C)), rel=0.05)
    assert m.qkv.bias is None
    # relative embeddings: std head_dim ** -0.5, so q . r has unit variance for unit-variance queries
    for rel, width in ((m.rel_pos_h, head_dim // 2), (m.rel_pos_w, head_dim - head_dim // 2)):
        assert rel.shape == (heads, k, width)
        assert float(rel.detach().std()) == pytest.approx(head_dim**-0.5, rel=0.1)
    with_bias = LocalSelfAttention2d(16, kernel_size=3, num_heads=2, qkv_bias=True)
    assert with_bias.qkv.bias.shape == (48,) and torch.all(with_bias.qkv.bias == 0)


def test_two_channels_per_head_is_enough_and_one_is_not():
    m = LocalSelfAttention2d(4, kernel_size=3, num_heads=2)
    assert m(torch.randn(1, 4, 5, 5)).shape == (1, 4, 5, 5)
    with pytest.raises(ValueError, match=r"channels // num_heads = 2//2 = 1; need >= 2 channels per head"):
        LocalSelfAttention2d(2, kernel_size=3, num_heads=2)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"stride": 0}, "stride must be a positive int; got stride=0"),
        ({"stride": 1.5}, "got stride=1.5"),
        ({"block_size": 0}, "block_size must be a positive int; got block_size=0"),
        ({"block_size": 2.0}, "got block_size=2.0"),
        ({"kernel_size": 0}, "kernel_size must be a positive odd int"),
        ({"kernel_size": 3.0}, "got kernel_size=3.0"),
        ({"num_heads": 0}, "num_heads must be >= 1; got num_heads=0"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    args = {"channels": 8, "kernel_size": 3, "num_heads": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        LocalSelfAttention2d(**args)


def test_summary_names_every_setting():
    m = LocalSelfAttention2d(8, kernel_size=5, num_heads=2, stride=2, block_size=4)
    assert (
        repr(m).splitlines()[1].strip()
        == "channels=8, kernel_size=5, num_heads=2, stride=2, block_size=4, backend='auto'"
    )
    assert m(torch.randn(1, 8, 7, 6)).shape == (1, 8, 4, 3)  # ceil(7/2) x ceil(6/2)


def test_any_block_size_from_one_gives_the_same_result():
    torch.manual_seed(0)
    x = torch.randn(1, 8, 5, 6)
    ref = LocalSelfAttention2d(8, kernel_size=3, num_heads=2, block_size=8)
    for block in (1, 2, 5):
        m = LocalSelfAttention2d(8, kernel_size=3, num_heads=2, block_size=block)
        m.load_state_dict(ref.state_dict())
        torch.testing.assert_close(m(x), ref(x), rtol=1e-5, atol=1e-6)


# NonLocalBlock2d pinned to the SAGAN equations written out (Zhang et al. 2019, eq. 1-3, with BigGAN's value
# width C/2 and optional 2x2 max-pooled keys/values) and to its parameter count.
def sagan_reference(m: NonLocalBlock2d, x: torch.Tensor, scale=None):
    """f = W_f x (queries), g = W_g x (keys), h = W_h x (values), per head:
    beta_{j,i} = softmax_i(scale * f(x_j) . g(x_i)), o_j = W_v sum_i beta_{j,i} h(x_i), y = x + gamma * o.
    ``scale`` None = (query channels per head) ** -0.5; SAGAN's own code uses 1."""
    B, C, H, W = x.shape
    nh = m.num_heads

    def conv(weight, t):
        return torch.einsum("oc,bchw->bohw", weight[:, :, 0, 0], t)

    def heads(t):  # (B, c, h, w) -> (B, nh, h*w, c / nh)
        return t.reshape(B, nh, t.shape[1] // nh, -1).transpose(-1, -2)

    pool = (lambda t: F.max_pool2d(t, m.kv_pool, m.kv_pool, ceil_mode=True)) if m.kv_pool > 1 else (lambda t: t)
    f = heads(conv(m.query.weight, x))
    g = heads(pool(conv(m.key.weight, x)))
    h = heads(pool(conv(m.value.weight, x)))
    s = f.shape[-1] ** -0.5 if scale is None else scale
    beta = torch.softmax(s * f @ g.transpose(-1, -2), dim=-1)  # (B, nh, HW, Nk): each query's weights over keys
    o = (beta @ h).transpose(-1, -2).reshape(B, -1, H, W)
    return x + m.gamma * conv(m.out_proj.weight, o), beta


def _block(seed=0, **kwargs):
    torch.manual_seed(seed)
    m = NonLocalBlock2d(**kwargs).double()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
        m.gamma.fill_(0.7)
    return m


@pytest.mark.parametrize(
    "heads,kv_pool,value_channels,size",
    [
        (1, 1, None, (6, 5)),
        (2, 1, None, (4, 7)),
        (1, 2, None, (7, 9)),
        (2, 2, 8, (6, 8)),
        (4, 1, 12, (3, 3)),
    ],
)
def test_nonlocal_block_equals_the_sagan_equations(heads, kv_pool, value_channels, size):
    m = _block(channels=32, num_heads=heads, reduction=4, kv_pool=kv_pool, value_channels=value_channels)
    x = torch.randn(2, 32, *size, dtype=torch.float64)
    with capture_attention(m) as maps:
        out = m(x)
    ref, beta = sagan_reference(m, x)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(maps["self"], beta, rtol=1e-5, atol=1e-6)  # weights computed in float32
    assert not torch.allclose(out, x)


@pytest.mark.parametrize("scale", [1.0, 0.05])
def test_a_custom_scale_is_the_score_scale(scale):
    """SAGAN's code: softmax(f^T g) without 1/sqrt(d)."""
    m = _block(channels=16, reduction=2)
    m.scale = scale  # the block reads its scale at forward time
    x = torch.randn(1, 16, 5, 6, dtype=torch.float64)
    with capture_attention(m) as maps:
        out = m(x)
    ref, beta = sagan_reference(m, x, scale=scale)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(maps["self"], beta, rtol=1e-5, atol=1e-6)
    default_ref, _ = sagan_reference(m, x)
    assert not torch.allclose(out, default_ref)
    assert NonLocalBlock2d(16, scale=scale).scale == scale and NonLocalBlock2d(16).scale is None


def test_parameter_count_widths_and_no_biases():
    C = 64
    m = NonLocalBlock2d(C)
    # f, g: C -> C/8; h: C -> C/2 (BigGAN); W_v: C/2 -> C; gamma: one scalar. No biases anywhere.
    assert sum(p.numel() for p in m.parameters()) == 2 * C * (C // 8) + 2 * C * (C // 2) + 1 == 5121
    assert m.query.weight.shape == m.key.weight.shape == (C // 8, C, 1, 1)
    assert m.value.weight.shape == (C // 2, C, 1, 1) and m.out_proj.weight.shape == (C, C // 2, 1, 1)
    assert all(conv.bias is None for conv in (m.query, m.key, m.value, m.out_proj))
    assert m.gamma.shape == () and float(m.gamma.detach()) == 0.0
    m = NonLocalBlock2d(C, num_heads=2, reduction=4, value_channels=24)
    assert sum(p.numel() for p in m.parameters()) == 2 * C * 16 + 2 * C * 24 + 1
    assert NonLocalBlock2d(2, reduction=1).value.out_channels == 1  # C // 2, at least 1
    assert repr(m).splitlines()[1].strip() == "channels=64, num_heads=2, kv_pool=1"


def test_identity_at_init_for_any_input():
    m = NonLocalBlock2d(16, num_heads=2, kv_pool=2)
    x = torch.randn(2, 16, 7, 5)
    assert torch.equal(m(x), x)


def test_pooling_keeps_odd_edges_and_reduces_the_keys():
    m = _block(channels=16, reduction=2, kv_pool=2)
    x = torch.randn(1, 16, 5, 7, dtype=torch.float64)
    with capture_attention(m) as maps:
        m(x)
    assert maps["self"].shape == (1, 1, 35, 3 * 4)  # ceil(5/2) x ceil(7/2) pooled keys
    m3 = _block(channels=16, reduction=2, kv_pool=3)
    with capture_attention(m3) as maps:
        out = m3(x)
    assert maps["self"].shape == (1, 1, 35, 2 * 3)
    torch.testing.assert_close(out, sagan_reference(m3, x)[0], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"channels": 32, "num_heads": 0}, "num_heads must be >= 1; got num_heads=0"),
        ({"channels": 32, "num_heads": 8}, r"channels // reduction = 32//8=4 is not divisible by num_heads=8"),
        ({"channels": 32, "reduction": 0}, "channels=32 is not divisible by reduction=0"),
        ({"channels": 32, "reduction": 5}, "channels=32 is not divisible by reduction=5"),
        ({"channels": 32, "num_heads": 2, "value_channels": 7}, "value_channels=7 is not divisible by num_heads=2"),
        ({"channels": 32, "kv_pool": 2.0}, r"kv_pool must be a positive int .*got 2.0"),
        ({"channels": 32, "kv_pool": -1}, "got -1"),
    ],
)
def test_nonlocal_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NonLocalBlock2d(**kwargs)


def test_bad_input_is_named():
    m = NonLocalBlock2d(16)
    for x, found in (
        (torch.randn(2, 8, 4, 4), r"\(2, 8, 4, 4\)"),
        (torch.randn(16, 4, 4), r"\(16, 4, 4\)"),
        ([1, 2], "list"),
    ):
        with pytest.raises(
            ValueError, match=r"NonLocalBlock2d expects a feature map of shape \(B, 16, H, W\).*" + found
        ):
            m(x)
