"""UDC benchmarks (docs/design.md §7, §13), each short enough for 2 shared CPU cores.

  guarantee  seeds x targets on tiny-udc/digits and mbv2 at 32 px on synthetic data (10 classes): how often
             the argmax configuration meets e* before repair, that the written arch always does, |E - e*|/e*
  ablation   UDC Table 3 at small scale on tiny-udc/digits: vanilla DNAS with the expectation penalty,
             + projection, + projection + rejection sampling, full (+ top-kappa STE): argmax meets e*?,
             repair moves, digits accuracy after a short finetune
  cost       time per search step at S = 1, 4, 16 on tiny-udc beside PruNet's step on tiny (same stages),
             and mbv2 at 224x224 with 1000 classes: time per step and peak RSS (a subprocess each)
  e2e        search -> finetune -> finalize (int8) -> verify on tiny-udc/digits: accuracy (PyTorch and the
             shipped ONNX on the validation split), bound vs coded size per layer and in total, ONNX size,
             measured vs predicted latency (``--lut``: an int8 table of tiny-udc)

Usage: python bench/bench_udc.py [guarantee|ablation|cost|e2e|all] [--seeds 5] [--lut FILE] [--work DIR]
                                 [--pi-lr 0.05] [--spaces tiny-udc|mbv2|both]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from onnxnas.arch import load_arch
from onnxnas.cli import main as cli
from spaces import mbv2_at  # bench/ is the script's folder

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--space", "tiny-udc", "--data", "digits", "--batch-size", "16", "--device", "cpu"]


def quiet(argv: list[str]) -> int:
    """Run one CLI command with its progress bars and prints out of the table."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        code = cli(argv)
    if code != 0:
        print(f"  ! {' '.join(argv[:3])}: exit {code}: {err.getvalue().strip().splitlines()[-1:]}")
    return code


def search(out: Path, space: list[str], target: str, seed: int, epochs: int, extra: list[str] = ()) -> dict | None:
    code = quiet(["search", "--method", "udc", *space, "--target-size", target, "--out", str(out), "--seed", str(seed),
                  "--epochs", str(epochs), "--warmup-epochs", "1", "--mc-samples", "2", *extra])
    return load_arch(out / "arch.json").provenance if code == 0 else None


def guarantee(work: Path, seeds: int, pi_lr: str, spaces: str) -> None:
    print(f"== guarantee (--pi-lr {pi_lr}): argmax before repair meets e*, written arch meets e*, |E - e*|/e* (written)")
    runs = [("tiny-udc/digits", TINY + ["--max-batches", "24", "--pi-lr", pi_lr], ["12KiB", "20KiB", "32KiB"], 6),
            ("mbv2@32/synthetic", ["--space", str(mbv2_at(32, work)), "--data", "synthetic", "--batch-size", "16",
                                   "--max-batches", "4", "--device", "cpu", "--pi-lr", pi_lr], ["0.55MiB", "1.0MiB", "1.5MiB"], 3)]
    for name, space, targets, epochs in runs:
        if spaces != "both" and not name.startswith(spaces):
            continue
        for target in targets:
            before, after, gaps, moves = [], [], [], []
            for seed in range(seeds):
                prov = search(work / f"g-{name.split('/')[0]}-{target}-{seed}", space, target, seed, epochs)
                if prov is None:
                    continue
                e = prov["targets"]["size_mib"]
                before.append(prov["argmax_before_repair"]["size_mib"] <= e)
                after.append(prov["exact"]["size_mib"] <= e)
                gaps.append(abs(prov["exact"]["size_mib"] - e) / e)
                moves.append(len(prov["repair"]))
            print(f"  {name:<20} e*={target:<8} runs {len(after)}  argmax meets e*: {sum(before)}/{len(before)}  "
                  f"written meets e*: {sum(after)}/{len(after)}  |E-e*|/e* mean {statistics.mean(gaps):.3%} "
                  f"max {max(gaps):.3%}  repair moves mean {statistics.mean(moves):.1f}")


