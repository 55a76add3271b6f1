"""Benchmarks of vision_attn against its peers, measured in one process (``tools/benchmark.py``).

Usage::

    python tools/benchmark.py speed                                   # CPU, float32: a few minutes on 2 cores
    python tools/benchmark.py speed --device cuda --dtype bfloat16 --json speed_h100.json
    python tools/benchmark.py speed --only attention --repeats 50
    python tools/benchmark.py speed --only detr --threads 1          # DETR-R50 vs transformers' at 320x427 on CPU
    python tools/benchmark.py speed --only detr --device cuda --dtype bfloat16   # at 800x1066
    python tools/benchmark.py speed --only models --models 'vit_*' resnet50 --device cuda --dtype bfloat16 --compile
    python tools/benchmark.py speed --only gan                        # SA-GAN quickstart step: NCHW vs channels-last
    python tools/benchmark.py pixel                                   # CPU, float32: ~10 min on 2 cores
    python tools/benchmark.py limit --threads 1 --results results   # fraction of the matmul peak per family (CSV)
    python tools/benchmark.py gpu-suite --json gpu.json               # every GPU figure in one call (<= 9 min)
    python tools/benchmark.py pixel --device cuda --dtype bfloat16 --json pixel_h100.json
    python tools/benchmark.py data-size --config configs/benchmark/data_size_quick.yaml --output-dir runs/data_size_quick
    python tools/benchmark.py data-size --config configs/benchmark/data_size_cifar10.yaml --output-dir runs/ds_c10 \\
        --parallel-cells 8                                            # one cell per GPU

One module per suite, over one harness:

- ``harness``: ``Implementation`` (one contender), machine description, seeding, autocast, interleaved timing
  (``measure``), ``summarize`` (median, IQR, peer median / our median: > 1 means ours is faster, peak CUDA
  memory of the step), the markdown table and the JSON file;
- ``attention``: attention forward + backward at ViT-S/16 shapes (B=32, N=197, D=384, H=6):
  ``vision_attn.MultiHeadAttention`` vs ``torch.nn.MultiheadAttention`` vs timm's ``Attention``;
- ``vit``: one ViT-S/16 training step at 224 px, ours vs ``timm.create_model`` of the same name;
- ``detr`` (``speed --only detr``): DETR-R50 inference and one training step against ``transformers``'
  ``DetrForObjectDetection`` with the same weights, at 800x1066 on CUDA (320x427 on CPU), images/s;
- ``models`` (``speed --only models [--models 'vit_*' resnet50] [--compile] [--channels-last]``): a training step
  and inference of every registered classifier against timm's model of the same name where timm has one,
  images/s, peak CUDA memory, and the MFU of our training step against ``--peak-tflops``;
- ``gan`` (``speed --only gan [--gan-config configs/sagan_shapes.yaml]``): ``GenerationTask.gan_step`` of the
  config's task, default layout vs channels-last;
- ``pixel`` (the ``pixel`` subcommand): global and local pixel attention, time and peak memory against the naive
  peers (on CPU each peak measured alone in a fresh process);
- ``compiled`` (``speed --compile`` or ``--only compiled``): each family's training step, eager vs ``torch.compile``;
- ``limit`` (the ``limit`` subcommand): every family's training step and inference, ours and the peers': FLOPs
  (torch's counter plus the CPU fused attention it misses), time, FLOP/s and the fraction of the matmul peak of the
  same dtype timed interleaved (MFU on a GPU, the datasheet figure beside it); ``--results DIR`` appends a CSV;
- ``gpu_suite`` (the ``gpu-suite`` subcommand): the GPU figures as one budgeted call, a process per part;
- ``results`` (the ``results`` subcommand): the offline suites at CPU sizes into ``results/<benchmark>-<machine>.csv``
  (``write_results``, the one writer every benchmark calls; the docs' tables are rendered from these files);
- ``app`` (the ``app`` subcommand): the attention explorer's click -> map per tab, against a fresh forward;
- ``speed`` and ``cli``: the subcommands and the parser (``data-size`` runs :func:`vision_attn.run.data_size.run_sweep`).

Every suite prints the machine and a markdown table; ``--json PATH`` writes the same data.
"""

from .cli import build_parser, main

__all__ = ["build_parser", "main"]
