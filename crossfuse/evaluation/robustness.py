"""Noise robustness: test scores as one modality gets noisier, 0 (clean) to 1.

Two kinds of noise per modality, each at ``levels`` evenly spaced levels in [0, 1]:

- **features**: Gaussian noise added to the encoded vectors (and token sequences, for
  heads that read them), std = level x that dimension's std on the train split;
- **raw**: noise on the input itself, re-encoded by the model's frozen encoder —
  the modality's own (:mod:`crossfuse.data.modalities`): pixel noise for images (pixels in
  [0, 1], Gaussian std = level, clipped), word dropout for text (each word dropped with
  probability = level; at 1 the text is empty), white noise for audio at an SNR of
  40 x (1 - level) dB (0 dB at 1).

Only the noisy modality changes; the others keep their clean features. Rows lacking
the modality stay missing. Relative robustness is the area under the macro-F1 curve
over [0, 1] (MultiBench, Liang et al. 2021): 1.0 for a perfect model noise cannot hurt.
Noise is seeded by (seed, modality, level): the same run gives the same curves.

Example
-------
>>> rows = feature_noise_rows(head, fs, levels=noise_levels(11), seed=0)   # doctest: +SKIP
>>> robustness_auc(noise_levels(3), [1.0, 0.5, 0.0])
0.5
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from crossfuse import storage
from crossfuse.data.modalities import get_modality
from crossfuse.features.store import FeatureSet
from crossfuse.fusion import FusionHead
from crossfuse.metrics import SplitScores, predict_split
from crossfuse.plots import new_figure, save_figure
from crossfuse.progress import progress


def noise_levels(n: int) -> np.ndarray:
    """``n`` levels evenly spaced from 0 to 1: ``noise_levels(3) -> [0, 0.5, 1]``."""
    return np.linspace(0.0, 1.0, n)


def robustness_auc(levels, scores) -> float:
    """Area under score(level) over [0, 1] (trapezoids), i.e. the mean score across noise."""
    levels = np.asarray(levels, dtype=float)
    return float(np.trapezoid(np.asarray(scores, dtype=float), levels) / (levels[-1] - levels[0]))


def _rng(seed: int, modality: str, level_index: int) -> np.random.Generator:
    return np.random.default_rng([seed, sum(map(ord, modality)), level_index])


def _row(modality: str, kind: str, level: float, scores: SplitScores) -> dict:
    return {"modality": modality, "kind": kind, "level": round(float(level), 6),
            "accuracy": scores.accuracy, "macro_f1": scores.macro_f1}


def _train_std(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Per-dimension std of ``values[keep]`` (last axis), 1 where it cannot be estimated."""
    chosen = values[keep].reshape(-1, values.shape[-1])
    if len(chosen) < 2:
        return torch.ones(values.shape[-1])
    return chosen.std(dim=0).clamp_min(1e-6)


def add_gaussian(values: torch.Tensor, std: torch.Tensor, level: float,
                 rng: np.random.Generator) -> torch.Tensor:
    """``values + level * std * N(0, 1)``; ``std`` broadcasts over the last axis.

    >>> add_gaussian(torch.zeros(2, 3), torch.ones(3), 0.0, np.random.default_rng(0)).abs().sum()
    tensor(0.)
    """
    noise = torch.from_numpy(rng.standard_normal(values.shape).astype(np.float32))
    return values + level * std * noise


def feature_noise_rows(head: FusionHead, fs: FeatureSet, levels: np.ndarray, seed: int
                       ) -> list[dict]:
    """Test accuracy/macro-F1 per (modality, level) with Gaussian noise on that modality's features."""
    modalities = list(head.spec.dims)
    inputs = fs.split_inputs("test", modalities, head.spec.token_inputs)
    x, tokens = inputs.vectors, inputs.tokens
    train_rows = fs.rows("train")
    rows = []
    for m in modalities:
        train_present = fs.present(m)[train_rows]
        vec_std = _train_std(fs.vectors[m][train_rows], train_present)
        if tokens is not None:
            tok, mask = fs.tokens[m][0][train_rows], fs.tokens[m][1][train_rows]
            tok_std = _train_std(tok, mask & train_present[:, None])
        for i, level in enumerate(levels):
            rng = _rng(seed, m, i)
            noisy_x = {**x, m: add_gaussian(x[m], vec_std, level, rng)}
            noisy_tokens = tokens
            if tokens is not None:
                noisy_tokens = {**tokens, m: (add_gaussian(tokens[m][0], tok_std, level, rng),
                                              tokens[m][1])}
            scores = predict_split(head, inputs.replace(vectors=noisy_x, tokens=noisy_tokens))
            rows.append(_row(m, "features", level, scores))
    return rows


