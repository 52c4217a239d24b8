"""Two pictures of a search: its curves, and the found network drawn as the PruNet paper does
(one box per layer, width proportional to the expansion ratio, shaded for kernel 5, a thick
border for SE, a thin dashed box for a skipped layer)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from onnxnas.arch import Arch  # noqa: E402
from onnxnas.fileio import atomic_write_bytes  # noqa: E402


def _save(fig: Any, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def plot_search_curves(metrics: list[dict[str, Any]], path: Path) -> Path:
    """Losses, LAT, pruning threshold and live blocks per epoch."""
    epochs = [m["epoch"] for m in metrics]
    search = [m for m in metrics if m["arch_loss"] is not None]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    ax = axes[0][0]
    ax.plot(epochs, [m["train_ce"] for m in metrics], label="train CE (weight steps)")
    ax.plot([m["epoch"] for m in search], [m["arch_loss"] for m in search], label="search loss (arch steps)")
    ax.set(title="losses", xlabel="epoch")
    ax.legend()
    ax = axes[0][1]
    ax.plot(epochs, [m["lat_us"] for m in metrics], label="expected LAT")
    ax.plot([m["epoch"] for m in search], [m["sampled_lat_us"] for m in search], label="sampled LAT (mean)")
    ax.set(title="predicted latency", xlabel="epoch", ylabel="µs")
    ax.legend()
    ax = axes[1][0]
    ax.plot([m["epoch"] for m in search], [m["threshold"] for m in search], marker="o")
    ax.set(title="pruning threshold t(e)", xlabel="epoch", ylim=(0, 1))
    ax = axes[1][1]
    for layer in range(len(metrics[0]["alive"])):
        ax.plot(epochs, [len(m["alive"][layer]) for m in metrics], label=f"layer {layer}")
    ax.set(title="live blocks per layer", xlabel="epoch")
    ax.legend(fontsize="small", ncol=2)
    fig.tight_layout()
    return _save(fig, path)


def plot_arch(arch: Arch, path: Path) -> Path:
    """The network left to right: stem, layers, head."""
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * (len(arch.layers) + 2)), 3.2))
    x = 0.0
    boxes = [("stem", arch.stem, 1.0)]
    boxes += [(f"L{i}", layer, (layer.hidden_chs / layer.in_chs) if layer.hidden_chs else 1.0)
              for i, layer in enumerate(arch.layers)]
    for name, layer, ratio in boxes:
        width = 0.25 + 0.35 * ratio
        skip = layer.type == "skip"
        face = "white" if skip else ("#4a7ab0" if layer.kernel_size >= 5 else "#b9d0ea")
        ax.add_patch(Rectangle((x, 0), width, 1, facecolor=face, edgecolor="black",
                               linewidth=3.0 if layer.se else 1.0, linestyle="--" if skip else "-"))
        label = "skip" if skip else f"{layer.type}\nk{layer.kernel_size}" + (f"\ne{ratio:.2g}" if layer.hidden_chs else "")
        ax.text(x + width / 2, 0.5, label, ha="center", va="center", fontsize=7)
        ax.text(x + width / 2, -0.12, f"{name}\n{layer.out_chs}ch", ha="center", va="top", fontsize=7)
        x += width + 0.15
    ax.add_patch(Rectangle((x, 0), 0.6, 1, facecolor="#dddddd", edgecolor="black"))
    ax.text(x + 0.3, 0.5, f"head\n{arch.head.hidden_chs}\nFC {arch.head.num_classes}", ha="center", va="center", fontsize=7)
    latency = arch.provenance.get("predicted_latency_us")
    title = f"{arch.space}: depth {arch.depth}" + (f", predicted {latency:.0f} µs" if latency else "")
    ax.set(xlim=(-0.1, x + 0.7), ylim=(-0.5, 1.2), title=title + "\n(width ∝ expansion, dark = k5, thick border = SE)")
    ax.axis("off")
    return _save(fig, path)
