"""The LightningCLI behind ``tools/train.py``, ``tools/eval.py`` and ``make demo``."""
from __future__ import annotations

import os
from typing import List, Optional

import pytorch_lightning as pl
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

__all__ = ["VisionAttnCLI"]


class VisionAttnCLI(LightningCLI):
    """LightningCLI over any task in ``vision_attn.tasks`` and any datamodule in ``vision_attn.data``.

    - ``model.init_args.num_classes`` is filled from the datamodule's ``num_classes`` unless set.
    - Unless ``--trainer.logger`` is given, a run logs CSV and TensorBoard into
      ``<default_root_dir>/version_N/`` and checkpoints (``best.ckpt``, ``last.ckpt``) go to its ``checkpoints/``.
    """

    def __init__(self, args: Optional[List[str]] = None, run: bool = True, **kwargs) -> None:
        super().__init__(
            pl.LightningModule,
            pl.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            args=args,
            run=run,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments(
            "data", "model.init_args.num_classes", compute_fn=lambda dm: dm.num_classes, apply_on="instantiate"
        )

    def instantiate_trainer(self, **kwargs):
        cfg = self._get(self.config_init, "trainer", default={})
        if cfg.get("logger") in (None, True):
            root = cfg.get("default_root_dir") or os.getcwd()
            csv = CSVLogger(root, name="")
            cfg["logger"] = [csv, TensorBoardLogger(root, name="", version=csv.version, default_hp_metric=False)]
        return super().instantiate_trainer(**kwargs)
