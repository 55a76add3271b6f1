"""A convolution is a self-attention layer (Cordonnier et al. 2020): attention_from_conv / convert_convs_to_attention."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vision_attn as va
from vision_attn.attention import capture_attention
from vision_attn.layers import ConvAttention2d, attention_from_conv, convert_convs_to_attention


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize(
    "c_in,c_out,k,bias,size",
    [
        (3, 5, 3, True, (7, 9)),
        (6, 4, 3, False, (5, 11)),
        (4, 4, 1, True, (6, 6)),
        (2, 7, 5, True, (9, 7)),
        (5, 3, 5, False, (8, 5)),
    ],
)
def test_attention_from_conv_equals_the_convolution(c_in, c_out, k, bias, size):
    torch.manual_seed(0)
    conv = nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=bias)
    if bias:
        nn.init.normal_(conv.bias)  # a bias that matters
    x = torch.randn(2, c_in, *size)
    attn = attention_from_conv(conv)
    assert isinstance(attn, ConvAttention2d) and attn.num_heads == k * k
    with torch.no_grad():
        assert _rel(attn(x), conv(x)) <= 1e-5


def test_attention_rows_are_one_hot_on_each_heads_offset():
    torch.manual_seed(0)
    H, W, k = 5, 6, 3
    attn = attention_from_conv(nn.Conv2d(3, 4, k, padding=1))
    with capture_attention(attn) as maps, torch.no_grad():
        attn(torch.randn(2, 3, H, W))
    w = maps["self"]
    wp = W + 2
    assert w.shape == (2, k * k, H * W, (H + 2) * wp)
    # each row: weight 1 on the padded-map pixel p + Delta_h, 0 elsewhere (to float precision)
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    for h, (dy, dx) in enumerate((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)):
        target = ((ys + 1 + dy) * wp + (xs + 1 + dx)).reshape(-1)
        expected = F.one_hot(target, (H + 2) * wp).float().expand_as(w[:, h])
        assert torch.allclose(w[:, h], expected, atol=1e-7, rtol=0)


def test_parameters_are_trainable_and_a_head_can_look_beyond_its_window():
    torch.manual_seed(0)
    attn = attention_from_conv(nn.Conv2d(3, 4, 3, padding=1))
    attn(torch.randn(2, 3, 6, 7)).square().sum().backward()
    for name, p in attn.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name  # the position scores included
    with torch.no_grad():
        attn.offsets[0] = torch.tensor([0.0, 3.0])  # head 0 now looks 3 pixels right: outside the 3x3 window
    with capture_attention(attn) as maps, torch.no_grad():
        attn(torch.randn(1, 3, 6, 7))
    query = 2 * 7 + 1  # pixel (2, 1); padded (3, 2)
    assert int(maps["self"][0, 0, query].argmax()) == 3 * 9 + 5  # padded (3, 5) = image (2, 4)


@pytest.mark.parametrize(
    "conv,setting",
    [
        (nn.Conv2d(3, 4, 3, stride=2, padding=1), "stride"),
        (nn.Conv2d(4, 4, 3, padding=1, groups=2), "groups"),
        (nn.Conv2d(3, 4, 3, padding=2, dilation=2), "dilation"),
        (nn.Conv2d(3, 4, 2, padding=1), "kernel_size"),
        (nn.Conv2d(3, 4, (3, 5), padding=(1, 2)), "kernel_size"),
        (nn.Conv2d(3, 4, 3, padding=0), "padding"),
        (nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), "padding_mode"),
    ],
)
def test_unsupported_convs_are_rejected_with_the_setting_named(conv, setting):
    with pytest.raises(ValueError, match=rf"^attention_from_conv: layer9\.conv .*{setting}=") as err:
        attention_from_conv(conv, name="layer9.conv")
    assert "\n" not in str(err.value)


def test_convert_keeps_unsupported_convs_and_works_on_a_copy():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1),
        nn.Conv2d(8, 6, 5, padding=2),
        nn.Conv2d(6, 4, 1),
    ).eval()
    x = torch.randn(2, 3, 9, 8)
    converted = convert_convs_to_attention(model)
    assert [type(m).__name__ for m in converted] == ["ConvAttention2d", "ReLU", "Conv2d", "Conv2d", "Conv2d"]
    assert all(type(m) is not ConvAttention2d for m in model)  # the original is untouched
    assert converted.conv_attention_report["0"] == "converted"
    assert "stride" in converted.conv_attention_report["2"] and "kernel_size" in converted.conv_attention_report["3"]
    every_odd = convert_convs_to_attention(model, kernel_sizes=None)
    assert [type(m).__name__ for m in every_odd][2:] == ["Conv2d", "ConvAttention2d", "ConvAttention2d"]
    with torch.no_grad():
        want = model(x)
        assert _rel(converted(x), want) <= 1e-5 and _rel(every_odd(x), want) <= 1e-5
    same = convert_convs_to_attention(model, inplace=True)
    assert same is model and isinstance(model[0], ConvAttention2d)


def test_a_trained_resnet_keeps_its_test_accuracy_after_conversion():
    from vision_attn.data.synthetic import render_shapes

    torch.manual_seed(0)
    images, labels = render_shapes(1024 + 128, 32, seed=3)
    # 16 px (2x2 mean) keeps training and the O((HW)^2) attention quick on a CPU
    x = F.avg_pool2d(torch.from_numpy(images).float().div(127.5).sub(1), 2)
    y = torch.from_numpy(labels)
    model = va.create_model("resnet10_narrow_cifar", num_classes=10)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(40):
        i = torch.randint(0, 1024, (32,))
        loss = F.cross_entropy(model(x[i]), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    converted = convert_convs_to_attention(model)
    n_attn = sum(isinstance(m, ConvAttention2d) for m in converted.modules())
    assert n_attn == 6  # the stem and every stride-1 3x3 conv; strided and 1x1 convs stay convs
    with torch.no_grad():
        cnn, attn = model(x[1024:]), converted(x[1024:])
    acc = (cnn.argmax(1) == y[1024:]).float().mean()
    assert acc > 0.2  # trained: well above the 10% of chance
    assert torch.equal(attn.argmax(1), cnn.argmax(1))
    assert (attn.argmax(1) == y[1024:]).float().mean() == acc
    assert _rel(attn, cnn) <= 1e-5


def test_figure_shows_each_head_on_its_offset(tmp_path):
    from vision_attn.run.viz.conv_attention import conv_attention_maps, plot_conv_attention

    torch.manual_seed(0)
    layer = attention_from_conv(nn.Conv2d(3, 2, 3, padding=1))
    maps = conv_attention_maps(layer, torch.randn(1, 3, 6, 5), query=(0, 4))
    assert maps.shape == (9, 8, 7)
    peaks = [divmod(int(m.argmax()), 7) for m in maps]
    assert peaks == [(1 + dy, 5 + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]  # padded grid: query at (1, 5)
    path = plot_conv_attention(tmp_path / "conv.png", image=torch.rand(3, 6, 5), query=(0, 4))
    assert path.stat().st_size > 1000
