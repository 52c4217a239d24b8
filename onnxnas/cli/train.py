"""`onnxnas train`: retrain an arch.json from scratch and report its accuracy.

Without ``--out`` a run goes to ``<arch folder>/train/seed<k>/``, so seeds sit side by
side; a folder that already holds a finished run (its ``result.json``) is refused, never
overwritten, and one run at a time may write a folder (a lock held for the whole run).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from onnxnas.arch import check_fits_space, load_arch
from onnxnas.cli.options import (MAX_BATCH, MAX_BATCHES, MAX_EPOCHS, SEED, add_arch_space_option, bounded_int,
                                 finite_float)
from onnxnas.data import load_data
from onnxnas.errors import OnnxNasError
from onnxnas.fileio import atomic_write_json
from onnxnas.lock import exclusive_output
from onnxnas.search.checkpoint import save_weights
from onnxnas.search.metrics import write_metrics
from onnxnas.space import load_space
from onnxnas.train import TrainConfig, evaluate, train_arch

_DEFAULTS = TrainConfig()
RESULT_FILE = "result.json"
LOCK_SUFFIX = ".onnxnas-train.lock"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="retrain an arch.json from scratch and report accuracy")
    parser.add_argument("arch", help="arch.json (from 'onnxnas search')")
    parser.add_argument("--data", default="digits", help="digits, synthetic, or an ImageFolder directory (default: %(default)s)")
    add_arch_space_option(parser)
    parser.add_argument("--out", default=None, help="folder for weights.pt, metrics.jsonl, result.json; must not hold a finished run "
                        "(default: <arch folder>/train/seed<SEED>)")
    parser.add_argument("--epochs", type=bounded_int(1, MAX_EPOCHS), default=_DEFAULTS.epochs, help="(default: %(default)s)")
    parser.add_argument("--batch-size", type=bounded_int(1, MAX_BATCH), default=_DEFAULTS.batch_size, help="(default: %(default)s)")
    parser.add_argument("--lr", type=finite_float(0, 10, low_open=True), default=_DEFAULTS.lr, help="SGD learning rate, cosine decay (default: %(default)s)")
    parser.add_argument("--weight-decay", type=finite_float(0, 1), default=_DEFAULTS.weight_decay, help="(default: %(default)s)")
    parser.add_argument("--label-smoothing", type=finite_float(0, 0.99), default=_DEFAULTS.label_smoothing, help="(default: %(default)s)")
    parser.add_argument("--max-batches", type=bounded_int(1, MAX_BATCHES), default=None, help="cap on batches per epoch (smoke tests)")
    parser.add_argument("--seed", type=SEED, default=_DEFAULTS.seed, help="(default: %(default)s)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                      label_smoothing=args.label_smoothing, max_batches=args.max_batches, seed=args.seed).validate()
    arch = load_arch(args.arch)
    check_fits_space(arch, load_space(args.space or arch.space), str(args.arch))
    out = Path(args.out) if args.out else Path(args.arch).parent / "train" / f"seed{cfg.seed}"
    check_out(out)  # found now, not after the training it would throw away
    with exclusive_output(out.parent / f".{out.name}{LOCK_SUFFIX}", "training run"):  # beside: a failed run leaves no --out
        check_out(out)  # a run that finished while this one waited to start
        data = load_data(args.data, arch.resolution, arch.in_chs)
        model, history = train_arch(arch, data, cfg)
        device = next(model.parameters()).device
        save_weights(out / "weights.pt", arch, {k: v.cpu() for k, v in model.state_dict().items()}, {})
        write_metrics(out / "metrics.jsonl", history)
        result = {"arch": str(args.arch), "arch_hash": arch.hash, "dataset": data.name,
                  "split": {"train": len(data.train), "val": len(data.val), "test": len(data.test)},
                  "val_accuracy": history[-1]["val_accuracy"], "test_accuracy": evaluate(model, data.test, device),
                  "epochs": cfg.epochs, "seed": cfg.seed}
        atomic_write_json(out / RESULT_FILE, result)
    print(f"{args.arch}: val accuracy {result['val_accuracy']:.4f}, test accuracy {result['test_accuracy']:.4f} on "
          f"{data.name} after {cfg.epochs} epochs (seed {cfg.seed}) -> {out}")
    return 0


def check_out(out: Path) -> None:
    """Refuse a file, or a folder that holds a finished run: a second seed must never overwrite the first."""
    if out.exists() and not out.is_dir():
        raise OnnxNasError("--out exists and is not a folder", where=str(out), fix="pass a folder path")
    if (out / RESULT_FILE).exists():
        raise OnnxNasError(f"holds a finished training run ({RESULT_FILE}); it is not overwritten", where=str(out),
                           fix="pass another --out (or --seed), or delete the folder to rerun it")
