"""One figure writer: every chart crossfuse saves is made and written through here.

Matplotlib runs headless (the Agg backend: pipeline steps have no display). A figure
is laid out tightly, written atomically (:mod:`crossfuse.atomic`) and closed, so a
long run does not keep figures in memory and a reader never sees half a PNG.

Example
-------
>>> import tempfile
>>> fig, ax = new_figure((3, 2))
>>> _ = ax.plot([0, 1], [1, 0])
>>> path = save_figure(fig, Path(tempfile.mkdtemp()) / "line.png")
>>> path.stat().st_size > 0
True
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)
import numpy as np  # noqa: E402

from crossfuse.atomic import atomic_path  # noqa: E402


def new_figure(figsize: tuple[float, float], ncols: int = 1):
    """A new ``(figure, axes)`` pair of ``figsize`` inches (``ncols`` > 1: an array of axes)."""
    return plt.subplots(1, ncols, figsize=figsize)


def save_figure(fig, path: Path, dpi: int = 100) -> Path:
    """Lay ``fig`` out tightly, write it to ``path`` atomically (format from the suffix), close it."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    return Path(path)


def plot_confusion(cm: np.ndarray, labels: list[str], path: Path, title: str) -> Path:
    """Save a labelled confusion-matrix heatmap (rows = true, columns = predicted)."""
    size = max(4.0, 0.6 * len(labels) + 2)
    fig, ax = new_figure((size, size))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    # Wrapped to the figure's width: a long title was cut off at the edges.
    ax.set_title("\n".join(textwrap.wrap(title, width=int(size * 7))), fontsize=9)
    threshold = cm.max() / 2 if cm.size else 0
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > threshold else "black", fontsize=8)
    return save_figure(fig, path)


GAIN_COLOURS = {"gain": "#1a7f37", "loss": "#cf222e", "single": "#8c959f"}


def plot_fused_vs_single(fused: tuple[str, float], singles: dict[str, float], path: Path,
                         metric: str = "test macro-F1") -> Path:
    """Bars: the fused model beside each single-modality model on the same test split.

    The fused bar is green when it beats the best single modality and red when it
    does not; the title states the gain.

    >>> import tempfile
    >>> p = plot_fused_vs_single(("mfb", 0.80), {"text": 0.85, "image": 0.6},
    ...                          Path(tempfile.mkdtemp()) / "g.png")
    >>> p.stat().st_size > 0
    True
    """
    best = max(singles.values()) if singles else float("nan")
    gain = fused[1] - best
    names = [f"model\n({fused[0]})"] + [f"{m} only" for m in singles]
    values = [fused[1], *singles.values()]
    colours = [GAIN_COLOURS["gain" if gain > 0 else "loss"]] + [GAIN_COLOURS["single"]] * len(singles)
    fig, ax = new_figure((1.4 * len(names) + 2.5, 3.2))
    bars = ax.bar(range(len(names)), values, color=colours)
    ax.set_xticks(range(len(names)), names, fontsize=9)
    ax.bar_label(bars, labels=[f"{v:.3f}" for v in values], fontsize=9)
    ax.set_ylim(0, min(1.08, max(values) * 1.15 + 0.02))
    ax.set_ylabel(metric)
    verdict = f"fusion gain {gain:+.3f} over the best single modality"
    ax.set_title(verdict, fontsize=10, color=colours[0])
    return save_figure(fig, path)


def plot_training_curves(history: list[dict[str, float]], best_epoch: int, path: Path) -> Path:
    """Loss (train, validation) and validation macro-F1 per epoch; the kept epoch marked.

    >>> import tempfile
    >>> rows = [{"epoch": 1, "train_loss": 1.0, "val_loss": 0.9, "val_macro_f1": 0.5},
    ...         {"epoch": 2, "train_loss": 0.7, "val_loss": 0.8, "val_macro_f1": 0.6}]
    >>> plot_training_curves(rows, 2, Path(tempfile.mkdtemp()) / "c.png").stat().st_size > 0
    True
    """
    epochs = [row["epoch"] for row in history]
    fig, (loss_ax, score_ax) = new_figure((8.5, 3.0), ncols=2)
    for key, style in (("train_loss", "-"), ("val_loss", "--")):
        loss_ax.plot(epochs, [row[key] for row in history], style, label=key.replace("_", " "))
    score_ax.plot(epochs, [row["val_macro_f1"] for row in history], color="#0969da")
    for ax, label in ((loss_ax, "loss"), (score_ax, "validation macro-F1")):
        ax.axvline(best_epoch, color="#8c959f", linestyle=":", label=f"kept: epoch {best_epoch}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
    loss_ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_predictions(labels: list[str], predicted: np.ndarray, confidence: np.ndarray,
                     path: Path) -> Path:
    """Two panels for a scored batch: rows per predicted class, and how confident the
    (calibrated) predictions are.

    ``predicted``: class ids ``[N]``; ``confidence``: the predicted class's probability ``[N]``.

    >>> import tempfile
    >>> p = plot_predictions(["a", "b"], np.array([0, 1, 1]), np.array([0.9, 0.6, 0.55]),
    ...                      Path(tempfile.mkdtemp()) / "p.png")
    >>> p.stat().st_size > 0
    True
    """
    counts = np.bincount(np.asarray(predicted, dtype=int), minlength=len(labels))
    fig, (left, right) = new_figure((max(7.0, 0.5 * len(labels) + 5.0), 3.2), ncols=2)
    left.bar(range(len(labels)), counts, color=GAIN_COLOURS["single"])
    left.set_xticks(range(len(labels)), labels, rotation=45 if len(labels) > 4 else 0,
                    ha="right" if len(labels) > 4 else "center", fontsize=8)
    left.set_ylabel("rows")
    left.set_title("predicted class", fontsize=10)
    right.hist(confidence, bins=np.linspace(0, 1, 21), color=GAIN_COLOURS["single"])
    right.set_xlabel("calibrated probability of the predicted class", fontsize=9)
    right.set_ylabel("rows")
    right.set_title("confidence", fontsize=10)
    return save_figure(fig, path)
