"""The train stage: ``params.yaml``'s ``train:`` section -> :class:`~featherface.train.engine.Trainer` ->
``final.pt`` and ``provenance.json``; what ``featherface train``, ``python -m featherface.train`` and the pipeline's
train stage run.

The run folder (default ``results/train`` beside the parameter file) is locked for the run and an earlier run in
it is never overwritten unasked (:mod:`featherface.train.run_folder`). Under ``torchrun`` the process joins the
process group (DDP) and leaves it; rank 0 alone writes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from featherface.config import Params, load_params, resolve_path, to_dict
from featherface.models.checkpoints import CheckpointError
from featherface.train import distributed
from featherface.train.builders import build_dataset, select_device, weights_path
from featherface.train.config import TrainConfig
from featherface.train.distributed import DistEnv
from featherface.train.engine import Trainer
from featherface.train.run_folder import RunFolderLock, prepare_run_folder, set_aside
from featherface.train.state import ResumeMismatchError
from featherface.utils.io import ProgressCallback
from featherface.utils.provenance import code_version, hardware_description, write_record

__all__ = ["load_train_params", "run_training", "set_aside_stale_run", "train_dir_of"]

log = logging.getLogger(__name__)


def load_train_params(path: str | Path, overrides: Sequence[str] = ()) -> tuple[Params, TrainConfig]:
    """The validated parameter file and its ``train:`` section (defaults when the section is absent)."""
    params = load_params(path, overrides)
    return params, params.train


def train_dir_of(params: Params, config: TrainConfig, base: str | Path) -> Path:
    """``train.train_dir`` resolved against ``base``, or ``<data.root>/widerface/train``."""
    if config.train_dir:
        return resolve_path(config.train_dir, base)
    return resolve_path(params.data.root, base) / "widerface" / "train"


def set_aside_stale_run(out_dir: str | Path) -> list[Path]:
    """Rename ``last.pt``, ``metrics.csv``, ``final.pt`` and ``provenance.json`` of ``out_dir`` to
    ``last.stale-<UTC time>.pt``, ``metrics.stale-<UTC time>.csv``, ... (nothing is deleted, an earlier stale file
    is never overwritten), so that no file of the old run passes for the new run's; returns the new paths."""
    return set_aside(out_dir)


def run_training(
    params_path: str | Path = "params.yaml",
    overrides: Sequence[str] = (),
    out_dir: str | Path | None = None,
    resume: bool | str = False,
    progress: ProgressCallback | None = None,
    overwrite: bool = False,
) -> Path:
    """Train as ``params.yaml``'s ``train:`` section says; what ``featherface train`` and
    ``python -m featherface.train`` run. Under ``torchrun`` it joins the process group (DDP) and leaves it.

    Args:
        params_path: the parameter file (relative paths inside it are resolved against its folder).
        overrides: ``section.key=value`` strings.
        out_dir: default ``<params folder>/results/train``.
        resume: ``True`` (or ``"strict"``) continues from ``<out_dir>/last.pt`` when it exists and refuses one
            written with other settings (:class:`ResumeMismatchError`); ``"auto"`` continues a compatible one and
            otherwise sets it aside (:func:`set_aside_stale_run`) and starts afresh (what the pipeline's train
            stage does); ``False`` starts afresh.
        progress: ``progress(done, total, what)`` (rank 0 only).
        overwrite: let a fresh run replace an earlier run in ``out_dir``; its files are set aside
            (:func:`set_aside_stale_run`), never deleted. Without it, a fresh run into a folder holding
            ``last.pt``, ``metrics.csv`` or ``final.pt`` is refused (``resume="auto"`` sets them aside instead).

    Returns:
        ``<out_dir>/final.pt``. Rank 0 also writes ``<out_dir>/provenance.json``.

    Raises:
        RunFolderError: ``out_dir`` holds a run that a fresh start would overwrite (see ``overwrite``).
        RunFolderBusyError: another run is training into ``out_dir`` (an exclusive lock on ``<out_dir>/.lock``).
        TrainingInterrupted: Ctrl-C; the message says what ``last.pt`` holds and how to continue.
    """
    path = Path(params_path).resolve()
    base = path.parent
    code_at_start = code_version()  # the provenance names the code the run started with
    params, config = load_train_params(path, overrides)
    out = Path(out_dir) if out_dir is not None else base / "results" / "train"
    env = distributed.detect()
    device = select_device(config, env)
    lock = RunFolderLock(out).acquire() if env.is_main else None  # rank 0 writes the folder, rank 0 locks it
    try:
        if env.is_main:
            prepare_run_folder(out, resume, overwrite)
        distributed.init(env, device)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    try:
        train_dir = train_dir_of(params, config, base)
        extra_dirs = [resolve_path(d, base) for d in config.extra_train_dirs]
        dataset = build_dataset(config, train_dir, extra_dirs=extra_dirs)
        trainer = Trainer(config, out, dataset, weights_base=base, env=env, device=device, progress=progress)
        final = _fit(trainer, resume, env)
        if env.is_main:
            inputs = _input_files(params, config, base, train_dir, extra_dirs)
            write_record(out, "train", {"train": to_dict(config), "data": to_dict(params.data)}, inputs=inputs,
                         extra={"world_size": env.world_size, "device": str(device),
                                "hardware": hardware_description(str(device)),
                                "images": len(dataset)},  # type: ignore[arg-type]
                         code=code_at_start)
        return final
    finally:
        distributed.cleanup()
        if lock is not None:
            lock.release()


def _fit(trainer: Trainer, resume: bool | str, env: DistEnv) -> Path:
    """``trainer.fit`` as ``resume`` says (see :func:`run_training`); returns ``final.pt``."""
    try:
        if resume != "auto":
            return trainer.fit(resume=bool(resume))
        try:
            return trainer.fit(resume=True)
        except ResumeMismatchError as err:
            if env.is_main:
                moved = set_aside_stale_run(trainer.out_dir)
                log.warning("%s; starting afresh (the old files are kept as %s)", err,
                            ", ".join(str(p) for p in moved))
            distributed.barrier(env)
            return trainer.fit(resume=False)
    except CheckpointError as err:
        if not str(err).startswith(str(trainer.last_path)):
            raise
        raise CheckpointError(f"{err}. To start afresh instead, pass --overwrite without --resume (the old "
                              "files are kept as <name>.stale-<time>.<ext>)") from err


def _input_files(params: Params, config: TrainConfig, base: Path, train_dir: Path,
                 extra_dirs: Sequence[Path]) -> list[Path]:
    """The files the run read, for the provenance record: label files, the data manifest when there is one, the
    initial weights and the teacher."""
    inputs = [train_dir / "label.txt", *(d / "label.txt" for d in extra_dirs)]
    manifest = resolve_path(params.data.root, base) / "manifest.json"
    if manifest.is_file():
        inputs.append(manifest)
    if config.init == "imagenet":
        inputs.append(resolve_path(config.imagenet_weights, base))
    elif config.init == "fork_trunk":
        inputs.append(resolve_path(config.fork_weights, base))
    elif config.init == "checkpoint":
        inputs.append(weights_path(config.init_weights, base))
    if config.teacher_weights:
        inputs.append(weights_path(config.teacher_weights, base))
    return inputs
