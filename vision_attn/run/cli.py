"""The LightningCLI behind every tool (``train``, ``eval``, ``visualize``, ``sample``, ``demo``) and ``load_task``."""

from __future__ import annotations

import contextlib
import inspect
import os
import re
import shutil
import sys
import traceback
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import pytorch_lightning as pl
import yaml
from jsonargparse import Namespace
from lightning_fabric.plugins import CheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_info

from ..callbacks import (
    AtomicCheckpointIO,
    CheckpointWriteError,
    NonFiniteError,
    RunCheckpoint,
    default_progress_callbacks,
)
from ..callbacks.checkpoint import read_lightning_checkpoint
from ..callbacks.protocols import WrapsModel
from ..data.cifar import CorruptedDatasetError
from ..data.coco import COCOFormatError
from ..data.folder import BadImageError, ImageFolderDataModule
from ..models import validate_model_args
from ..models.checkpoint import CheckpointError
from ..models.data_config import resolve_data_config
from ..models.option_defaults import model_option_defaults
from ..models.protocols import PretrainedConfigured, check_protocol, conforms
from ..models.registry import UnknownModelError, is_model
from ..tasks import DetectionTask, GenerationTask
from ..tasks.protocols import MonitoredTask
from .quiet import quiet_library
from .resume import NothingToResumeError, ResumableCSVLogger, Resume, find_last_checkpoint

__all__ = ["VisionAttnCLI", "NumClassesMismatchError", "load_task", "main", "USER_ERRORS"]


class NumClassesMismatchError(ValueError):
    """An explicit ``model.init_args.num_classes`` disagrees with the datamodule's."""


# Errors whose message says all a user needs: the command line prints them as one line instead of a traceback.
USER_ERRORS = (
    NumClassesMismatchError,
    UnknownModelError,
    NothingToResumeError,
    NonFiniteError,
    CheckpointWriteError,
    CheckpointError,
    BadImageError,
    CorruptedDatasetError,
    COCOFormatError,
)  # CheckpointError covers the Hub's


def _user_error(err: BaseException) -> Optional[BaseException]:
    """The first of ``USER_ERRORS`` in ``err``'s cause chain (jsonargparse wraps what a constructor raised)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, USER_ERRORS):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


_PACKAGE = str(Path(__file__).resolve().parents[1])
_FIT_DATA_ARGS = ("self", "model", "train_dataloaders", "val_dataloaders", "datamodule")


def _our_check(err: BaseException) -> Optional[ValueError]:
    """The first ``ValueError`` in ``err``'s cause chain raised by vision_attn's own code (its innermost frame is
    ours): a check of a setting or of the data, whose message names the thing and what was expected
    (``val_split must be in [0, 320) ...``; jsonargparse prefixes the class and the key). A ``ValueError`` from
    inside torch or another library keeps its traceback."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, ValueError) and err.__traceback__ is not None:
            frames = traceback.extract_tb(err.__traceback__)
            if frames and str(Path(frames[-1].filename).resolve()).startswith(_PACKAGE):
                return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


_SET_BY_TASK = ("num_classes",)  # model options a task passes itself (from its own argument or the data)


def _as_list(value) -> list:
    return [] if value in (None, False) else list(value) if isinstance(value, (list, tuple)) else [value]


_TASKS_WITH_MOVED_OPTIONS = {cls.__name__: cls.MOVED_OPTIONS for cls in (DetectionTask, GenerationTask)}
_REFUSED_OPTION = re.compile(r"class_path '(?:[\w.]*\.)?(\w+)':\s*Option '(\w+)' is not accepted")


def moved_option_message(message: str) -> Optional[str]:
    """One line for jsonargparse's refusal of a task option that moved into a group (``lr_g`` -> ``optim.lr_g``),
    naming where it goes and every option moved with it; None for any other parse error."""
    found = _REFUSED_OPTION.search(message)
    moved = _TASKS_WITH_MOVED_OPTIONS.get(found.group(1), {}) if found else {}
    if found is None or found.group(2) not in moved:
        return None
    task, option, group = found.group(1), found.group(2), moved[found.group(2)]
    together = ", ".join(k for k, g in moved.items() if g == group)
    return (
        f"{task}: option {option} moved into {group}: write model.init_args.{group}.{option}, or in a config nest "
        f"it under {group}: ({group} holds {together})"
    )


class _Parser(LightningArgumentParser):
    """Lightning's parser; a task option that moved into a group is refused in one line naming its new place."""

    def error(self, message: str, ex: Optional[Exception] = None):
        moved = moved_option_message(message)
        if moved is not None:
            raise SystemExit(f"error: {moved}")
        super().error(message, ex)


