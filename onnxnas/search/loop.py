"""The checkpointed epoch loop that every search method runs.

A method brings a trainer (its own supernet, losses and optimizers); this module trains
it epoch by epoch, writes an atomic checkpoint and ``metrics.jsonl`` after each epoch on
rank 0, resumes from a checked checkpoint, refuses to resume under other settings, and
holds one lock per ``--out``. So ``--resume``, SIGKILL safety and DDP behave the same for
PruNet, UDC and the filter-level search.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from tqdm import tqdm

from onnxnas.errors import OnnxNasError
from onnxnas.lock import exclusive_output
from onnxnas.search.checkpoint import save_search_state
from onnxnas.search.distributed import DistContext, barrier
from onnxnas.search.metrics import write_metrics

CHECKPOINTS = "checkpoints"
LOCK_FILE = ".onnxnas-search.lock"


class NonFiniteLoss(Exception):
    """The loss became NaN or infinite; carries where, so the caller can name it."""

    def __init__(self, epoch: int, batch: int):
        super().__init__(f"loss is not finite at epoch {epoch}, batch {batch}")
        self.epoch, self.batch = epoch, batch


class EpochTrainer(Protocol):
    """What the loop needs from a method's trainer: one epoch at a time, and its whole state."""

    epoch: int  # completed epochs
    metrics: list[dict[str, Any]]  # one line per completed epoch

    def run_epoch(self) -> dict[str, Any]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def train_until(trainer: EpochTrainer, until: int, checkpoint: Path, metrics: Path, label: str, ctx: DistContext, *,
                postfix: Callable[[dict[str, Any]], dict[str, str]] | None = None,
                nan_fix: str = "lower the learning rates, then rerun with --resume", job: str = "search") -> None:
    """Run epochs up to ``until``, checkpointing each; a NaN loss stops the ``job`` with the last checkpoint kept."""
    bar = tqdm(total=until, initial=trainer.epoch, desc=label, disable=True if not ctx.is_main else None)
    while trainer.epoch < until:
        try:
            trainer.run_epoch()
        except NonFiniteLoss as exc:
            kept = f"the last good checkpoint ({checkpoint}, epoch {trainer.epoch}) is kept" if checkpoint.exists() \
                else "no epoch had finished, so there is no checkpoint"
            raise OnnxNasError(f"{job} stopped: {exc}; {kept}", fix=nan_fix) from exc
        if ctx.is_main:
            save_search_state(checkpoint, trainer.state_dict())
            write_metrics(metrics, trainer.metrics)
        barrier(ctx)
        bar.update(1)
        if postfix is not None:
            bar.set_postfix(postfix(trainer.metrics[-1]))
    bar.close()


def check_config(saved: Mapping[str, Any], current: Mapping[str, Any], path: Path, flags: Mapping[str, str]) -> None:
    """A checkpoint resumes only under the settings it was made with; name the flag that differs."""
    for key, value in current.items():
        if saved.get(key) != value:
            flag = flags.get(key, f"--{key.replace('_', '-')}")
            raise OnnxNasError(f"cannot resume: the checkpoint was made with {flag} {saved.get(key)}, not {value}",
                               where=str(path), fix=f"rerun with {flag} {saved.get(key)}, or start over in a new --out")


def restore(trainer: EpochTrainer, state: dict[str, Any], path: Path) -> None:
    """Load a checked state; what still does not fit this trainer (pruned slots, optimizer groups,
    tensor shapes) is a damaged or foreign checkpoint, reported as one line."""
    try:
        trainer.load_state_dict(state)
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise OnnxNasError(f"cannot resume: the checkpoint does not fit this search ({type(exc).__name__}: {reason})",
                           where=str(path), fix="start over in a new --out (or without --resume)") from exc


def output_lock(ctx: DistContext, out: Path) -> contextlib.AbstractContextManager[None]:
    """One search per --out: rank 0 holds an exclusive lock for the whole run (other ranks write nothing)."""
    if not ctx.is_main:
        return contextlib.nullcontext()
    return exclusive_output(out / LOCK_FILE, "search output")
