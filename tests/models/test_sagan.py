"""SA-GAN: the model, its losses, the FID/IS/KID metrics, the Lightning task and the sampling / evaluation tools."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import vision_attn as va
from vision_attn.attention import capture_attention
from vision_attn.layers.pixel_attention import NonLocalBlock2d
from vision_attn.losses.gan import DiffAugment, d_hinge_loss, d_nonsaturating_loss, g_hinge_loss, g_nonsaturating_loss
from vision_attn.metrics.generation import (
    InceptionFeatures,
    InceptionWeightsMissingError,
    generation_metrics_from_features,
    real_features,
)
from vision_attn.models.sagan import truncated_normal
from vision_attn.run.evaluate.generation import evaluate_generation
from vision_attn.tasks.generation import GanCriterionConfig, GanOptimConfig, GenerationEvalConfig, GenerationTask

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))

import sample as sample_tool  # noqa: E402

TINY = dict(ch=8, g_mults=(1, 1, 1, 1), d_mults=(1, 1, 1, 1), z_dim=16, embed_dim=8)
TINY_JSON = json.dumps({"ch": 8, "g_mults": [1, 1, 1, 1], "d_mults": [1, 1, 1, 1], "z_dim": 16, "embed_dim": 8})


def tiny(num_classes=10, **kw):
    torch.manual_seed(0)
    return va.create_model("sagan_32", num_classes=num_classes, **{**TINY, **kw})


def shapes_args(tmp_path, batch=16):
    return [
        "--data.init_args.root",
        str(tmp_path / "data"),
        "--data.init_args.num_train",
        "160",
        "--data.init_args.num_test",
        "60",
        "--data.init_args.val_split",
        "20",
        "--data.init_args.batch_size",
        str(batch),
        "--data.init_args.num_workers",
        "0",
    ]


class SmallFeatures(nn.Module):
    """A fixed random conv net: images in [-1, 1] -> (features (B, 16), logits (B, 5)); counts its calls."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, 16, 4, stride=4)
        self.head = nn.Linear(16, 5)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        f = torch.relu(self.conv(x)).mean((2, 3))
        return f, self.head(f)


