"""The LightningCLI behind every tool (``train``, ``eval``, ``visualize``, ``sample``, ``demo``) and ``load_task``."""
from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple

import pytorch_lightning as pl
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

__all__ = ["VisionAttnCLI", "NumClassesMismatchError", "load_task"]


class NumClassesMismatchError(ValueError):
    """An explicit ``model.init_args.num_classes`` disagrees with the datamodule's."""


class VisionAttnCLI(LightningCLI):
    """LightningCLI over any task in ``vision_attn.tasks`` and any datamodule in ``vision_attn.data``.

    - ``model.init_args.num_classes`` is filled from the datamodule's ``num_classes``; one set explicitly (flag or
      config) that disagrees with the data's is an error naming both (it used to be replaced silently).
    - Unless ``--trainer.logger`` is given, a run logs CSV and TensorBoard into
      ``<default_root_dir>/version_N/`` and checkpoints (``best.ckpt``, ``last.ckpt``) go to its ``checkpoints/``.
    """

    def __init__(self, args: Optional[List[str]] = None, run: bool = True, **kwargs) -> None:
        self._exit_on_config_error = run  # the command line gets one error line; Python callers the exception
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
        parser.link_arguments("data", "model.init_args.num_classes", compute_fn=self._data_num_classes, apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        # the link replaces the value at instantiation: remember what the user set, to check it against the data
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        self._explicit_num_classes = cfg.get("model.init_args.num_classes")

    def _data_num_classes(self, datamodule) -> int:
        n = datamodule.num_classes
        explicit = getattr(self, "_explicit_num_classes", None)
        if explicit is not None and int(explicit) != int(n):
            raise NumClassesMismatchError(
                f"--model.init_args.num_classes {explicit} disagrees with {type(datamodule).__name__}'s num_classes {n}; "
                "drop it (it is filled from the data) or use data with that many classes"
            )
        return n

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as e:  # jsonargparse wraps a link's error (with the datamodule's multi-line repr)
            if not isinstance(e.__cause__, NumClassesMismatchError):
                raise
            if self._exit_on_config_error:
                raise SystemExit(f"error: {e.__cause__}") from None
            raise e.__cause__ from None

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
