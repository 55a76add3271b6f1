"""The README's "Using it" section runs as written, offline.

Every ```python block of the section (from "## Using it" to the next "## " heading, subsections included) runs, in
order, in one namespace, as do its `python tools/predict.py ...`, `python tools/train.py predict ...` and `python tools/export.py ...` command lines
(other command lines, e.g. training, are not run here). They run in a fresh Python process whose working directory
is a temporary folder holding:

- ``configs/`` (the repository's) and ``photos/`` (three tiny images: RGB JPEG, grayscale PNG, RGBA PNG);
- a Hugging Face cache (``HF_HOME``, with ``HF_HUB_OFFLINE=1``) holding, for every timm weight the section names
  (``timm/<arch>.<tag>``, ``hf-hub:timm/...``, ``create_model("<arch>[.<tag>]", pretrained=True)``, ``--model
  <arch>[.<tag>]``), a randomly initialised model in timm's Hub layout (``model.safetensors`` + ``config.json``);
- for a command's ``--config C --ckpt P`` (or ``--ckpt_path P``) with no file at P: an untrained checkpoint of C's
  task, standing in for the run the README assumes.

The code's namespace starts with ``images``: a random ``(2, 3, 224, 224)`` batch, and ``img1``, ``img2``: random
``(3, H, W)`` images of two sizes. Names in :data:`SUBSTITUTES` are replaced before running (the README may show a
large model; the test runs the same code on a small one of the same family).
"""
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
SECTION = "## Using it"
# weights too large to fabricate for a test -> a small model of the same family running the same code
SUBSTITUTES = {"vit_base_patch16_224.augreg2_in21k_ft_in1k": "vit_tiny_patch16_224.augreg_in21k_ft_in1k"}
MAX_FAKE_PARAMS = 30_000_000  # larger timm weights must go through SUBSTITUTES
RUNNABLE = (re.compile(r"^python tools/predict\.py\b"), re.compile(r"^python tools/train\.py predict\b"),
            re.compile(r"^python tools/export\.py\b"))

RUNNER = r'''
import json, os, runpy, shlex, sys
import torch

blocks = json.load(open(sys.argv[1]))
g = torch.Generator().manual_seed(0)
ns = {"__name__": "__readme__", "images": torch.randn(2, 3, 224, 224, generator=g),
      "img1": torch.randn(3, 200, 240, generator=g), "img2": torch.randn(3, 180, 260, generator=g)}


def fake_checkpoint(argv):
    opts = dict(zip(argv, argv[1:]))
    config, ckpt = opts.get("--config"), opts.get("--ckpt") or opts.get("--ckpt_path")
    if config and ckpt and not os.path.exists(ckpt):
        from vision_attn.run.cli import load_task
        task, _, trainer = load_task(config)
        trainer.strategy.connect(task)
        trainer.save_checkpoint(ckpt, weights_only=True)


for i, (kind, text) in enumerate(blocks):
    if kind == "python":
        exec(compile(text, f"README.md '## Using it' python block {i}", "exec"), ns)
        continue
    argv = shlex.split(text, comments=True)[1:]
    fake_checkpoint(argv)
    sys.argv = [os.path.join(os.environ["VISION_ATTN_REPO"], argv[0]), *argv[1:]]
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as e:
        if e.code not in (0, None):
            raise SystemExit(f"README command exited with {e.code}: {text}")
print("README OK:", len(blocks), "blocks")
'''


def section_text(readme: str) -> str:
    start = readme.index(SECTION + "\n")
    nxt = re.search(r"^## ", readme[start + len(SECTION):], re.MULTILINE)
    text = readme[start: start + len(SECTION) + nxt.start()] if nxt else readme[start:]
    for big, small in SUBSTITUTES.items():
        text = re.sub(re.escape(big) + r"(?![\w.])", small, text)
    return text


