"""SA-GAN as the paper: the registered models' attention is SAGAN's non_local.py, G's class embedding is plain, and
the conditional generator traces whole (torch.compile fullgraph, torch.export)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

import vision_attn as va
from vision_attn.layers.pixel_attention import NonLocalBlock2d
from vision_attn.models.sagan import Generator

TINY = dict(ch=16, g_mults=(1, 1, 1, 1), d_mults=(1, 1, 1, 1), z_dim=16, embed_dim=8)


def tiny(num_classes=4, **kw):
    torch.manual_seed(0)
    return va.create_model("sagan_32", num_classes=num_classes, **{**TINY, **kw})


def paper_attention(x, w_theta, w_phi, w_g, w_o, gamma, scale=1.0):
    """SAGAN (Zhang et al. 2019; brain-research non_local.py), written out: theta, phi, g and o are 1x1 convs,
    phi and g are 2x2 max-pooled, beta = softmax(theta^T phi) over the pooled keys, out = x + gamma * o(g beta^T)."""
    B, C, H, W = x.shape
    theta = F.conv2d(x, w_theta).flatten(2)  # (B, C/8, N)
    phi = F.max_pool2d(F.conv2d(x, w_phi), 2).flatten(2)  # (B, C/8, N/4)
    g = F.max_pool2d(F.conv2d(x, w_g), 2).flatten(2)  # (B, C/2, N/4)
    beta = torch.softmax(scale * theta.transpose(1, 2) @ phi, dim=-1)  # (B, N, N/4)
    o = F.conv2d((g @ beta.transpose(1, 2)).view(B, -1, H, W), w_o)
    return x + gamma * o


@pytest.mark.parametrize("net", ["generator", "discriminator"])
def test_registered_attention_is_the_papers(net):
    block = getattr(tiny(), net).attention.eval()  # eval: spectral norm uses its stored vectors, no power step
    C = block.channels
    convs = [block.query, block.key, block.value, block.out_proj]
    assert isinstance(block, NonLocalBlock2d) and float(block.gamma.detach()) == 0.0
    assert [tuple(c.weight.shape[:2]) for c in convs] == [(C // 8, C), (C // 8, C), (C // 2, C), (C, C // 2)]
    assert all(parametrize.is_parametrized(c, "weight") and c.bias is None for c in convs)
    with torch.no_grad():
        block.gamma.fill_(0.7)
        torch.manual_seed(1)
        x = 3 * torch.randn(2, C, 8, 8)  # large enough inputs for a peaked softmax
        weights = [c.weight for c in convs]
        out = block(x)
        want = paper_attention(x, *weights, block.gamma)
        assert float((out - want).norm() / want.norm()) <= 1e-5
        # the check can tell: the 1/sqrt(d)-scaled attention of NonLocalBlock2d's default is another function
        scaled = paper_attention(x, *weights, block.gamma, scale=(C // 8) ** -0.5)
        assert float((scaled - want).norm() / want.norm()) > 1e-3


def test_generator_class_embedding_is_plain_and_discriminator_keeps_spectral_norm():
    m = tiny()
    for g in (m.generator, m.generator_ema):
        assert type(g.embed) is nn.Embedding and not parametrize.is_parametrized(g.embed)
        assert "embed.weight" in g.state_dict()
    assert parametrize.is_parametrized(m.discriminator.embed, "weight")  # D's projection embedding: SN (BigGAN)


def test_a_generator_saved_with_a_spectral_normalised_embedding_loads_with_the_same_output():
    torch.manual_seed(0)
    old = Generator(32, 8, (1, 1, 1, 1), 16, num_classes=4, embed_dim=8)
    old.embed = spectral_norm(nn.Embedding(4, 8))  # the layout before the BigGAN fix
    z, y = torch.randn(4, 16), torch.arange(4)
    old(z, y)  # one train-mode forward: the power iteration moves u and v away from their start
    old.eval()
    new = Generator(32, 8, (1, 1, 1, 1), 16, num_classes=4, embed_dim=8).eval()
    new.load_state_dict(old.state_dict())  # strict
    with torch.no_grad():
        assert torch.allclose(new.embed.weight, old.embed.weight, atol=1e-6)
        assert torch.allclose(new(z, y), old(z, y), atol=1e-6)


def test_conditional_generator_traces_whole_and_still_refuses_bad_labels():
    g = tiny(ema=False).generator.eval()
    z, y = torch.randn(2, 16), torch.tensor([0, 3])
    with torch.no_grad():
        want = g(z, y)
        # fullgraph: no graph break (reading labels.min() on the host broke it 3 times). aot_eager traces what
        # inductor traces without its C++ codegen (46 s for this tiny G on a busy 2-core CPU).
        compiled = torch.compile(g, fullgraph=True, backend="aot_eager")
        assert torch.allclose(compiled(z, y), want, atol=1e-6)
        with pytest.raises(RuntimeError, match=r"labels must be in \[0, 3\]"):
            compiled(z, torch.tensor([0, 4]))
        exported = torch.export.export(g, (z, y)).module()
        assert torch.allclose(exported(z, y), want, atol=1e-6)
        with pytest.raises(RuntimeError, match=r"labels must be in \[0, 3\]"):
            exported(z, torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\].*got values in \[0, 4\]"):
        g(z, torch.tensor([0, 4]))  # eager: the clear error, with the values found
