"""The LightningCLI behind every tool (``train``, ``eval``, ``visualize``, ``sample``, ``demo``) and ``load_task``."""
from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple

import pytorch_lightning as pl
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

__all__ = ["VisionAttnCLI", "load_task"]


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


def load_task(config: str, ckpt: Optional[str] = None, overrides: Sequence[str] = ()
              ) -> Tuple[pl.LightningModule, pl.LightningDataModule, pl.Trainer]:
    """Build the task, datamodule and trainer of ``config`` (no logger), with ``ckpt`` loaded into the task's model.

    ``ckpt``: our Lightning ``.ckpt`` (its EMA weights when present), a state dict, or foreign weights the model's
    ``create_model`` takes (path or URL); ``None`` keeps the config's initial weights. ``overrides`` are CLI flags.
    """
    if not os.path.isfile(os.path.expanduser(config)):
        raise FileNotFoundError(f"config {config} does not exist")
    cli = VisionAttnCLI(args=["--config", os.path.expanduser(config), "--trainer.logger", "false", *overrides], run=False)
    if ckpt is not None:
        cli.model.load_weights(os.path.expanduser(ckpt) if "://" not in str(ckpt) else ckpt)
    return cli.model, cli.datamodule, cli.trainer