class VisionAttnCLI(LightningCLI):
    """LightningCLI over any task in ``vision_attn.tasks`` and any datamodule in ``vision_attn.data``.

    - ``model.init_args.num_classes`` is filled from the datamodule's ``num_classes``; one set explicitly (flag or
      config) that disagrees with the data's is an error naming both (it used to be replaced silently).
    - Unless ``--trainer.logger`` is given, a run logs CSV and TensorBoard into ``<default_root_dir>/version_N/``.
    - Unless ``trainer.callbacks`` has a ``ModelCheckpoint``, a :class:`RunCheckpoint` keeps ``best.ckpt`` (by the
      task's ``checkpoint_monitor``) and ``last.ckpt`` in ``version_N/checkpoints/``; every fit leaves both.
    - ``fit --ckpt_path last`` continues the newest run under ``default_root_dir`` in its own ``version_N`` (same
      checkpoints, ``metrics.csv`` and TensorBoard folder); with nothing to resume it stops naming the folder searched.
    - The progress bar counts epochs right under ``max_steps``; when stdout is no terminal a fit also prints one
      line every ``log_every_n_steps`` (:mod:`vision_attn.callbacks.progress`). Library messages a user cannot act
      on are hidden while the CLI runs (:func:`vision_attn.run.quiet.quiet_library`).
    - Checkpoints are written atomically (:class:`AtomicCheckpointIO`) unless a ``CheckpointIO`` plugin is given.
    - Only ``fit`` opens a ``version_N`` (and saves ``config.yaml`` there); a fit that fails before its first step
      removes the folder it opened. ``test``/``validate``/``predict`` log nothing, and with a run's checkpoint
      (``--ckpt_path RUN/checkpoints/best.ckpt``) what they write (``predictions.json``) goes into ``RUN``.
    - An :class:`ImageFolderDataModule` takes the preprocessing the config leaves unset from the model's
      ``pretrained_cfg`` (size, mean/std, interpolation, crop).
    - Without subcommands (``run=False``, :func:`load_task`) a run's saved ``config.yaml`` is accepted as it is
      (its ``ckpt_path`` entry is ignored).
    - An error in ``USER_ERRORS`` or a ``ValueError`` of one of our checks while building (an unknown model name, a
      setting out of range) is one line on the command line
      (``SystemExit("error: ...")``) and the error itself in Python (``run=False``), not jsonargparse's wrapper.

    Args:
        extra_plugins: Trainer plugins added to the configured ones (``run.submit`` passes the cluster environment).
    """

    def __init__(
        self, args: Optional[List[str]] = None, run: bool = True, extra_plugins: Sequence = (), **kwargs
    ) -> None:
        self._exit_on_config_error = run  # the command line gets one error line; Python callers the exception
        self._explicit_num_classes: Optional[int] = None  # set by before_instantiate_classes
        self._fresh_run_dir: Optional[Path] = None
        self._extra_plugins = list(extra_plugins)
        with quiet_library():
            super().__init__(
                pl.LightningModule,
                pl.LightningDataModule,
                subclass_mode_model=True,
                subclass_mode_data=True,
                save_config_kwargs={"overwrite": True},
                parser_class=_Parser,
                args=args,
                run=run,
                **kwargs,
            )

    def parse_arguments(self, parser, args) -> None:
        """Parse, then check ``model_args`` against the model's typed options (one ``ValueError`` line naming the
        model, the option and the expected type). ``--print_config`` prints the config with ``model_args`` filled
        with the chosen model's defaults (its options, each at the value it would be built with)."""
        argv = None if isinstance(args, (dict, Namespace)) else list(sys.argv[1:] if args is None else args)
        printing = argv is not None and any(a == "--print_config" or a.startswith("--print_config=") for a in argv)
        if printing:  # parsed without it, printed below (filled); not through super(), which warns on sys.argv
            self.config = parser.parse_args(
                [a for a in argv if not (a == "--print_config" or a.startswith("--print_config="))]
            )
        else:
            super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        cfg = self.config[subcommand] if subcommand else self.config
        init = cfg.get("model.init_args") if isinstance(cfg.get("model"), Namespace) else None
        arch = init.get("model") if init is not None else None
        if not isinstance(arch, str) or not is_model(arch):
            arch = None  # a model instance, a Hub repo or a path: nothing to check here
        if arch is not None:
            validate_model_args(arch, dict(init.get("model_args") or {}))
        if printing:
            if arch is not None and "model_args" in init:
                defaults = {k: v for k, v in model_option_defaults(arch).items() if k not in _SET_BY_TASK}
                init["model_args"] = {**defaults, **dict(init.get("model_args") or {})}
            printer = self._subcommand_parsers[subcommand] if subcommand else parser
            print(printer.dump(cfg, skip_none=False, skip_check=True), end="")
            raise SystemExit(0)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--last_every_n_batches",
            type=int,
            default=0,
            help="also write last.ckpt every N training batches (0: at each epoch's end only); a fit "
            "resumes exactly from any of them (docs/resuming.md)",
        )
        if not self._exit_on_config_error:  # a fit's saved config.yaml has fit's own arguments (ckpt_path, ...)
            known = {a.dest for a in parser._actions}
            for name in inspect.signature(pl.Trainer.fit).parameters:
                if name not in _FIT_DATA_ARGS and name not in known:
                    parser.add_argument(f"--{name}", type=Optional[Any], default=None, help="ignored: an entry of fit")
        parser.link_arguments(
            "data", "model.init_args.num_classes", compute_fn=self._data_num_classes, apply_on="instantiate"
        )

    def before_instantiate_classes(self) -> None:
        # the link replaces the value at instantiation: remember what the user set, to check it against the data
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        self._explicit_num_classes = cfg.get("model.init_args.num_classes")

    def _data_num_classes(self, datamodule) -> int:
        n = datamodule.num_classes
        explicit = self._explicit_num_classes
        if explicit is not None and int(explicit) != int(n):
            raise NumClassesMismatchError(
                f"--model.init_args.num_classes {explicit} disagrees with {type(datamodule).__name__}'s num_classes {n}; "
                "drop it (it is filled from the data) or use data with that many classes"
            )
        return n

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
            if isinstance(self.datamodule, ImageFolderDataModule) and conforms(self.model, WrapsModel):
                net = self.model.model
                cfg = net.pretrained_cfg if conforms(net, PretrainedConfigured) else {}
                self.datamodule.use_model_data_config(
                    resolve_data_config(net), cfg.get("architecture", type(net).__name__)
                )
        except Exception as err:  # jsonargparse wraps a constructor's or a link's error (with multi-line reprs)
            cause = _user_error(err) or _our_check(err)
            if cause is None:
                raise
            if self._exit_on_config_error:
                raise SystemExit(f"error: {cause}") from None
            if cause is err:
                raise
            raise cause from None

    def _resume(self, root: Path, callbacks: list) -> Optional[Resume]:
        """For ``fit --ckpt_path last``: the run to continue (and ``ckpt_path`` set to its file)."""
        if self.subcommand != "fit" or self.config_init[self.subcommand].get("ckpt_path") != "last":
            return None
        dirpaths = [c.dirpath for c in callbacks if isinstance(c, ModelCheckpoint) and c.dirpath]
        resume = find_last_checkpoint(root, dirpaths)
        self.config_init[self.subcommand]["ckpt_path"] = str(resume.ckpt)
        rank_zero_info(f"resuming from {resume.ckpt}")
        return resume

    @staticmethod
    def _check_ckpt_path(path) -> None:
        """A ``--ckpt_path`` file is read (weights-only, tensors left on disk) before anything else reads it or the
        run writes anything: a bad file is one :class:`CheckpointError` line naming it."""
        if path and path not in ("last", "best", "hpc", "registry") and "://" not in str(path):
            read_lightning_checkpoint(os.path.expanduser(str(path)), mmap=True)

    def _parse_ckpt_path(self) -> None:
        # Lightning's own reader (a full torch.load, for the file's hyper-parameters) must not see a bad file first
        subcommand = self.config.get("subcommand")
        self._check_ckpt_path(self.config[subcommand].get("ckpt_path") if subcommand else None)
        super()._parse_ckpt_path()

    def _check_resolved_ckpt_path(self) -> None:
        self._check_ckpt_path(self.config_init[self.subcommand].get("ckpt_path") if self.subcommand else None)

    before_fit = before_validate = before_test = before_predict = _check_resolved_ckpt_path

    def _run_dir_of(self, ckpt_path: Optional[str]) -> Optional[Path]:
        """``RUN`` for a checkpoint ``RUN/checkpoints/<file>.ckpt`` of a run (it has ``config.yaml``); else None."""
        path = Path(str(ckpt_path)).expanduser() if ckpt_path and "://" not in str(ckpt_path) else None
        if path is None or path.parent.name != "checkpoints" or not (path.parent.parent / "config.yaml").is_file():
            return None
        return path.parent.parent

    def instantiate_trainer(self, **kwargs):
        cfg = self._get(self.config_init, "trainer", default={})
        root = Path(cfg.get("default_root_dir") or os.getcwd())
        callbacks = _as_list(cfg.get("callbacks"))
        resume = self._resume(root, callbacks)
        if self.subcommand in (
            "test",
            "validate",
            "predict",
        ):  # only a fit is a run: these write into the one they read
            self.save_config_callback = None
            if cfg.get("logger") in (None, True):
                cfg["logger"] = False
            run_dir = self._run_dir_of(self.config_init[self.subcommand].get("ckpt_path"))
            if run_dir is not None:
                cfg["default_root_dir"] = str(run_dir)
        elif cfg.get("logger") in (None, True):
            step = resume.step if resume else None
            csv = ResumableCSVLogger(
                str(root), name="", version=resume.version if resume else None, keep_before_step=step
            )
            tb = (
                {"purge_step": step} if step is not None else {}
            )  # drop events the killed run logged after its checkpoint
            cfg["logger"] = [
                csv,
                TensorBoardLogger(str(root), name="", version=csv.version, default_hp_metric=False, **tb),
            ]
            run_dir = Path(csv.log_dir)
            self._fresh_run_dir = None if resume or run_dir.exists() else run_dir
        if cfg.get("enable_checkpointing") is not False and not any(isinstance(c, ModelCheckpoint) for c in callbacks):
            check_protocol(self.model, MonitoredTask, "the CLI's model (a task)")
            monitor, mode = self.model.checkpoint_monitor or (None, "max")
            every = int(self._get(self.config_init, "last_every_n_batches", default=0) or 0)
            callbacks.append(RunCheckpoint(monitor=monitor, mode=mode, last_every_n_batches=every))
        callbacks += default_progress_callbacks(
            callbacks, cfg.get("enable_progress_bar"), lines=self.subcommand == "fit"
        )
        cfg["callbacks"] = callbacks
        plugins = _as_list(cfg.get("plugins"))
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins.append(AtomicCheckpointIO())
        cfg["plugins"] = plugins + self._extra_plugins
        return super().instantiate_trainer(**kwargs)

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except BaseException:
            self._drop_unstarted_run()
            raise

    def _drop_unstarted_run(self) -> None:
        """After a fit failed before its first optimizer step: remove the ``version_N`` it opened (and nothing else)."""
        run_dir, trainer = self._fresh_run_dir, getattr(self, "trainer", None)  # unset if building it failed
        if run_dir is None or trainer is None or trainer.global_step > 0 or trainer.global_rank != 0:
            return
        if run_dir.is_dir() and not any((run_dir / "checkpoints").glob("*.ckpt")):
            for logger in trainer.loggers:  # close TensorBoard's event file before removing its folder
                with contextlib.suppress(Exception):
                    logger.finalize("failed")
            shutil.rmtree(run_dir, ignore_errors=True)


