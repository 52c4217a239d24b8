"""Schedules as pure functions of where the run is, so a resumed run recomputes them exactly."""

from __future__ import annotations

import math

# Architecture steps a search needs for its Prunodes to settle: held against a known optimum,
# a Prunode picked wrong widths after 52 steps (digits at 20% of the batches) and right ones
# after 520, so a short search on small data takes extra architecture steps up to this total.
MIN_ARCH_STEPS = 520


def cosine(base: float, position: float, total: float) -> float:
    """Cosine decay from ``base`` to 0 over ``total`` (epochs, fractional positions allowed)."""
    return base * 0.5 * (1.0 + math.cos(math.pi * min(max(position / total, 0.0), 1.0)))


def prune_threshold(epoch: int, warmup: int, total: int, t_init: float, t_final: float) -> float:
    """t(e) at the end of epoch ``e`` (1-based): t_init right after warm-up, rising linearly to t_final at the end."""
    if epoch <= warmup:
        raise ValueError(f"no pruning during warm-up (epoch {epoch} <= {warmup})")
    return t_init + (t_final - t_init) * (epoch - warmup) / (total - warmup)


def search_progress(epoch_index: int, arch_step: int, arch_steps_per_epoch: int, warmup: int, total: int) -> float:
    """Fraction of the architecture steps done after step ``arch_step`` (0-based) of epoch
    ``epoch_index`` (0-based): the Prunode's progress, 0 at the end of warm-up, 1 at the end."""
    done = (epoch_index - warmup) * arch_steps_per_epoch + arch_step + 1
    return min(max(done / ((total - warmup) * arch_steps_per_epoch), 0.0), 1.0)


def arch_steps_per_epoch(batches: int, fraction: float, search_epochs: int, min_total: int,
                         max_batches: int | None) -> tuple[int, int]:
    """(weight steps, architecture steps) of one post-warm-up epoch of ``batches`` batches.

    The weight steps are the paper's 80%; the architecture steps are its 20%, or more where
    that would total fewer than ``min_total`` over ``search_epochs`` (small data: the extra
    steps reuse the epoch's data in a second pass), and never so many that the epoch exceeds
    ``max_batches`` (a smoke-test cap on every batch of an epoch).
    """
    share = min(batches - 1, max(1, round(fraction * batches)))
    weight = batches - share
    arch = max(share, -(-min_total // max(search_epochs, 1)))
    if max_batches is not None:
        arch = max(share, min(arch, max_batches - weight))
    return weight, arch