def ablation(work: Path, seeds: int, pi_lr: str) -> None:
    print("== ablation (UDC Table 3, small): tiny-udc/digits, e* = 16 KiB, 6 epochs, finetune 3 epochs")
    variants = {"vanilla (expectation penalty)": ["--no-projection", "--no-rejection", "--no-topk"],
                "+ projection": ["--no-rejection", "--no-topk"], "+ projection + RS": ["--no-topk"], "full": []}
    for label, flags in variants.items():
        met, accuracy, gaps = [], [], []
        for seed in range(seeds):
            out = work / f"a-{label.split()[0]}-{len(flags)}-{seed}"
            prov = search(out, TINY + ["--max-batches", "24", "--pi-lr", pi_lr], "16KiB", seed, 6, flags)
            if prov is None:
                continue
            e = prov["targets"]["size_mib"]
            met.append(prov["argmax_before_repair"]["size_mib"] <= e)
            gaps.append((prov["argmax_before_repair"]["size_mib"] - e) / e)
            if quiet(["finetune", str(out / "arch.json"), "--weights", str(out / "weights.pt"), "--data", "digits",
                      "--epochs", "3", "--batch-size", "32", "--out", str(out / "ft")]) == 0:
                accuracy.append(json.loads((out / "ft" / "result.json").read_text())["val_accuracy"])
        print(f"  {label:<32} argmax meets e*: {sum(met)}/{len(met)}  argmax (E-e*)/e* mean {statistics.mean(gaps):+.2%}  "
              f"finetuned digits accuracy {statistics.mean(accuracy):.4f} (n={len(accuracy)})")