# ---- model ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("num_classes", [0, 10])
def test_samples_shape_range_and_discriminator_logits(num_classes):
    m = tiny(num_classes)
    x = m.sample(6)
    assert x.shape == (6, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    labels = torch.arange(6) if num_classes else None
    assert m.discriminator(x, labels).shape == (6,)
    assert (m.make_labels(6) is None) == (num_classes == 0)


def test_registered_sizes_and_paper_widths(monkeypatch):
    # the paper's ImageNet model is large: skip its orthogonal init (a QR per weight, most of a minute on 2 cores)
    monkeypatch.setattr(nn.init, "orthogonal_", lambda tensor, *a, **k: tensor)
    assert {"sagan_32", "sagan_64", "sagan_128"} <= set(va.list_models("sagan_*"))
    m = va.create_model("sagan_64", num_classes=3, ch=8)
    assert m.sample(2).shape == (2, 3, 64, 64)
    big = va.create_model("sagan_128", ema=False)  # the paper's ImageNet model: ch=64, 1000 classes, 4x4x1024 seed
    assert big.num_classes == 1000 and big.generator.linear.weight.shape == (16 * 1024, 128)
    assert big.generator.attention.channels == 256 and big.generator.attn_res == 32


def test_spectral_norm_on_every_weight_including_attention_and_gamma_starts_at_zero():
    m = tiny()
    for net in (m.generator, m.discriminator):
        # but G's class embedding (BigGAN): tests/models/test_sagan_attention.py
        layers = [
            mod
            for mod in net.modules()
            if isinstance(mod, (nn.Conv2d, nn.Linear, nn.Embedding)) and mod is not m.generator.embed
        ]
        assert layers and all(torch.nn.utils.parametrize.is_parametrized(mod, "weight") for mod in layers)
        attn = [mod for mod in net.modules() if isinstance(mod, NonLocalBlock2d)]
        assert len(attn) == 1 and float(attn[0].gamma) == 0.0
    # spectral norm holds: the largest singular value of a wrapped weight is ~1 after a few power iterations
    conv = m.discriminator.blocks[1].conv1
    for _ in range(20):
        conv(torch.randn(1, conv.in_channels, 8, 8))
    sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
    assert sigma == pytest.approx(1.0, abs=0.05)


def test_sample_uses_the_ema_generator_and_is_deterministic_with_a_generator():
    m = tiny()
    with torch.no_grad():
        for p in m.generator_ema.parameters():
            p.add_(0.5 * torch.randn_like(p))
    a = m.sample(4, generator=torch.Generator().manual_seed(3))
    b = m.sample(4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    z = truncated_normal((4, m.z_dim), generator=torch.Generator().manual_seed(3))
    m.eval()
    assert torch.allclose(a, m.generator_ema(z, torch.arange(4)), atol=1e-6)
    assert not torch.allclose(a, m.generator(z, torch.arange(4)), atol=1e-3)
    m.update_ema(0.0)  # decay 0: the EMA copies G's weights (its BN statistics are its own; here both untouched)
    assert torch.allclose(
        m.sample(4, generator=torch.Generator().manual_seed(3)), m.generator(z, torch.arange(4)), atol=1e-6
    )


def test_ema_keeps_its_own_batchnorm_statistics():
    m = tiny()
    bn_g, bn_ema = m.generator.out_bn, m.generator_ema.out_bn
    m.generator(torch.randn(8, 16), torch.arange(8))  # moves G's running statistics only
    m.update_ema(0.9, torch.randn(8, 16), torch.arange(8))
    assert not torch.equal(bn_ema.running_mean, bn_g.running_mean) and bn_ema.num_batches_tracked == 1
    m.recompute_ema_statistics(n_batches=3, batch_size=4, generator=torch.Generator().manual_seed(0))
    first = bn_ema.running_var.clone()
    m.recompute_ema_statistics(n_batches=3, batch_size=4, generator=torch.Generator().manual_seed(0))
    # same noise, same statistics (up to the spectral-norm vectors, which power-iterate in train mode)
    assert (
        torch.allclose(first, bn_ema.running_var, rtol=1e-3)
        and bn_ema.num_batches_tracked == 3
        and bn_ema.momentum == 0.1
    )


def test_truncation_bounds_the_noise():
    z = truncated_normal((2000, 16), truncation=0.5, generator=torch.Generator().manual_seed(0))
    assert z.abs().max() <= 0.5 and z.abs().mean() > 0.2
    with pytest.raises(ValueError, match="truncation"):
        truncated_normal((2, 2), truncation=0.0)
    assert tiny().sample(3, truncation=0.3).shape == (3, 3, 32, 32)


def test_hierarchical_z_changes_every_block():
    m = tiny(hierarchical_z=True).eval()
    g = m.generator
    assert g.z_first + 3 * g.z_chunk == 16
    z = torch.randn(2, 16)
    z2 = z.clone()
    z2[:, -g.z_chunk :] += 1.0  # only the last block's chunk
    y = torch.tensor([1, 2])
    assert not torch.allclose(g(z, y), g(z2, y))


def test_bad_inputs_are_refused_with_clear_errors():
    m = tiny()
    with pytest.raises(ValueError, match=r"labels must be in \[0, 9\]"):
        m.sample(2, labels=[3, 10])
    with pytest.raises(ValueError, match=r"expects images of shape \(B, 3, 32, 32\)"):
        m.discriminator(torch.zeros(2, 3, 64, 64), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="class-conditional"):
        m.discriminator(torch.zeros(2, 3, 32, 32))
    with pytest.raises(ValueError, match="unconditional"):
        tiny(0).sample(2, labels=[0, 1])
    with pytest.raises(ValueError, match="attn_res"):
        va.create_model("sagan_32", g_attn_res=12, **TINY)


def test_attention_capture_of_the_generator():
    m = tiny()
    with capture_attention(m.generator_ema) as maps:
        x = m.sample(2)
    w = maps["attention"]  # attention at 16 x 16, keys 2x2 max-pooled (SAGAN)
    assert x.shape[0] == 2 and w.shape == (2, 1, 256, 64)
    assert torch.allclose(w.sum(-1), torch.ones(2, 1, 256), atol=1e-4)


# ---- losses --------------------------------------------------------------------------------------------------------
def test_gan_losses_on_known_logits():
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-2.0, 0.0, 1.0])
    # hinge: mean(relu(1 - real)) = (0 + 0.5 + 2) / 3; mean(relu(1 + fake)) = (0 + 1 + 2) / 3
    assert float(d_hinge_loss(real, fake)) == pytest.approx(2.5 / 3 + 3 / 3)
    assert float(g_hinge_loss(fake)) == pytest.approx(1 / 3)
    sp = torch.nn.functional.softplus
    assert float(d_nonsaturating_loss(real, fake)) == pytest.approx(float(sp(-real).mean() + sp(fake).mean()))
    assert float(g_nonsaturating_loss(torch.zeros(4))) == pytest.approx(float(torch.log(torch.tensor(2.0))))


