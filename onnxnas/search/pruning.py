"""Progressive block pruning: after warm-up, drop blocks whose probability is under a rising threshold.

Removed candidates are deleted from the supernet, so later epochs run fewer blocks. The
most probable block of a layer is never removed, and the last epoch keeps only it, so the
search ends with exactly one block per layer.
"""

from __future__ import annotations

from torch import nn

from onnxnas.search.skipping import insert_skip
from onnxnas.search.supernet import StochasticLayer, Supernet


def prune_layer(layer: StochasticLayer, threshold: float, *, final: bool = False) -> list[nn.Module]:
    """Remove the layer's blocks under ``threshold`` (all but the best when ``final``), least
    probable first; returns the removed modules so their optimizer state can be dropped."""
    probs = layer.probabilities()
    best = max(probs, key=probs.__getitem__)
    doomed = sorted((s for s, p in probs.items() if s != best and (final or p < threshold)), key=probs.__getitem__)
    removed = []
    for slot in doomed:
        removed.append(layer.candidate(slot))
        if not final and layer.position.skippable and layer.skip_slot is None and len(layer.alive) == 2:
            insert_skip(layer, slot)
        else:
            del layer.candidates[str(slot)]
    return removed


def prune(supernet: Supernet, threshold: float, *, final: bool = False) -> list[nn.Module]:
    return [module for layer in supernet.layers for module in prune_layer(layer, threshold, final=final)]