def runnable_blocks(text: str) -> list:
    """``[("python", code) | ("command", line)]`` in README order."""
    out = []
    for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        if lang == "python":
            out.append(("python", body))
        elif lang in ("bash", "sh", "shell", ""):
            for line in body.replace("\\\n", " ").splitlines():
                if any(p.match(line.strip()) for p in RUNNABLE):
                    out.append(("command", line.strip()))
    return out


def timm_weights_named(blocks: list) -> set:
    """timm ``<arch>.<tag>`` names (bare ``<arch>``: timm's default tag) whose Hub weights the runnable blocks load."""
    import timm
    import timm.models

    text = "\n".join(code for _, code in blocks)
    names = set(re.findall(r"(?<!huggingface\.co/)(?:hf-hub:)?\btimm/([\w.\-]+)", text))  # a URL is no Hub id
    names |= set(re.findall(r"create_model\(\s*[\"']([\w.\-]+)[\"'][^)]*pretrained\s*=\s*True", text))
    names |= set(re.findall(r"--model\s+([\w.\-]+)", text))
    found = set()
    for name in names:
        if not timm.is_model(name.split(".")[0]):
            continue  # ours only (their weights are not timm's), or not a model name
        cfg = timm.models.get_pretrained_cfg(name, allow_unregistered=True)
        if cfg is not None and cfg.hf_hub_id:
            found.add(cfg.hf_hub_id.split("/", 1)[1])
    return found


def put_in_hub_cache(hf_home: Path, name: str) -> None:
    """A random timm ``name`` (= ``<arch>.<tag>``) as Hub repo ``timm/<name>`` in the ``hf_home`` cache."""
    import timm
    from timm.models._hub import save_for_hf

    model = timm.create_model(name, pretrained=False)
    n = sum(p.numel() for p in model.parameters())
    assert n <= MAX_FAKE_PARAMS, (f"README names {name} ({n / 1e6:.0f}M params): too large to fake here; use a "
                                  "vit_tiny/vit_small name in 'Using it' or map it in tests/docs/test_readme.py SUBSTITUTES")
    repo = hf_home / "hub" / f"models--timm--{name}"
    commit = hashlib.sha1(name.encode()).hexdigest()
    save_for_hf(model, str(repo / "snapshots" / commit), safe_serialization=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)


def test_using_it_section_runs_as_written_offline(tmp_path):
    text = section_text((REPO / "README.md").read_text())
    blocks = runnable_blocks(text)
    assert any(k == "python" for k, _ in blocks) and any(k == "command" for k, _ in blocks), blocks
    hf_home = tmp_path / "hf"
    for name in sorted(timm_weights_named(blocks)):
        put_in_hub_cache(hf_home, name)
    work = tmp_path / "work"
    (work / "photos").mkdir(parents=True)
    os.symlink(REPO / "configs", work / "configs")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(work / "photos" / "street.jpg")
    Image.fromarray(rng.integers(0, 255, (40, 30), dtype=np.uint8)).save(work / "photos" / "gray.png")
    Image.fromarray(rng.integers(0, 255, (32, 32, 4), dtype=np.uint8)).save(work / "photos" / "logo.png")
    (tmp_path / "blocks.json").write_text(json.dumps(blocks))
    (tmp_path / "runner.py").write_text(RUNNER)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))}
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", TORCH_HOME=str(tmp_path / "torch"), OMP_NUM_THREADS="2",
               VISION_ATTN_REPO=str(REPO), MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, str(tmp_path / "runner.py"), str(tmp_path / "blocks.json")], cwd=work, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "README OK" in proc.stdout
    outputs = [m for _, line in blocks for m in re.findall(r"--output-dir\s+(\S+)", line)]
    for out in outputs:  # each predict command wrote a prediction for every photo
        predictions = json.loads((work / out / "predictions.json").read_text())
        assert {Path(r["file"]).name for r in predictions} >= {"gray.png", "logo.png", "street.jpg"}