def noised_features(predictor, modality: str, clean: list, clean_hashes: list[str],
                    level: float, seed: int, step: int, cache_dir: Path | None,
                    encoder_key: str) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """The encoded features of ``clean`` items with noise at ``level`` (seeded by ``step``).

    The noise is a function of the items (in order), the level and the seed, so its features
    are cached under ``cache_dir/noised`` by a hash of exactly those and ``encoder_key`` (the
    cache key the clean features were made under; the predictor's encoders are placed the
    same way): a re-run that changes only the fusion settings loads no encoder here.
    """
    from crossfuse.atomic import atomic_save
    from crossfuse.hashing import content_hash

    declared = get_modality(modality)
    key = content_hash(json.dumps([encoder_key, declared.noise_kind,
                                   float(level), seed, step, clean_hashes,
                                   predictor.head.spec.token_inputs]))
    path = None if cache_dir is None else Path(cache_dir) / "noised" / f"{key[:32]}.safetensors"
    if path is not None and (path.is_file() or storage.pull(path)):
        from safetensors.torch import load_file

        saved = load_file(str(path))
        tokens = (saved["tokens"], saved["mask"]) if "tokens" in saved else None
        return saved["vectors"], tokens
    rng = _rng(seed, modality, step)
    vectors, tokens = predictor.encode_items(modality, [declared.noise(v, level, rng) for v in clean])
    if path is not None:
        atomic_save({"vectors": vectors, **({"tokens": tokens[0], "mask": tokens[1]}
                                            if tokens is not None else {})}, path)
        storage.push(path)
    return vectors, tokens


def raw_noise_rows(predictor, fs: FeatureSet, samples: pd.DataFrame, preprocessed: Path,
                   levels: np.ndarray, seed: int, max_samples: int,
                   cache_dir: Path | None = None) -> list[dict]:
    """Test scores per (modality, level) with noise on the raw input, re-encoded.

    Parameters
    ----------
    predictor: a :class:`crossfuse.registry.serving.FusionPredictor` of the model (its encoders).
    fs: the feature set (clean features of the other modalities, labels).
    samples: the preprocessed ``samples.parquet`` (texts, image paths), any row order.
    preprocessed: the folder image paths in ``samples`` are relative to.
    max_samples: the first ``max_samples`` test rows are used.
    cache_dir: where the noised inputs' features are kept (:func:`noised_features`); None:
        not kept.
    """
    head, modalities = predictor.head, list(predictor.head.spec.dims)
    test_rows = fs.rows("test")[:max_samples]
    inputs = fs.split_inputs("test", modalities, head.spec.token_inputs).select(
        torch.arange(len(test_rows)))
    x, present, tokens = inputs.vectors, inputs.present, inputs.tokens
    by_id = samples.set_index("id")
    ids = fs.index["id"].iloc[test_rows.numpy()].tolist()
    rows = []
    for m in modalities:
        have = present[m].nonzero().flatten().tolist()
        modality = get_modality(m)
        cells = [str(by_id.at[ids[i], m]) for i in have]
        clean = list(modality.reader(preprocessed).load(cells)) if modality.media and cells \
            else cells
        for i, level in enumerate(progress(levels, desc=f"robustness {m} {modality.noise_kind}",
                                           unit="level")):
            noisy_x, noisy_tokens = x, tokens
            if level > 0 and have:  # level 0 is the clean input: its features are already here
                hashes = fs.index[f"hash_{m}"].iloc[test_rows.numpy()[have]].tolist()
                vectors, toks = noised_features(predictor, m, clean, hashes, level, seed, i,
                                                cache_dir, fs.encoders[m]["cache_key"])
                noisy_x = {**x, m: x[m].clone()}
                noisy_x[m][have] = vectors
                if toks is not None:
                    noisy_tokens = {**tokens, m: (tokens[m][0].clone(), tokens[m][1].clone())}
                    noisy_tokens[m][0][have], noisy_tokens[m][1][have] = toks
            scores = predict_split(head, inputs.replace(vectors=noisy_x, tokens=noisy_tokens))
            rows.append(_row(m, modality.noise_kind, level, scores))
    return rows


def robustness_metrics(rows: list[dict]) -> dict[str, float]:
    """``robustness_<modality>_<kind>_auc`` (area under macro-F1) for every curve in ``rows``."""
    frame = pd.DataFrame(rows)
    out = {}
    for (m, kind), curve in frame.groupby(["modality", "kind"], sort=True):
        curve = curve.sort_values("level")
        out[f"robustness_{m}_{kind}_auc"] = robustness_auc(curve["level"], curve["macro_f1"])
    return out


def plot_robustness(rows: list[dict], path: Path, title: str = "noise robustness") -> None:
    """One line per (modality, noise kind): test macro-F1 against noise level, AUC in the legend."""
    frame = pd.DataFrame(rows)
    fig, ax = new_figure((6.5, 4.2))
    for (m, kind), curve in frame.groupby(["modality", "kind"], sort=True):
        curve = curve.sort_values("level")
        auc = robustness_auc(curve["level"], curve["macro_f1"])
        ax.plot(curve["level"], curve["macro_f1"], marker="o", markersize=3,
                linestyle="-" if kind == "features" else "--", label=f"{m} {kind} (AUC {auc:.3f})")
    ax.set_xlabel("noise level")
    ax.set_ylabel("test macro-F1")
    ax.set_ylim(0.0, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)
