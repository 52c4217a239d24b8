"""Pictures of a filter-level run (the paper's Figs. 1 and 2): per conv the filter groups as stacked
bars coloured by op, and the candidates' BOPs against validation accuracy beside the homogeneous ones."""

from __future__ import annotations

from pathlib import Path
from onnxnas.arch import Arch
from onnxnas.errors import OnnxNasError
from onnxnas.fileio import read_json
from onnxnas.plot import _save, plt
from onnxnas.schema import Fields

CANDIDATES_FILE = "candidates.json"


def is_filterlevel_run(folder: Path) -> bool:
    return (folder / CANDIDATES_FILE).is_file()


def plot_filter_groups(arch: Arch, path: Path) -> Path:
    """One stacked bar per searched conv: filters per (weight:act) op."""
    rows = [(f"{where}.{conv}", groups) for where, spec in
            [("stem", arch.stem), *((f"L{i}", s) for i, s in enumerate(arch.layers)), ("head", arch.head)]
            for conv, groups in spec.filter_groups]
    if not rows:
        raise OnnxNasError("the arch has no filter_groups", where="arch.json", fix="plot a filterlevel search's folder")
    ops = sorted({(g.weight_bits, g.act_bits) for _, groups in rows for g in groups})
    colours = {op: plt.cm.viridis(i / max(1, len(ops) - 1)) for i, op in enumerate(ops)}
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(rows)), 4))
    for x, (_, groups) in enumerate(rows):
        bottom = 0
        for g in groups:
            ax.bar(x, g.filters, bottom=bottom, color=colours[(g.weight_bits, g.act_bits)])
            bottom += g.filters
    for op, colour in colours.items():
        ax.bar(0, 0, color=colour, label=f"{op[0]}:{op[1]}")
    ax.set_xticks(range(len(rows)), [name for name, _ in rows], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("filters")
    ax.set_title("filter groups per conv (weight:activation bits)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def _points(f: Fields, name: str) -> list[tuple[float, float, str]]:
    points = []
    for i, item in enumerate(f.list(name)):
        c = Fields(item, f"{f.at(name)}[{i}]", f.source)
        acc = c.get("val_acc", None)
        if acc is not None:
            points.append((c.number("bops", low=0), c.number("val_acc", low=0, high=1), c.string("source")))
    return points


def plot_bops_accuracy(folder: Path, path: Path) -> Path:
    """The priced candidates (within the budget) and the homogeneous configurations, BOPs against top-1."""
    source = folder / CANDIDATES_FILE
    f = Fields(read_json(source, "candidates file"), "$", str(source))
    target = f.number("target_bops", low=0)
    fig, ax = plt.subplots(figsize=(6, 4))
    found = _points(f, "candidates")
    homogeneous = _points(f, "homogeneous")
    ax.scatter([b for b, _, _ in found], [a for _, a, _ in found], label="searched (in budget)", marker="o")
    ax.scatter([b for b, _, _ in homogeneous], [a for _, a, _ in homogeneous], label="homogeneous", marker="s")
    for b, a, name in homogeneous:
        ax.annotate(name.replace("homogeneous ", ""), (b, a), fontsize=7)
    ax.axvline(target, color="grey", linestyle="--", label="budget")
    ax.set_xscale("log")
    ax.set_xlabel("BOPs")
    ax.set_ylabel("validation top-1 (shared weights)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def plot_run(folder: Path, arch: Arch, out: Path) -> list[Path]:
    return [plot_filter_groups(arch, out / "filter_groups.png"), plot_bops_accuracy(folder, out / "bops_accuracy.png")]