def test_diffaugment_is_differentiable_and_policy_checked():
    x = torch.rand(4, 3, 16, 16, requires_grad=True)
    y = DiffAugment("color,translation,cutout")(x, generator=torch.Generator().manual_seed(0))
    y.sum().backward()
    assert y.shape == x.shape and x.grad is not None and x.grad.abs().sum() > 0
    ones = torch.ones(8, 1, 16, 16)
    cut = DiffAugment("cutout")(ones)
    assert ((cut == 0).float().flatten(1).sum(1) <= 64).all() and (cut == 0).any()  # at most an 8x8 square
    assert torch.equal(DiffAugment(None)(ones), ones)
    with pytest.raises(ValueError, match="unknown op"):
        DiffAugment("color,rotate")


# ---- metrics -------------------------------------------------------------------------------------------------------
def test_fid_and_kid_are_zero_for_the_same_distribution_and_rise_with_noise():
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(8, 8, generator=g) / 3
    real = torch.randn(400, 8, generator=g) @ mix
    other = torch.randn(400, 8, generator=g) @ mix  # same distribution, other samples
    same = generation_metrics_from_features(real, real, kid_subsets=10, kid_subset_size=100)
    assert same["fid"] == pytest.approx(0.0, abs=1e-6)
    results = [
        generation_metrics_from_features(
            real, other + s * torch.randn(400, 8, generator=g), kid_subsets=10, kid_subset_size=100
        )
        for s in (0.0, 0.5, 2.0)
    ]
    fids, kids = [r["fid"] for r in results], [r["kid_mean"] for r in results]
    assert fids[0] < 0.2 and fids == sorted(fids) and fids[2] > 10 * fids[0]
    assert abs(kids[0]) < 0.05 and kids == sorted(kids) and kids[2] > 0.5


def test_inception_score_from_logits():
    confident_diverse = torch.nn.functional.one_hot(torch.arange(100) % 10, 10).double() * 30
    uniform = torch.zeros(100, 10, dtype=torch.double)
    f = torch.randn(100, 4, dtype=torch.double)
    hi = generation_metrics_from_features(f, f, confident_diverse, kid_subsets=2, kid_subset_size=50, is_splits=1)
    lo = generation_metrics_from_features(f, f, uniform, kid_subsets=2, kid_subset_size=50, is_splits=1)
    assert hi["is_mean"] == pytest.approx(10.0, rel=1e-3) and lo["is_mean"] == pytest.approx(1.0, rel=1e-6)


