"""Inference speed for users, in ONE process: the model step ``tools/predict.py`` runs (``ClassificationTask
.predict_step`` under ``no_grad``, as ``vision_attn.run.predict``) against timm's model of the same architecture
holding the same weights (``to_timm``) and against onnxruntime on the ONNX export (``export_onnx``); images/s,
interleaved repeats, outputs checked to agree to 1e-4.

    PYTHONPATH=$PWD python dev/predict_speed.py --threads 1 --batch 8
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="vit_small_patch16_224")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import onnxruntime as ort
    import timm

    import vision_attn
    from vision_attn.models.weights.timm_vit import to_timm
    from vision_attn.run.export import export_onnx
    from vision_attn.tasks import ClassificationTask

    torch.manual_seed(0)
    ours = vision_attn.create_model(args.model).eval()
    task = ClassificationTask(ours).eval()
    peer = timm.create_model(args.model, pretrained=False).eval()
    peer.load_state_dict(to_timm(ours))
    images = torch.randn(args.batch, 3, 224, 224)
    onnx_path = Path(tempfile.mkdtemp()) / "model.onnx"
    export_onnx(ours, (images,), str(onnx_path))
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def ours_step():
        with torch.no_grad():
            return task.predict_step((images, torch.zeros(args.batch, dtype=torch.long)), 0)

    def timm_step():
        with torch.no_grad():
            return peer(images)

    def onnx_step():
        return torch.from_numpy(session.run(None, {name: images.numpy()})[0])

    steps = {"vision_attn predict_step": ours_step, "timm (same weights)": timm_step, "onnxruntime (export)": onnx_step}
    with torch.no_grad():
        ref = ours(images)
    for label, step in list(steps.items())[1:]:
        print(f"{label}: max |logit difference| vs ours {float((step() - ref).abs().max()):.2e}")
    print(f"predict_step = softmax of ours: {torch.allclose(ours_step(), ref.softmax(-1))}")
    times = {k: [] for k in steps}
    for r in range(args.repeats + 1):
        order = list(steps)[r % 3 :] + list(steps)[: r % 3]
        for k in order:
            t0 = time.perf_counter()
            steps[k]()
            if r:
                times[k].append(time.perf_counter() - t0)
    base = times["vision_attn predict_step"]
    for k, t in times.items():
        ratio = statistics.median(a / b for a, b in zip(base, t))
        print(f"{k}: {args.batch / statistics.median(t):.2f} images/s; ours time / its time (paired) {ratio:.2f}")


if __name__ == "__main__":
    main()
