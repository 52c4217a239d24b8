"""Size bound against the real coder (docs/design.md §7, "Real size"), side by side.

  random   random weights quantized to b bits with magnitude sparsity s, for s in {0.1, 0.5, 0.9} x
           b in {2, 4, 8}: bound bits, coded bits, coded / bound, header overhead; at 1M elements (0.95 MiB
           as INT8, 0.08-0.91 MiB coded) and at 10k (where the header shows)
  trained  a trained network's conv/linear weights (``--weights``, e.g. from
           ``onnxnas train examples/tiny.arch.json --data digits --epochs 3``) with its layers at
           ``--bits`` and ``--nonzero`` (stem, head and classifier at 8 bits dense), per layer and total

The bound is taken at each tensor's real non-zero fraction (a kept weight may round to zero).

Usage: python bench/bench_size.py [random|trained|all] [--arch A] [--weights W] [--bits 4] [--nonzero 0.5]
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from onnxnas.arch import load_arch
from onnxnas.blocks.builder import build_model
from onnxnas.compress.codec import QuantTensor, encode
from onnxnas.compress.masks import magnitude_mask
from onnxnas.compress.quantizer import LearnedRanges, integers
from onnxnas.compress.size import FIXED_BITS, bound_bits
from onnxnas.deploy.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
ROW = "{:<24} {:>9} {:>5} {:>6} {:>12} {:>12} {:>8} {:>7}"


def compress(name: str, theta: torch.Tensor, bits: int, nonzero_fraction: float) -> QuantTensor:
    """Magnitude mask at s, then the b-bit integers at the tensor's MSE-optimal range."""
    ranges = LearnedRanges((bits,))
    ranges.init_from(theta)
    ints = integers(theta * magnitude_mask(theta, nonzero_fraction), bits, ranges.ranges[0].detach())
    return QuantTensor(name, ints.numpy(), bits)


def tensor_bound(tensor: QuantTensor) -> float:
    return bound_bits(tensor.values.size, tensor.bits, np.count_nonzero(tensor.values) / max(1, tensor.values.size))


def print_header() -> None:
    print(ROW.format("tensor", "N", "bits", "s", "bound bits", "coded bits", "ratio", "header"))


def report(label: str, tensors: list[QuantTensor]) -> tuple[float, int]:
    """One row: bound and coded bits of these tensors as one file (header = file bytes - payloads)."""
    coded = encode(tensors)
    count = sum(t.values.size for t in tensors)
    bound = sum(tensor_bound(t) for t in tensors)
    s = sum(np.count_nonzero(t.values) for t in tensors) / count
    bits = "/".join(sorted({str(t.bits) for t in tensors}))
    print(ROW.format(label, count, bits, f"{s:.3f}", f"{bound:,.0f}", f"{8 * len(coded.data):,}",
                     f"{8 * len(coded.data) / bound:.4f}", f"{coded.header_bytes} B"))
    return bound, 8 * len(coded.data)


def bench_random(sizes: Iterable[int] = (1_000_000, 10_000)) -> None:
    generator = torch.Generator().manual_seed(0)
    for size in sizes:
        print(f"\nrandom N(0, 1) weights, {size:,} elements per tensor")
        print_header()
        for s in (0.1, 0.5, 0.9):
            for bits in (2, 4, 8):
                theta = torch.randn(size, generator=generator)
                report(f"s={s} b={bits}", [compress("w", theta, bits, s)])


def bench_trained(arch_path: Path, weights: Path, bits: int, nonzero_fraction: float) -> None:
    model = build_model(load_arch(arch_path))
    model.load_state_dict(load_checkpoint(weights).state_dict)
    layers: dict[str, list[QuantTensor]] = defaultdict(list)
    for module_name, module in model.named_modules():
        if not isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            continue
        parts = module_name.split(".")
        layer = ".".join(parts[:2]) if parts[0] == "blocks" else ("classifier" if parts[-1] == "fc" else parts[0])
        fixed = parts[0] != "blocks"
        layers[layer].append(compress(f"{module_name}.weight", module.weight.detach(),
                                      FIXED_BITS if fixed else bits, 1.0 if fixed else nonzero_fraction))
    print(f"\n{arch_path.name} with {weights}: layers at {bits} bits, s={nonzero_fraction}; "
          f"stem/head/classifier at {FIXED_BITS} bits dense")
    print_header()
    for layer, tensors in layers.items():
        report(layer, tensors)
    report("total (one file)", [t for tensors in layers.values() for t in tensors])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="?", default="all", choices=("random", "trained", "all"))
    parser.add_argument("--arch", type=Path, default=ROOT / "examples" / "tiny.arch.json")
    parser.add_argument("--weights", type=Path, default=Path("/tmp/compress-bench/tiny/weights.pt"))
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--nonzero", type=float, default=0.5)
    args = parser.parse_args()
    if args.which in ("random", "all"):
        bench_random()
    if args.which in ("trained", "all"):
        bench_trained(args.arch, args.weights, args.bits, args.nonzero)


if __name__ == "__main__":
    main()