def test_real_features_are_cached_per_dataset_extractor_and_n(tmp_path):
    ext = SmallFeatures()
    images = torch.rand(40, 3, 16, 16) * 2 - 1
    batches = lambda: images.split(10)  # noqa: E731
    a = real_features(ext, batches, "shapes:test", 40, cache_dir=tmp_path)
    calls = ext.calls
    assert calls == 4
    b = real_features(ext, batches, "shapes:test", 40, cache_dir=tmp_path)
    assert ext.calls == calls and torch.equal(a, b)  # second call: read from disk, nothing recomputed
    real_features(ext, batches, "shapes:test", 20, cache_dir=tmp_path)  # another N: recomputed
    real_features(ext, batches, "other:test", 40, cache_dir=tmp_path)  # another dataset: recomputed
    assert ext.calls == calls + 2 + 4


def test_missing_inception_weights_say_what_is_missing_without_downloading(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(
        InceptionWeightsMissingError, match=r"weights-inception-2015-12-05-6726825d\.pth.*--inception-weights"
    ):
        InceptionFeatures()
    with pytest.raises(InceptionWeightsMissingError, match="no such file"):
        InceptionFeatures(weights=str(tmp_path / "nope.pth"))


# ---- task and tools ------------------------------------------------------------------------------------------------
def _cli(tmp_path, *extra, steps=4):
    from vision_attn.run.cli import VisionAttnCLI

    return VisionAttnCLI(
        args=[
            "--config",
            str(REPO / "configs/sagan_shapes.yaml"),
            "--trainer.max_steps",
            str(steps),
            "--trainer.default_root_dir",
            str(tmp_path / "run"),
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.accelerator",
            "cpu",
            "--model.init_args.model_args",
            TINY_JSON,
            "--model.init_args.sample_every_n_steps",
            "1",
            "--model.init_args.n_samples",
            "10",
            "--model.init_args.optim.ema_start",
            "0",
            "--model.init_args.optim.ema_decay",
            "0.5",
            *shapes_args(tmp_path),
            *extra,
        ],
        run=False,
    )


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_training_steps_change_g_and_d_and_write_sample_grids(tmp_path, precision):
    cli = _cli(
        tmp_path, "--trainer.precision", precision, "--model.init_args.criterion.diffaug", "color,translation,cutout"
    )
    task = cli.model
    assert task.num_classes == 10
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    cli.trainer.fit(task, datamodule=cli.datamodule)
    after = task.model.state_dict()

    def changed(prefix):
        return any(not torch.equal(before[k], after[k]) for k in after if k.startswith(prefix) and "original" in k)  # noqa: E731

    assert changed("generator.") and changed("discriminator.") and changed("generator_ema.")
    assert task.g_steps == 2  # Lightning counts D and G steps: max_steps 4 = 2 batches
    samples = sorted((tmp_path / "run" / "version_0" / "samples").glob("*.png"))
    assert [p.name for p in samples] == ["step_000001.png", "step_000002.png"]
    assert list((tmp_path / "run" / "version_0").glob("events.out.tfevents*"))  # TensorBoard got the images


def test_channels_last_training_keeps_the_format_and_gives_the_default_layouts_result(tmp_path):
    """channels_last=True is a speed option only: it trains as the default layout does."""
    results, initial = {}, {}
    for flag in ("false", "true"):
        cli = _cli(
            tmp_path / flag,
            "--model.init_args.channels_last",
            flag,
            "--model.init_args.sample_every_n_steps",
            "0",
            steps=2,
        )
        initial[flag] = {k: v.clone() for k, v in cli.model.model.state_dict().items()}
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        results[flag] = cli.model.model
    conv = results["true"].generator.blocks[0].conv1.parametrizations.weight.original
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    base, fast = results["false"].state_dict(), results["true"].state_dict()
    params = [k for k in base if "original" in k and not k.startswith("generator_ema")]
    assert all(torch.equal(initial["false"][k], initial["true"][k]) for k in params)
    # Adam's first update is ~lr * sign(grad) per element, so compare the updates' directions, not their sizes
    d_base = torch.cat([(base[k] - initial["false"][k]).flatten() for k in params])
    d_fast = torch.cat([(fast[k] - initial["true"][k]).flatten() for k in params])
    assert d_base.abs().max() > 1e-4  # G and D did move
    assert torch.nn.functional.cosine_similarity(d_base, d_fast, dim=0) > 0.98


def test_gan_step_without_a_trainer_trains_as_training_step_under_a_trainer(tmp_path):
    """The benchmark times gan_step alone: it must be the Trainer's step (toggling, DiffAugment, d_steps, EMA)."""
    import pytorch_lightning as pl

    g = torch.Generator().manual_seed(0)
    data = [(torch.rand(4, 3, 32, 32, generator=g) * 2 - 1, torch.randint(0, 10, (4,), generator=g)) for _ in range(4)]

    def make():
        torch.manual_seed(0)
        return GenerationTask(
            model="sagan_32",
            model_args=TINY,
            num_classes=10,
            optim=GanOptimConfig(d_steps=2, ema_start=0, ema_decay=0.5),
            criterion=GanCriterionConfig(diffaug="color,translation,cutout"),
            sample_every_n_steps=0,
        )

    class Reseed(pl.Callback):  # both paths start their first step from the same global RNG state
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 0:
                torch.manual_seed(1)

    initial = make().model.state_dict()
    trained = make()
    pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Reseed()],
        default_root_dir=tmp_path,
    ).fit(trained, torch.utils.data.DataLoader(data, batch_size=None))
    alone = make()
    opt_g, opt_d = alone.configure_optimizers()
    torch.manual_seed(1)
    for i, (real, labels) in enumerate(data):
        losses = alone.gan_step(real, labels, opt_g, opt_d, generator_step=(i + 1) % 2 == 0)
        assert set(losses) == ({"d_loss", "d_real", "d_fake", "g_loss"} if i % 2 else {"d_loss", "d_real", "d_fake"})
        assert not any(v.requires_grad for v in losses.values())
    assert alone.g_steps == trained.g_steps == 2
    a, b = trained.model.state_dict(), alone.model.state_dict()
    for net in ("generator.", "discriminator.", "generator_ema."):
        assert any(not torch.equal(initial[k], b[k]) for k in b if k.startswith(net))  # every network moved
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    # the freezing during each step is undone: both networks train again afterwards
    assert all(p.requires_grad for p in alone.model.generator.parameters())
    assert all(p.requires_grad for p in alone.model.discriminator.parameters())


