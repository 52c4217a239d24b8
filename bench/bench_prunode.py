"""Prunode is O(1) in the number of widths: one layer's training step, Prunode vs an
FBNet-style layer that enumerates K explicit widths, at K = 4, 8, 16, side by side.

Both layers search the same hidden range (16..256 channels of an IRB 32->32 at 16x16,
batch 32). Memory is what a step holds: parameters, gradients, RMSprop state, and the
activations autograd saves for backward (counted by storage, via saved_tensors_hooks);
CPU PyTorch has no allocator peak counter.

    python bench/bench_prunode.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from onnxnas.blocks import build_block
from onnxnas.blocks.spec import BlockSpec
from onnxnas.search.prunode import Prunode, PrunodeMasks

IN_CHS, HW, BATCH, MAX_HIDDEN = 32, 16, 32, 256


def spec(hidden: int) -> BlockSpec:
    return BlockSpec("irb", IN_CHS, IN_CHS, 1, 3, "relu", hidden_chs=hidden)


class EnumeratedLayer(nn.Module):
    """FBNet-style: one block per width, mixed by Gumbel-softmax over K architecture weights."""

    def __init__(self, widths: list[int]):
        super().__init__()
        self.blocks = nn.ModuleList(build_block(spec(w)) for w in widths)
        self.theta = nn.Parameter(torch.zeros(len(widths)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.gumbel_softmax(self.theta, tau=1.0)
        return sum(a_k * block(x) for a_k, block in zip(a, self.blocks))


class PrunodeLayer(nn.Module):
    def __init__(self, k: int):
        super().__init__()
        self.node = Prunode(build_block(spec(MAX_HIDDEN)), PrunodeMasks(MAX_HIDDEN, MAX_HIDDEN // k), float)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.node(x, 1.0)[0]


def measure(layer: nn.Module, repeats: int) -> tuple[float, float]:
    """(median step ms, step memory MiB)."""
    opt = torch.optim.RMSprop(layer.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(BATCH, IN_CHS, HW, HW)
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    times, activations = [], 0
    for i in range(repeats + 3):
        saved.clear()
        start = time.perf_counter()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = layer(x).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 3:
            times.append(time.perf_counter() - start)
        activations = max(activations, sum(saved.values()))
    params = sum(p.numel() * p.element_size() for p in layer.parameters())
    memory = 4 * params + activations  # weights, grads, square_avg, momentum + saved activations
    return statistics.median(times) * 1e3, memory / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    print(f"one IRB layer {IN_CHS}->{IN_CHS} @ {HW}x{HW}, batch {BATCH}, hidden widths up to {MAX_HIDDEN}, "
          f"1 thread, median of {args.repeats} steps")
    print(f"{'K':>3} | {'enum ms':>8} {'prunode ms':>10} {'ratio':>6} | {'enum MiB':>8} {'prunode MiB':>11} {'ratio':>6}")
    measure(EnumeratedLayer([MAX_HIDDEN]), 3)  # warm the allocator and thread pool before timing anything
    for k in (4, 8, 16):
        widths = [MAX_HIDDEN * (i + 1) // k for i in range(k)]
        enum_ms, enum_mib = measure(EnumeratedLayer(widths), args.repeats)
        node_ms, node_mib = measure(PrunodeLayer(k), args.repeats)
        print(f"{k:>3} | {enum_ms:>8.1f} {node_ms:>10.1f} {enum_ms / node_ms:>5.2f}x | "
              f"{enum_mib:>8.1f} {node_mib:>11.1f} {enum_mib / node_mib:>5.2f}x")


if __name__ == "__main__":
    main()
