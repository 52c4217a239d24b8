"""The pictures of a UDC run: per-layer bits, non-zero fraction and width of the found arch (the
paper's Fig. 4 as bars), and each constrained cost against the search steps with e* and ê marked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from onnxnas.arch import Arch, load_arch
from onnxnas.errors import OnnxNasError
from onnxnas.fileio import parse_json, read_text
from onnxnas.plot import _save, plt
from onnxnas.schema import MAX_LIST, Fields
from onnxnas.search.metrics import MAX_METRICS_BYTES

LABELS = {"size_mib": "size bound (MiB)", "latency_us": "LUT latency (us)"}


def read_udc_metrics(path: Path) -> list[dict[str, Any]] | None:
    """The lines of a UDC search's metrics.jsonl, checked; None when the file is another method's."""
    text = read_text(path, "metrics file", MAX_METRICS_BYTES)
    lines = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{path}:{number}"
        f = Fields(parse_json(raw, "metrics line", where), "$", where)
        if f.get("method", None) != "udc":
            if not lines:
                return None
            raise f.fail("method", "expected 'udc' like the lines before it", fix="pass the metrics.jsonl of one search")
        line = {"epoch": f.integer("epoch", high=2**31), "steps": f.integer("steps", high=MAX_LIST),
                "targets": f.object("targets").data, "sampled": f.object("sampled").data}
        for name, target in line["targets"].items():
            sampled = line["sampled"].get(name)
            if not isinstance(target, (int, float)) or not isinstance(sampled, list) or len(sampled) > MAX_LIST \
                    or not all(isinstance(v, (int, float)) for v in sampled):
                raise f.fail("sampled", f"expected a list of numbers for {name!r}")
        lines.append(line)
    if not lines:
        raise OnnxNasError("metrics file has no epochs", where=str(path), fix="run (or resume) the search until an epoch finishes")
    return lines


def plot_udc_costs(metrics: list[dict[str, Any]], margin: float, path: Path) -> Path:
    """Each constraint's sampled cost per step (mean over the MC samples), with e* and ê = e*(1 - margin)."""
    names = list(metrics[0]["targets"])
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        values = [v for m in metrics for v in m["sampled"][name]]
        target = metrics[0]["targets"][name]
        ax.plot(range(1, len(values) + 1), values, label="sampled E(z), mean of the MC samples")
        ax.axhline(target, color="red", label="e* (target)")
        ax.axhline(target * (1 - margin), color="red", linestyle="--", label="ê = e*(1 - margin)")
        ax.set(title=LABELS.get(name, name), xlabel="search step")
        ax.legend()
    return _save(fig, path)


def plot_udc_arch(arch: Arch, path: Path) -> Path:
    """Bars per layer: weight bits, non-zero fraction, width fraction; skipped layers marked."""
    names = [f"{i}:{layer.type}" for i, layer in enumerate(arch.layers)]
    kept = [layer.type != "skip" for layer in arch.layers]
    rows = (("weight bits", [layer.weight_bits if k else 0 for layer, k in zip(arch.layers, kept)]),
            ("non-zero fraction", [layer.nonzero_fraction if k else 0 for layer, k in zip(arch.layers, kept)]),
            ("width fraction", [layer.width_fraction if k else 0 for layer, k in zip(arch.layers, kept)]))
    fig, axes = plt.subplots(3, 1, figsize=(max(6, 0.5 * len(names)), 8), sharex=True)
    for ax, (title, values) in zip(axes, rows):
        ax.bar(range(len(values)), values, color=["tab:blue" if k else "lightgray" for k in kept])
        ax.set(ylabel=title)
    axes[-1].set_xticks(range(len(names)), [n if k else f"{n} (skip)" for n, k in zip(names, kept)], rotation=60, ha="right")
    axes[0].set_title("found arch (gray: skipped)")
    return _save(fig, path)


def plot_udc_run(folder: Path, metrics: list[dict[str, Any]], out: Path) -> list[Path]:
    arch_path = folder / "arch.json"
    arch = load_arch(arch_path) if arch_path.exists() else None
    margin = float(arch.provenance.get("hyperparameters", {}).get("size_margin", 0.02)) if arch else 0.02
    written = [plot_udc_costs(metrics, margin, out / "udc_costs.png")]
    if arch is not None:
        written.append(plot_udc_arch(arch, out / "udc_arch.png"))
    return written
