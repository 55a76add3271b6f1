"""``python -m vision_attn.run.bench ...`` = ``python tools/benchmark.py ...`` (the gpu-suite runs its parts so)."""

from .cli import main

if __name__ == "__main__":
    main()
