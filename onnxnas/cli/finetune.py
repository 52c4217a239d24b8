"""`onnxnas finetune`: UDC's three-stage compression finetune of a searched arch (docs/design.md §7)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from onnxnas.arch import Arch, check_fits_space, load_arch
from onnxnas.blocks import build_model
from onnxnas.cli.options import (MAX_BATCH, MAX_BATCHES, MAX_EPOCHS, SEED, add_arch_space_option, bounded_int,
                                 finite_float)
from onnxnas.data import load_data
from onnxnas.deploy.checkpoint import load_checkpoint
from onnxnas.errors import OnnxNasError
from onnxnas.fileio import atomic_write_json, file_sha256
from onnxnas.finetune import NUMBER_FORMATS, FinetuneConfig, FinetuneTrainer, check_finetune_fields
from onnxnas.lock import exclusive_output
from onnxnas.search.checkpoint import load_search_state, save_weights
from onnxnas.search.distributed import DistContext
from onnxnas.search.loop import CHECKPOINTS, LOCK_FILE, check_config, restore, train_until
from onnxnas.space import load_space
from onnxnas.train import evaluate

_DEFAULTS = FinetuneConfig()


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("finetune", help="UDC's quantize / prune / both finetune of a searched arch")
    parser.add_argument("arch", help="arch.json with weight_bits / nonzero_fraction (from 'onnxnas search --method udc')")
    parser.add_argument("--weights", required=True, help="the search's weights.pt (theta)")
    parser.add_argument("--data", default="digits", help="digits, synthetic, or an ImageFolder directory (default: %(default)s)")
    add_arch_space_option(parser)
    parser.add_argument("--out", default=None, help="folder for weights.pt, metrics.jsonl, result.json and checkpoints/last.pt (default: <arch folder>/finetune)")
    parser.add_argument("--epochs", type=bounded_int(3, MAX_EPOCHS), default=_DEFAULTS.epochs,
                        help="total epochs, split 50/30/20%% over the three stages (default: %(default)s)")
    parser.add_argument("--quant-noise", type=finite_float(0, 1), default=_DEFAULTS.quant_noise,
                        help="stage 1: probability that an element is quantized (default: %(default)s)")
    parser.add_argument("--number-format", choices=NUMBER_FORMATS, default=_DEFAULTS.number_format,
                        help="stage 3: 'grid' trains what ships (exact deploy); 'shifted' is UDC's Q^ with beta, whose "
                             "values no b-bit grid holds (exported without the shift) (default: %(default)s)")
    parser.add_argument("--lr", type=finite_float(0, 10, low_open=True), default=_DEFAULTS.lr,
                        help="SGD learning rate; annealed to 0 in stage 3 (default: %(default)s)")
    parser.add_argument("--batch-size", type=bounded_int(1, MAX_BATCH), default=_DEFAULTS.batch_size, help="(default: %(default)s)")
    parser.add_argument("--max-batches", type=bounded_int(1, MAX_BATCHES), default=None, help="cap on batches per epoch (smoke tests)")
    parser.add_argument("--seed", type=SEED, default=_DEFAULTS.seed, help="(default: %(default)s)")
    parser.add_argument("--resume", action="store_true", help="continue the finetune in --out after its last epoch")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = FinetuneConfig(epochs=args.epochs, quant_noise=args.quant_noise, lr=args.lr, batch_size=args.batch_size,
                         max_batches=args.max_batches, seed=args.seed, number_format=args.number_format)
    cfg.stage_epochs()
    arch = load_arch(args.arch)
    check_fits_space(arch, load_space(args.space or arch.space), str(args.arch))
    if not any(layer.is_compressed for layer in arch.layers):
        raise OnnxNasError("no layer has weight_bits < 32 or nonzero_fraction < 1: there is nothing to finetune",
                           where=str(args.arch), fix="pass an arch from 'onnxnas search --method udc'")
    out = Path(args.out) if args.out else Path(args.arch).parent / "finetune"
    if out.exists() and not out.is_dir():
        raise OnnxNasError("--out exists and is not a folder", where=str(out), fix="pass a folder path")
    checkpoint = load_checkpoint(args.weights)
    data = load_data(args.data, arch.resolution, arch.in_chs)
    trainer = FinetuneTrainer(arch, checkpoint, data, cfg, file_sha256(args.weights))
    last, ctx = out / CHECKPOINTS / "last.pt", DistContext()  # finetune runs in one process
    with exclusive_output(out / LOCK_FILE, "finetune output"):
        if last.exists() and not args.resume:
            raise OnnxNasError("holds a started finetune", where=str(out),
                               fix="pass --resume to continue it, or choose a new --out")
        if args.resume:
            if not last.exists():
                raise OnnxNasError("has no finetune checkpoint to resume", where=str(out),
                                   fix="drop --resume to start a new finetune")
            state = load_search_state(last, MAX_EPOCHS, check_finetune_fields)  # check_config names --epochs
            check_config(state["config"], trainer.config, last, FinetuneConfig.FLAGS)
            restore(trainer, state, last)
        train_until(trainer, cfg.epochs, last, out / "metrics.jsonl", "finetune", ctx,
                    nan_fix="lower --lr and start over in a new --out", job="finetune")
        _write_outputs(args, arch, trainer, out)
    return 0


def _write_outputs(args: argparse.Namespace, arch: Arch, trainer: FinetuneTrainer, out: Path) -> None:
    """weights.pt on the trained grids, and result.json with the shipped and the training-format accuracy."""
    cfg, data, net, history = trainer.cfg, trainer.data, trainer.net, trainer.metrics
    deployed = net.deployed_state_dict()
    shipped = build_model(arch)
    shipped.load_state_dict(deployed)
    shipped_accuracy = evaluate(shipped, data.val, torch.device("cpu"))
    save_weights(out / "weights.pt", arch, deployed, {}, {"quant_ranges": net.quant_ranges()})
    result = {"arch": str(args.arch), "arch_hash": arch.hash, "dataset": data.name, "epochs": cfg.epochs,
              "stages": list(cfg.stage_epochs()), "quant_noise": cfg.quant_noise,
              "number_format": cfg.number_format,
              "val_accuracy": shipped_accuracy, "val_accuracy_training_format": history[-1]["val_accuracy"],
              "quant_ranges": net.quant_ranges(), "seed": cfg.seed}
    atomic_write_json(out / "result.json", result)
    print(f"{args.arch}: finetuned {cfg.epochs} epochs (stages {'/'.join(map(str, cfg.stage_epochs()))}), val accuracy "
          f"{result['val_accuracy']:.4f} on {data.name} -> {out / 'weights.pt'}")
