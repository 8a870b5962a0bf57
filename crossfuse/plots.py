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


def new_figure(figsize: tuple[float, float]):
    """A new ``(figure, axes)`` pair of ``figsize`` inches."""
    return plt.subplots(figsize=figsize)


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