STEP_SCRIPT = r"""
import json, resource, sys, time, torch
torch.set_num_threads(1)
from onnxnas.data import synthetic, digits
from onnxnas.search.distributed import DistContext
from onnxnas.search.methods.udc import constraints_for
from onnxnas.search.udc.config import UdcConfig
from onnxnas.search.udc.supernet import UdcSupernet
from onnxnas.search.udc.trainer import UdcTrainer
from onnxnas.space import load_space
space_name, samples, classes, steps, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
space = load_space(space_name)
data = digits(space.resolution) if classes == 10 and space_name == "tiny-udc" else synthetic(space.resolution, num_classes=classes, samples=batch * steps * samples * 2)
torch.manual_seed(0)
net = UdcSupernet(space, data.num_classes)
cfg = UdcConfig(epochs=2, warmup_epochs=0, target_size_mib=1e3, mc_samples=samples, batch_size=batch, max_batches=steps * samples)
trainer = UdcTrainer(cfg, net, constraints_for(cfg, space, net, data.num_classes, None), data.train, DistContext())
trainer.run_epoch()  # includes the ranges' init and warm caches
start, cpu = time.perf_counter(), time.process_time()
trainer.run_epoch()
n = trainer.n_steps
print(json.dumps({"steps": n, "wall_s": (time.perf_counter() - start) / n, "cpu_s": (time.process_time() - cpu) / n,
                  "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

PRUNET_SCRIPT = r"""
import json, sys, time, torch
torch.set_num_threads(1)
sys.path.insert(0, "tests")
from search_fixtures import synthetic_table
from onnxnas.data import digits
from onnxnas.search.config import PrunetConfig
from onnxnas.search.distributed import DistContext
from onnxnas.search.latency import SpaceLatency
from onnxnas.search.supernet import Supernet
from onnxnas.search.trainer import SearchTrainer
from onnxnas.space import load_space
space = load_space("tiny"); data = digits(space.resolution)
torch.manual_seed(0)
net = Supernet(space, SpaceLatency(synthetic_table(space), space, 10), 10)
trainer = SearchTrainer(PrunetConfig(epochs=3, warmup_epochs=1, batch_size=16, max_batches=int(sys.argv[1])), net, data.train, DistContext(), torch.device("cpu"))
trainer.run_epoch(); trainer.run_epoch()
line = trainer.metrics[-1]
print(json.dumps({"steps": trainer.n_batches, "cpu_s": line["epoch_cpu_s"] / trainer.n_batches, "wall_s": line["epoch_time_s"] / trainer.n_batches}))
"""


def _sub(script: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def cost() -> None:
    print("== cost: one search step (batch 16 per sample), 1 thread")
    prunet = _sub(PRUNET_SCRIPT, "8")
    print(f"  prunet on tiny (one batch, 2-path Prunodes): cpu {prunet.get('cpu_s', float('nan')):.3f} s/step  {prunet}")
    for s in (1, 4, 16):
        r = _sub(STEP_SCRIPT, "tiny-udc", str(s), "10", "2", "16")
        ratio = r.get("cpu_s", float("nan")) / prunet.get("cpu_s", float("nan"))
        print(f"  udc on tiny-udc S={s:<2}: cpu {r.get('cpu_s', float('nan')):.3f} s/step ({ratio:.1f}x prunet's step; "
              f"{r.get('cpu_s', float('nan')) / s:.3f} s per sample)  {r}")
    r = _sub(STEP_SCRIPT, "mbv2", "1", "1000", "2", "8")
    print(f"  udc on mbv2 224x224, 1000 classes, S=1, batch 8: {r}")


def e2e(work: Path, lut: Path | None) -> None:
    import onnxruntime as ort

    from onnxnas.data import load_data

    print("== e2e: tiny-udc/digits, e* = 16 KiB: search 10 epochs -> finetune 6 -> finalize int8 -> verify")
    out = work / "e2e"
    extra = ["--lut", str(lut), "--target-latency-us", "400"] if lut else []
    prov = search(out, TINY + ["--pi-lr", "0.02"] + extra, "16KiB", 0, 10)
    assert prov is not None
    for fmt in ("shifted", "grid"):  # grid last: it is the one finalized
        quiet(["finetune", str(out / "arch.json"), "--weights", str(out / "weights.pt"), "--data", "digits", "--epochs",
               "6", "--number-format", fmt, "--out", str(out / "ft")])
        result = json.loads((out / "ft" / "result.json").read_text())
        print(f"  finetune --number-format {fmt}: shipped weights {result['val_accuracy']:.4f}, training format "
              f"{result['val_accuracy_training_format']:.4f}")
    finalize = ["finalize", str(out / "arch.json"), "--weights", str(out / "ft" / "weights.pt"), "--precision", "int8",
                "--calib-data", "digits", "--out", str(out / "deploy")] + (["--lut", str(lut)] if lut else [])
    quiet(finalize)
    quiet(["verify", str(out / "deploy")])
    manifest = json.loads((out / "deploy" / "manifest.json").read_text())
    data = load_data("digits", 32)
    session = ort.InferenceSession(str(out / "deploy" / "model.onnx"), providers=["CPUExecutionProvider"])
    correct = sum(int(np.argmax(session.run(None, {"input": x[None].numpy()})[0]) == int(y)) for x, y in data.val)
    size = manifest["size"]["compressed"]
    print(f"  arch: depth {load_arch(out / 'arch.json').depth}, exact {prov['exact']}, repair moves {len(prov['repair'])}")
    print(f"  accuracy (grid): finetuned PyTorch {result['val_accuracy']:.4f}, shipped ONNX int8 {correct / len(data.val):.4f}")
    print(f"  size: bound {size['bound_bytes']} B, coded {size['coded_bytes']} B ({size['coded_bytes'] / size['bound_bytes'] - 1:+.2%}), "
          f"entropy-coded {size['entropy_coded_bytes']} B, int8+mask {size['int8_mask_bytes']} B, ONNX {manifest['size']['onnx_bytes']} B")
    print(f"  latency: predicted {manifest['latency']['lut']}, measured {manifest['latency']['measured']}")
    from onnxnas.deploy.checkpoint import load_checkpoint
    from onnxnas.search.udc.coded import coded_size

    arch = load_arch(out / "arch.json")
    shipped = load_checkpoint(out / "ft" / "weights.pt")
    rows = coded_size(arch, shipped.state_dict, shipped.quantizers.get("quant_ranges")).rows
    print("  per layer: bound bits / coded payload bits (mask + values)")
    for name, (bound, coded) in rows.items():
        print(f"    {name:<12} {bound:>10.0f} {coded:>10d}  {coded / bound - 1:+.2%}" if bound else f"    {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", default="all", choices=("guarantee", "ablation", "cost", "e2e", "all"))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--lut", type=Path, default=None, help="int8 table of tiny-udc for the e2e latency")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--pi-lr", default="0.05", help="short CPU runs need a faster pi than the paper's 1e-3")
    parser.add_argument("--spaces", default="both", choices=("tiny-udc", "mbv2", "both"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_udc."))
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if args.what in ("guarantee", "all"):
        guarantee(work, args.seeds, args.pi_lr, args.spaces)
    if args.what in ("ablation", "all"):
        ablation(work, min(args.seeds, 3), args.pi_lr)
    if args.what in ("cost", "all"):
        cost()
    if args.what in ("e2e", "all"):
        e2e(work, args.lut)
    print(f"(ran in {time.perf_counter() - start:.0f} s; peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB; work in {work})")


if __name__ == "__main__":
    main()