def main(args: Optional[List[str]] = None) -> None:
    """``tools/train.py``: run the CLI; an error in ``USER_ERRORS``, while building or during the fit (a non-finite
    loss, a failed checkpoint write), or a ``ValueError`` raised by one of vision_attn's own checks (a setting out of
    range, data too small for the split), ends it as ``SystemExit("error: <message>")``: one line, exit status 1."""
    try:
        VisionAttnCLI(args=args)
    except USER_ERRORS as err:
        raise SystemExit(f"error: {err}") from None
    except ValueError as err:  # a check of ours that fired during the run (e.g. a datamodule's setup)
        cause = _our_check(err)
        if cause is None:
            raise
        raise SystemExit(f"error: {cause}") from None


def _initial_weights(config: str) -> bool:
    """Whether ``config``'s task starts from weights (``model.init_args.pretrained`` set)."""
    try:
        with open(config) as f:
            cfg = yaml.safe_load(f) or {}
        return bool(((cfg.get("model") or {}).get("init_args") or {}).get("pretrained"))
    except (OSError, yaml.YAMLError, AttributeError):  # the CLI reports an unreadable config itself
        return False


def load_task(
    config: str, ckpt: Optional[str] = None, overrides: Sequence[str] = ()
) -> Tuple[pl.LightningModule, pl.LightningDataModule, pl.Trainer]:
    """Build the task, datamodule and trainer of ``config`` (no logger), with ``ckpt`` loaded into the task's model.

    ``ckpt``: our Lightning ``.ckpt`` (its EMA weights when present), a state dict, or foreign weights the model's
    ``create_model`` takes (path or URL); ``None`` keeps the config's initial weights. ``overrides`` are CLI flags.
    """
    if not os.path.isfile(os.path.expanduser(config)):
        raise FileNotFoundError(f"config {config} does not exist")
    if ckpt is not None and _initial_weights(os.path.expanduser(config)):
        overrides = ["--model.init_args.pretrained", "null", *overrides]  # replaced by ckpt's: do not fetch them first
    cli = VisionAttnCLI(
        args=["--config", os.path.expanduser(config), "--trainer.logger", "false", *overrides],
        run=False,
        save_config_callback=None,
    )  # evaluating writes no config.yaml into the config's root dir
    if ckpt is not None:
        cli.model.load_weights(os.path.expanduser(ckpt) if "://" not in str(ckpt) else ckpt)
    return cli.model, cli.datamodule, cli.trainer