def test_sample_tool_and_evaluation_with_a_small_extractor(tmp_path):
    cli = _cli(tmp_path)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    ckpt = tmp_path / "run" / "version_0" / "checkpoints" / "last.ckpt"
    overrides = ["--model.init_args.model_args", TINY_JSON, *shapes_args(tmp_path)]
    res = sample_tool.main(
        [
            "--config",
            str(REPO / "configs/sagan_shapes.yaml"),
            "--ckpt",
            str(ckpt),
            "--n",
            "10",
            "--truncation",
            "1.0",
            "--standing-stats",
            "2",
            "--out",
            str(tmp_path / "grid.png"),
            "--attention-out",
            str(tmp_path / "attn.png"),
            "--query-pixels",
            "4,4",
            "20,28",
            *overrides,
        ]
    )
    for key in ("grid", "attention"):
        assert Path(res[key]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert res["labels"] == list(range(10))

    # evaluation: load the checkpoint into a fresh task with an injected extractor; metrics.json via the same path as eval.py
    import eval as eval_tool

    evaluation = GenerationEvalConfig(
        feature_extractor=SmallFeatures(),
        eval_n_samples=40,
        eval_batch_size=20,
        stats_cache_dir=str(tmp_path / "stats"),
    )
    task = GenerationTask(model="sagan_32", model_args=TINY, num_classes=10, evaluation=evaluation)
    task.load_weights(str(ckpt))
    assert torch.equal(task.model.generator_ema.out_bn.running_mean, cli.model.model.generator_ema.out_bn.running_mean)
    metrics = evaluate_generation(task, cli.datamodule, None, split="test", output_dir=tmp_path / "eval")
    assert {"fid", "kid_mean", "kid_std", "is_mean", "is_std"} <= set(metrics) and metrics["fid"] > 0
    assert metrics["n_generated"] == 40 and metrics["n_real"] == 40
    assert (tmp_path / "eval" / "samples.png").is_file() and list((tmp_path / "stats").glob("real-features-*.pt"))
    assert metrics["generator"] == "ema"
    # eval_generator="generator" evaluates the trained weights (not the EMA's) and leaves the model as it was
    ema = task.model.generator_ema
    task.evaluation = dataclasses.replace(task.evaluation, eval_generator="generator")
    trained_g = evaluate_generation(task, cli.datamodule, None, split="test", output_dir=tmp_path / "eval_g")
    assert trained_g["generator"] == "generator" and trained_g["fid"] != metrics["fid"]
    assert task.model.generator_ema is ema and task.model.sampler is ema
    assert callable(eval_tool.evaluate)


def test_eval_tool_writes_metrics_json_with_classifier_features_and_accuracy(tmp_path):
    cli = _cli(tmp_path)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    ckpt = tmp_path / "run" / "version_0" / "checkpoints" / "last.ckpt"
    clf = va.create_model("resnet10_narrow_cifar", num_classes=10, channels=(8, 8, 8, 8))
    torch.save(clf.state_dict(), tmp_path / "clf.pth")
    import eval as eval_tool

    report = eval_tool.main(
        [
            "--config",
            str(REPO / "configs/sagan_shapes.yaml"),
            "--ckpt",
            str(ckpt),
            "--output-dir",
            str(tmp_path / "out"),
            "--model.init_args.model_args",
            TINY_JSON,
            *shapes_args(tmp_path),
            "--model.init_args.evaluation.classifier",
            str(tmp_path / "clf.pth"),
            "--model.init_args.evaluation.classifier_args",
            '{"channels": [8, 8, 8, 8]}',
            "--model.init_args.evaluation.eval_n_samples",
            "30",
            "--model.init_args.evaluation.classifier_n_per_class",
            "2",
            "--model.init_args.evaluation.stats_cache_dir",
            str(tmp_path / "stats"),
        ]
    )
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["feature_extractor"] == "classifier" and saved["feature_dim"] == 8
    for key in ("fid", "kid_mean", "is_mean", "classifier_accuracy", "classifier_acc/circle"):
        assert key in saved and saved[key] == pytest.approx(report[key])
    assert 0.0 <= saved["classifier_accuracy"] <= 1.0


@pytest.mark.slow
def test_ddp_training_with_two_cpu_processes(tmp_path):
    """Two gloo processes train the GAN together (Lightning DDP, manual optimisation, find_unused_parameters)."""
    cmd = [
        sys.executable,
        str(REPO / "tools/train.py"),
        "fit",
        "--config",
        str(REPO / "configs/sagan_shapes.yaml"),
        "--trainer.max_steps",
        "4",
        "--trainer.default_root_dir",
        str(tmp_path / "run"),
        "--trainer.accelerator",
        "cpu",
        "--trainer.enable_progress_bar",
        "false",
        "--model.init_args.model_args",
        TINY_JSON,
        "--model.init_args.sample_every_n_steps",
        "1",
        "--model.init_args.n_samples",
        "10",
        *shapes_args(tmp_path),
        "--trainer.devices",
        "2",
        "--trainer.strategy",
        "ddp_find_unused_parameters_true",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ckpt = torch.load(
        tmp_path / "run" / "version_0" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
    )
    assert ckpt["generator_steps"] == 2 and ckpt["global_step"] == 4
    assert sorted(p.name for p in (tmp_path / "run" / "version_0" / "samples").glob("*.png")) == [
        "step_000001.png",
        "step_000002.png",
    ]
