"""Turn per-position choices into an Arch: used by search results, sampling and references."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from typing import Any

from onnxnas.arch import Arch
from onnxnas.blocks.spec import BlockSpec
from onnxnas.space.spec import SearchSpace

SKIP = "skip"
Choice = dict[str, Any] | str  # {"kernel_size", "se", "hidden_chs", ...compression} or "skip"


def make_arch(space: SearchSpace, choices: Sequence[Choice], *, num_classes: int | None = None,
              provenance: dict[str, Any] | None = None) -> Arch:
    """An arch of ``space`` with one choice per layer position."""
    positions = space.positions()
    if len(choices) != len(positions):
        raise ValueError(f"{len(choices)} choices for {len(positions)} positions")
    layers: list[BlockSpec] = []
    for pos, choice in zip(positions, choices):
        if choice == SKIP:
            if not pos.skippable:
                raise ValueError(f"layer {pos.index} is not skippable")
            layers.append(pos.skip())
        else:
            layers.append(pos.block(**choice))
    return Arch(space=space.name, space_hash=space.hash, resolution=space.resolution, in_chs=space.in_chs,
                stem=space.stem_block(), layers=tuple(layers), head=space.head_spec(num_classes),
                provenance=dict(provenance or {}))


def random_arch(space: SearchSpace, rng: random.Random, skip_probability: float = 0.2) -> Arch:
    """A uniformly sampled arch (skippable layers skipped with ``skip_probability``)."""
    choices: list[Choice] = []
    for pos in space.positions():
        if pos.skippable and rng.random() < skip_probability:
            choices.append(SKIP)
            continue
        choices.append({"kernel_size": rng.choice(pos.kernel_sizes), "se": rng.choice(pos.se_options),
                        "hidden_chs": rng.choice(pos.hidden_choices) if pos.hidden_choices else 0})
    return make_arch(space, choices, provenance={"method": "random"})


def extreme_arch(space: SearchSpace, *, widest: bool, weight_bits: int = 32, nonzero_fraction: float = 1.0,
                 num_classes: int | None = None) -> Arch:
    """The widest arch of ``space`` (largest kernel, SE wherever offered, widest hidden width, no skips)
    or the narrowest (smallest kernel, SE only where forced, narrowest width, every skippable layer skipped).

    ``weight_bits`` / ``nonzero_fraction`` apply to every layer (compression spaces such as mbv2).
    """
    pick = max if widest else min
    choices: list[Choice] = []
    for pos in space.positions():
        if pos.skippable and not widest:
            choices.append(SKIP)
            continue
        stage = space.stages[pos.stage]
        choice: dict[str, Any] = {"kernel_size": pick(pos.kernel_sizes), "se": pick(pos.se_options),
                                  "hidden_chs": pick(pos.hidden_choices) if pos.hidden_choices else 0}
        if pos.type not in ("conv", "ds") and stage.max_expansion is None:  # UDC widths: record the fraction too
            choice["width_fraction"] = pick(stage.width_fractions)
        if weight_bits != 32:
            choice["weight_bits"] = weight_bits
        if nonzero_fraction != 1.0:
            choice["nonzero_fraction"] = nonzero_fraction
        choices.append(choice)
    name = "widest" if widest else "narrowest"
    return make_arch(space, choices, num_classes=num_classes, provenance={"method": "reference", "name": name})


def _irb(kernel_size: int, expansion: int, in_chs: int, se: bool = False, padding: str = "same") -> dict[str, Any]:
    return {"kernel_size": kernel_size, "se": se, "hidden_chs": expansion * in_chs, "padding": padding}


def gpunet1_arch(space: SearchSpace) -> Arch:
    """NVIDIA's GPUNet-1 (docs/design.md §3) in the gpunet1 space, skips included, as NVIDIA builds it.

    NVIDIA's builder asks for TF-style 'same' padding on the Fused-IRBs, which for stride 2 falls back
    to no padding at all: their maps are 71x71 and 35x35, not 72 and 36 (3,308,369,280 MACs, not
    3,375,338,624; parameters are the same 12,704,192). It also uses BN eps 1e-3, dropout 0.2 before
    the classifier and drop-path 0.2 in training.
    """
    conv3 = {"kernel_size": 3}
    choices: list[Choice] = [
        conv3, SKIP,                                                          # stage 1: conv 24->24 k3 relu
        _irb(3, 4, 24, padding="valid"), _irb(3, 4, 64), SKIP,                # stage 2: fused_irb 24->64 s2, 64->64
        _irb(3, 4, 64, padding="valid"), _irb(3, 4, 96), SKIP,                # stage 3: fused_irb 64->96 s2, 96->96
        _irb(3, 2, 96, se=True), SKIP,                                        # stage 4: irb 96->160 s2 e2 SE
        _irb(3, 5, 160), *[_irb(3, 5, 288)] * 3, SKIP,                        # stage 5: 4x irb ->288 e5
        _irb(3, 4, 288, se=True), *[_irb(3, 4, 448, se=True)] * 3, SKIP, SKIP,  # stage 6: 4x irb ->448 e4 SE
    ]
    arch = make_arch(space, choices, provenance={"method": "reference", "name": "GPUNet-1"})
    return dataclasses.replace(arch, bn_eps=1e-3, dropout=0.2, drop_path_rate=0.2)


# name -> (the space it is an arch of, its builder): `onnxnas arch make --name NAME`
NAMED_ARCHS = {"gpunet1": ("gpunet1", gpunet1_arch)}
