"""Missing-modality matrix: the trained model scored with only a subset of modalities present.

For every non-empty subset of the model's modalities, the others are marked absent on
the whole test split (so the head sees their learned placeholders, exactly as for a
sample that lacks them) and the test metrics are recomputed. The model is trained
once; nothing is retrained.

Example
-------
>>> rows = subset_metrics(head, fs)                        # doctest: +SKIP
>>> [(r["subset"], round(r["macro_f1"], 2)) for r in rows]  # doctest: +SKIP
[('image', 0.39), ('text', 0.30), ('image+text', 1.0)]
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np

from crossfuse.features.store import FeatureSet
from crossfuse.fusion import FusionHead
from crossfuse.metrics import predict_split
from crossfuse.plots import new_figure, save_figure


def subsets(modalities: list[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset, smallest first: ``['a', 'b'] -> [('a',), ('b',), ('a', 'b')]``.

    >>> subsets(["image", "text"])
    [('image',), ('text',), ('image', 'text')]
    """
    return [c for k in range(1, len(modalities) + 1) for c in combinations(modalities, k)]


def subset_metrics(head: FusionHead, fs: FeatureSet, split: str = "test") -> list[dict]:
    """Accuracy and macro-F1 on ``split`` for each subset of modalities kept present."""
    modalities = list(head.spec.dims)
    inputs = fs.split_inputs(split, modalities, head.spec.token_inputs)
    rows = []
    for kept in subsets(modalities):
        masked = {m: p if m in kept else p & False for m, p in inputs.present.items()}
        scores = predict_split(head, inputs.replace(present=masked))
        rows.append({"subset": "+".join(kept), "accuracy": scores.accuracy,
                     "macro_f1": scores.macro_f1})
    return rows


def plot_subset_heatmap(rows: list[dict], path: Path, title: str = "modalities present") -> None:
    """Heatmap: one row per subset, columns accuracy and macro-F1, values written in the cells."""
    values = np.array([[r["accuracy"], r["macro_f1"]] for r in rows])
    fig, ax = new_figure((4.5, 0.6 * len(rows) + 1.5))
    ax.imshow(values, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks([0, 1], ["accuracy", "macro-F1"])
    ax.set_yticks(range(len(rows)), [r["subset"] for r in rows])
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            ax.text(j, i, f"{values[i, j]:.3f}", ha="center", va="center",
                    color="white" if values[i, j] < 0.6 else "black")
    ax.set_title(title)
    save_figure(fig, path)
