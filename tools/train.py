#!/usr/bin/env python
"""Train, validate or test with a config: ``python tools/train.py fit --config configs/quickstart.yaml``.

LightningCLI: every constructor argument is a flag (``--trainer.devices 2 --trainer.strategy ddp``,
``--model.init_args.lr 3e-4``, ``--data.init_args.train_fraction 0.1``); ``--print_config`` shows the
resolved config. Runs log to ``<trainer.default_root_dir>/version_N/`` (CSV, TensorBoard, checkpoints);
``fit --ckpt_path last`` continues the newest of them where it stopped.
"""

from vision_attn.run.cli import VisionAttnCLI, main  # noqa: F401  (VisionAttnCLI: for callers that build it)

if __name__ == "__main__":
    main()
