"""The Cost protocol: PruNet's results do not drift, and costs are cheap enough for a budget solve.

1. No drift: the same short PruNet search (tiny, digits, the committed CPU LUT) run twice with
   one seed in this tree, and once with a reference checkout's code (``--reference DIR``, e.g.
   a checkout of main from before the Cost protocol), must give the same arch hash and the same
   predicted latency.
2. Speed: pricing random gpunet1 archs with every cost, beside ``count_stats(build_model(arch))``.

    PYTHONPATH=. python bench/bench_cost.py [--reference /path/to/main] [--epochs 4] [--archs 200]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from onnxnas.blocks import build_model
from onnxnas.cost import BopsCost, CountCost, SizeCost
from onnxnas.space import load_space
from onnxnas.space.choose import random_arch
from onnxnas.stats import count_stats

ROOT = Path(__file__).resolve().parents[1]
LUT = ROOT / "latency_tables" / "tiny-cpu-onnxruntime-fp32.json"


def search(code_root: Path, out: Path, epochs: int, seed: int) -> tuple[str, float]:
    """Run `onnxnas search` with the onnxnas package found under ``code_root``; (arch hash, predicted µs)."""
    env = {**os.environ, "PYTHONPATH": str(code_root), "PYTHONDONTWRITEBYTECODE": "1"}  # leave the reference untouched
    command = [sys.executable, "-m", "onnxnas", "search", "--method", "prunet", "--space", "tiny", "--lut", str(LUT),
               "--data", "digits", "--out", str(out), "--epochs", str(epochs), "--warmup-epochs", "1",
               "--max-batches", "8", "--seed", str(seed)]
    subprocess.run(command, env=env, check=True, capture_output=True, cwd=out.parent)
    arch = json.loads((out / "arch.json").read_text())
    body = {k: v for k, v in arch.items() if k != "provenance"}  # Arch.hash, recomputed so old code can be compared
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16], arch["provenance"]["predicted_latency_us"]


def no_drift(reference: Path | None, epochs: int, seed: int) -> bool:
    runs = [("this tree", ROOT), ("this tree again", ROOT)] + ([("reference " + str(reference), reference)] if reference else [])
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, root) in enumerate(runs):
            start = time.perf_counter()
            digest, latency = search(root, Path(tmp) / f"run{i}", epochs, seed)
            results.append((digest, latency))
            print(f"  {label:<40} arch {digest}  predicted {latency:.6f} us  ({time.perf_counter() - start:.0f} s)")
    same = len(set(results)) == 1
    print(f"  identical: {same}")
    return same


def speed(count: int) -> None:
    space = load_space("gpunet1")
    rng = random.Random(0)
    archs = [random_arch(space, rng) for _ in range(count)]
    for name, cost in [("params", CountCost("params")), ("macs", CountCost("macs")), ("bops", BopsCost()), ("size", SizeCost())]:
        start = time.perf_counter()
        for arch in archs:
            cost.exact(arch)
        print(f"  {name:<8} {1e3 * (time.perf_counter() - start) / count:8.3f} ms/arch (cache warm after the first archs)")
    start = time.perf_counter()
    for arch in archs[:3]:
        count_stats(build_model(arch), arch.input_shape)
    print(f"  count_stats(build_model) {1e3 * (time.perf_counter() - start) / 3:8.1f} ms/arch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, default=None, help="a checkout whose onnxnas to compare with")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--archs", type=int, default=200)
    args = parser.parse_args()
    print("1. PruNet search, tiny/digits, same seed:")
    same = no_drift(args.reference, args.epochs, args.seed)
    print(f"2. Pricing {args.archs} random gpunet1 archs:")
    speed(args.archs)
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
