"""Benchmarks of vision_attn against its peers, measured in one process.

Usage::

    python tools/benchmark.py speed                                   # attention fwd+bwd and a ViT-S/16 step vs torch, timm
    python tools/benchmark.py speed --device cuda --dtype bfloat16 --json speed_h100.json
    python tools/benchmark.py speed --only detr|models|gan            # opt-in suites (see --help)
    python tools/benchmark.py pixel                                   # pixel attention: time and peak memory vs naive peers
    python tools/benchmark.py limit --threads 1 --json limit.json     # each family's fraction of the matmul peak
    python tools/benchmark.py gpu-suite --json gpu.json               # every GPU figure, one call, <= 9 min on an H100/H200
    python tools/benchmark.py app --results results                 # the attention explorer: a click -> its map, per tab
    python tools/benchmark.py data-size --config configs/benchmark/data_size_quick.yaml --output-dir runs/data_size_quick
    python tools/benchmark.py results --only speed vit                # re-measure at CPU sizes: results/<benchmark>-<machine>.csv

The suites, the harness and what each measures: ``vision_attn/run/bench/``.
"""

from vision_attn.run.bench import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    main()
