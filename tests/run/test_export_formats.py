"""Export: torch.export programs (.pt2) and ONNX (dynamo exporter) give eager's outputs, at other batch sizes too;
DETR's padded batch keeps its padding mask."""

import pytest
import torch
from families import SMALL_RESNET, awake, detr, padded_batch

import vision_attn as va
from vision_attn.run.export import export_onnx, export_program, flat_outputs, load_program, run_onnx

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

CLASSIFIERS = {  # registered names at export-test size: the same architecture code, fewer blocks / pixels
    "vit_small_patch16_224": (dict(img_size=64, depth=2), 64),
    "sasa_resnet26_cifar": (dict(kernel_size=5, num_heads=4, **SMALL_RESNET), 32),
    "nonlocal_resnet18_cifar": (dict(num_heads=2, **SMALL_RESNET), 32),
}


def _rel(got, want) -> float:
    got = torch.as_tensor(got)
    return float((got.double() - want.double()).norm() / want.double().norm().clamp_min(1e-12))


def _check(model, program_path, onnx_path, batches):
    """The saved program and the ONNX file (onnxruntime) against eager, on every batch of ``batches``."""
    program = load_program(program_path).module()
    with torch.no_grad():
        _compare(model, program, onnx_path, batches)


def _compare(model, program, onnx_path, batches):
    for args in batches:
        want = flat_outputs(model(*args))
        got_program = flat_outputs(program(*args))
        got_onnx = run_onnx(onnx_path, *args)
        assert len(got_program) == len(got_onnx) == len(want)
        for p, o, w in zip(got_program, got_onnx, want):
            assert p.shape == w.shape and _rel(p, w) <= 1e-5
            assert o.shape == tuple(w.shape) and _rel(o, w) <= 1e-4


@pytest.mark.parametrize("name", list(CLASSIFIERS))
def test_classifier_exports_with_a_dynamic_batch(name, tmp_path):
    kwargs, size = CLASSIFIERS[name]
    torch.manual_seed(0)
    model = awake(va.create_model(name, num_classes=5, **kwargs)).eval()
    x = torch.randn(2, 3, size, size)
    program = export_program(model, x, tmp_path / "model.pt2")
    export_onnx(program, x, tmp_path / "model.onnx")
    _check(model, tmp_path / "model.pt2", tmp_path / "model.onnx", [(x,), (torch.randn(3, 3, size, size),), (x[:1],)])


def test_detr_exports_a_padded_batch_with_its_mask(tmp_path):
    torch.manual_seed(0)
    model = detr().eval()
    images, mask = padded_batch(((64, 64), (40, 52)))
    program = export_program(model, (images, mask), tmp_path / "detr.pt2")
    export_onnx(program, (images, mask), tmp_path / "detr.onnx", input_names=["images", "mask"])
    other = padded_batch(((48, 64), (64, 30), (56, 56)), seed=1)  # three images, other paddings, same batch size
    _check(model, tmp_path / "detr.pt2", tmp_path / "detr.onnx", [(images, mask), other, (images[1:], mask[1:])])
    # the mask is an input that counts: the padded image's boxes differ when its padding is not masked
    boxes = torch.as_tensor(run_onnx(tmp_path / "detr.onnx", images, torch.zeros_like(mask))[1])
    assert _rel(boxes[1], model(images, mask)["pred_boxes"][1]) > 1e-3


def test_conditional_sagan_generator_exports_with_labels(tmp_path):
    torch.manual_seed(0)
    gen = awake(va.create_model("sagan_32", num_classes=10, ch=8).generator).eval()
    z, labels = torch.randn(2, 128), torch.tensor([3, 7])
    program = export_program(gen, (z, labels), tmp_path / "g.pt2")
    export_onnx(program, (z, labels), tmp_path / "g.onnx", input_names=["z", "labels"])
    _check(gen, tmp_path / "g.pt2", tmp_path / "g.onnx", [(z, labels), (torch.randn(3, 128), torch.tensor([0, 9, 3]))])


def test_export_refuses_a_model_in_training_mode_and_mismatched_batches(tmp_path):
    model = va.create_model("vit_nano_patch4_32", depth=1)
    with pytest.raises(ValueError, match="VisionTransformer is in training mode; call model.eval"):
        export_program(model, torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="every input shares the batch axis 0; got batch sizes \\[2, 3\\]"):
        export_program(model.eval(), (torch.randn(2, 3, 32, 32), torch.randn(3, 5)))


@pytest.mark.parametrize("fmt", ["onnx", "exported_program"])
def test_tools_export_formats_write_a_file_that_gives_the_models_outputs(fmt, tmp_path):
    """``tools/export.py --format onnx|exported_program`` (its FORMATS): the model's own example inputs, dynamic batch."""
    from vision_attn.run.export import FORMATS, example_inputs

    torch.manual_seed(0)
    model = va.create_model("vit_nano_patch4_32", num_classes=3).eval()
    out = FORMATS[fmt](model, tmp_path / "m")
    _, (images,) = example_inputs(model)
    assert images.shape[1:] == (3, 32, 32)
    x = torch.randn(3, 3, 32, 32)  # another batch size than the traced one
    with torch.no_grad():
        want = model(x)
    if fmt == "onnx":
        (got,) = run_onnx(out / "model.onnx", x)
    else:
        got = load_program(out / "model.pt2").module()(x)
    assert _rel(got, want) <= 1e-4
