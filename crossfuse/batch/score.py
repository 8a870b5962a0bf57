"""Score a batch's feature set with a model, one feature shard at a time.

The extract step writes one partial feature set per pod (``pipeline.extract_parts``); part
``i`` holds rows ``i, i + n, i + 2n, ...``, in shards of ``extract.shard_size`` rows. Shard
``k`` of every part together holds rows ``k*S*n`` to ``(k+1)*S*n - 1`` of the batch, so
:func:`feature_chunks` reads the parts shard by shard, without merging them, and yields
the rows in manifest order. Memory holds one such chunk, a capped sample of vectors for the
drift test and one class id per labelled row, whatever the batch's size.

``predictions.parquet`` (written a chunk at a time): ``id``, ``line``, ``label`` (labelled
batches only), ``predicted``, ``p_<class>`` (calibrated, as the served model answers),
one column per extra target, ``modalities`` (those present, ``image+text``) and
``model_version``.

Example
-------
>>> result = score(Path("model"), [Path("features-0")], Path("out"), labelled=True)  # doctest: +SKIP
>>> result.n_scored, result.metrics["labelled_macro_f1"]                             # doctest: +SKIP
(108, 0.97)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors import safe_open

from crossfuse.atomic import atomic_path
from crossfuse.errors import UserError
from crossfuse.features.store import ENCODERS_FILE, INDEX_FILE
from crossfuse.fusion import load_fusion_head
from crossfuse.fusion.model import predict_proba
from crossfuse.metrics import classification_metrics, metric_name
from crossfuse.training.calibration import apply_temperature, expected_calibration_error

PREDICTIONS_FILE = "predictions.parquet"


@dataclass
class Chunk:
    """Consecutive rows of a batch: their index rows, ``vectors`` ``{m: [n, dim]}``,
    ``present`` ``{m: bool [n]}`` and, for token heads, ``tokens`` ``{m: ([n, L, dim], [n, L])}``."""

    index: pd.DataFrame
    vectors: dict[str, torch.Tensor]
    present: dict[str, torch.Tensor]
    tokens: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None


def _shard(path: Path, names: list[str]) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {n: f.get_tensor(n) for n in names}


def feature_chunks(parts: list[Path], modalities: list[str], shard_size: int,
                   tokens: bool = False) -> Iterator[Chunk]:
    """The rows of the partial feature sets ``parts`` (as :func:`crossfuse.features.extract.extract`
    writes them with ``part=(i, len(parts))`` and ``extract.shard_size = shard_size``), a chunk
    of up to ``shard_size * len(parts)`` rows at a time, in manifest order."""
    parts = [Path(p) for p in parts]
    encoders = json.loads((parts[0] / ENCODERS_FILE).read_text())
    missing = [m for m in modalities if m not in encoders]
    if missing:
        raise UserError(f"the features in {parts[0]} lack {missing}: extract them with the "
                        f"model's encoders")
    readers = [pq.ParquetFile(p / INDEX_FILE) for p in parts]
    batches = [r.iter_batches(batch_size=shard_size) for r in readers]
    for k in range(max(-(-r.metadata.num_rows // shard_size) for r in readers)):
        pieces = []
        for part, batch in zip(parts, batches, strict=True):
            rows = next(batch, None)
            if rows is None or rows.num_rows == 0:
                continue
            vectors = {m: _shard(part / m / f"shard-{k:05d}.safetensors", ["vectors"])["vectors"]
                       for m in modalities}
            if any(len(v) != rows.num_rows for v in vectors.values()):
                raise ValueError(f"{part}: shard {k} does not hold index rows {k * shard_size}.."
                                 f"; extract.shard_size must be the one the features were "
                                 f"written with")
            seq = ({m: tuple(_shard(part / m / f"tokens-{k:05d}.safetensors",
                                    ["tokens", "mask"]).values()) for m in modalities}
                   if tokens else None)
            pieces.append((rows.to_pandas(), vectors, seq))
        yield _in_line_order(pieces, modalities)


def _in_line_order(pieces: list, modalities: list[str]) -> Chunk:
    index = pd.concat([p[0] for p in pieces], ignore_index=True)
    order = torch.from_numpy(index["line"].to_numpy().argsort(kind="stable"))
    index = index.iloc[order.numpy()].reset_index(drop=True)
    vectors = {m: torch.cat([p[1][m] for p in pieces])[order] for m in modalities}
    present = {m: torch.from_numpy(index[f"present_{m}"].to_numpy(dtype=bool, copy=True))
               for m in modalities}
    tokens = None
    if pieces[0][2] is not None:
        tokens = {m: (torch.cat([p[2][m][0] for p in pieces])[order],
                      torch.cat([p[2][m][1] for p in pieces])[order]) for m in modalities}
    return Chunk(index, vectors, present, tokens)


@dataclass
class DriftSample:
    """A seeded uniform sample of at most ``limit`` present vectors per modality (reservoir
    sampling, so it is drawn in one pass over chunks), plus every row's presence."""

    limit: int
    seed: int
    seen: dict[str, int] = field(default_factory=dict)
    present: dict[str, list[np.ndarray]] = field(default_factory=dict)
    slots: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # [limit, dim] each

    @property
    def vectors(self) -> dict[str, np.ndarray]:
        """The sample: ``{m: [min(seen, limit), dim]}``."""
        return {m: s[:min(self.seen[m], self.limit)] for m, s in self.slots.items()}

    def add(self, chunk: Chunk) -> None:
        for m, mask in chunk.present.items():
            mask = mask.numpy().copy()
            self.present.setdefault(m, []).append(mask)
            rows = chunk.vectors[m][torch.from_numpy(mask)].numpy()
            seen = self.seen.get(m, 0)
            if m not in self.slots:
                self.slots[m] = np.empty((self.limit, rows.shape[1]), dtype=np.float32)
            slots = self.slots[m]
            filled = min(seen, self.limit)
            room = min(self.limit - filled, len(rows))
            slots[filled:filled + room] = rows[:room]
            rest = rows[room:]
            if len(rest):  # row t (0-based over all seen) replaces slot j ~ U[0, t] if j < limit
                rng = np.random.default_rng([self.seed, seen])
                draws = rng.integers(0, np.arange(seen + room + 1, seen + room + 1 + len(rest)))
                for row, j in zip(rest, draws, strict=True):
                    if j < self.limit:
                        slots[j] = row
            self.seen[m] = seen + len(rows)

    def presence(self) -> dict[str, np.ndarray]:
        """Every row's presence flag per modality, in row order."""
        return {m: np.concatenate(p) if p else np.zeros(0, dtype=bool)
                for m, p in self.present.items()}


@dataclass
class ScoreResult:
    """What :func:`score` did: rows scored, their predicted class ids and calibrated
    confidences, the metrics of the labelled rows the model never trained on (empty when
    there are none), the drift sample and the least confident rows."""

    n_scored: int
    n_labelled: int
    predicted: np.ndarray
    metrics: dict[str, float]
    drift: DriftSample
    n_in_training: int = 0
    n_labelled_in_training: int = 0
    confidence: np.ndarray = field(default_factory=lambda: np.zeros(0))
    least_confident: pd.DataFrame = field(default_factory=pd.DataFrame)


LEAST_CONFIDENT = 10  # rows the report lists for a person to look at


def labelled_metrics(y: np.ndarray, probs: np.ndarray, temperature: float, labels: list[str]
                     ) -> dict[str, float]:
    """The evaluate stage's test metrics, computed the same way, on a batch's labelled rows:
    ``labelled_<metric>`` for ``test_<metric>`` (uncalibrated probabilities, as evaluation
    scores them; the calibrated ECE and log loss beside), and per-class F1."""
    from sklearn.metrics import f1_score

    calibrated = apply_temperature(probs, temperature)
    metrics = classification_metrics(y, probs, prefix="labelled_")
    metrics.update({
        "labelled_ece": expected_calibration_error(y, probs),
        "labelled_ece_calibrated": expected_calibration_error(y, calibrated),
        "labelled_log_loss_calibrated": classification_metrics(y, calibrated)["test_log_loss"],
        "labelled_samples": float(len(y))})
    f1 = f1_score(y, probs.argmax(-1), labels=list(range(len(labels))), average=None,
                  zero_division=0)
    metrics.update({f"labelled_f1_{metric_name(c)}": float(v) for c, v in zip(labels, f1,
                                                                               strict=True)})
    return metrics


def in_training(index: pd.DataFrame, trained: dict[str, set[str]]) -> np.ndarray:
    """Rows whose every present modality's content is among the model's training rows'
    (``trained``: content hashes per modality); bool ``[rows]``.

    >>> rows = pd.DataFrame({"present_text": [True, True], "hash_text": ["a", "b"]})
    >>> in_training(rows, {"text": {"a"}}).tolist()
    [True, False]
    """
    seen = np.ones(len(index), dtype=bool)
    for m, hashes in trained.items():
        present = index[f"present_{m}"].to_numpy(dtype=bool)
        seen &= ~present | index[f"hash_{m}"].isin(hashes).to_numpy()
    return seen


def score(model_dir: Path, parts: list[Path], out_dir: Path, labelled: bool, shard_size: int,
          model_version: str = "", drift_samples: int = 500, seed: int = 0,
          trained: dict[str, set[str]] | None = None) -> ScoreResult:
    """Predict every row of the partial feature sets ``parts`` with the model in ``model_dir``;
    write ``out_dir/predictions.parquet``.

    ``labelled``: the batch has labels (some rows may lack one); the labelled rows are
    scored with :func:`labelled_metrics`. ``shard_size``: the features' ``extract.shard_size``.
    ``drift_samples`` caps the vectors kept per modality for the drift test. ``trained``
    (content hashes of the model's training rows per modality) marks the rows the model was
    trained on (:func:`in_training`, the predictions' ``in_training`` column; empty when
    unknown): they are left out of the labelled metrics, which would not be a test on them.
    """
    head, meta = load_fusion_head(Path(model_dir))
    labels, modalities = meta["labels"], list(meta["dims"])
    targets = meta.get("targets", {})
    temperature = float(meta.get("temperature", 1.0))
    token_inputs = bool(head.spec.token_inputs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    drift = DriftSample(drift_samples, seed)
    predicted, confidence, ys, probs_labelled, doubtful = [], [], [], [], []
    n = n_in_training = n_labelled_in_training = 0
    with atomic_path(out_dir / PREDICTIONS_FILE) as tmp:
        writer = None
        try:
            for chunk in feature_chunks(parts, modalities, shard_size, token_inputs):
                probs = predict_proba(head, chunk.vectors, chunk.present, chunk.tokens).numpy()
                calibrated = apply_temperature(probs, temperature)
                frame = _prediction_rows(chunk, probs, calibrated, labels, modalities, labelled,
                                         model_version)
                seen = (in_training(chunk.index, trained) if trained is not None
                        else np.zeros(len(frame), dtype=bool))
                frame.insert(len(frame.columns) - 1, "in_training", pd.array(
                    seen if trained is not None else [pd.NA] * len(frame), dtype="boolean"))
                if targets:
                    with torch.inference_mode():
                        logits = head.eval().forward_all(chunk.vectors, chunk.present, chunk.tokens)
                    for target, classes in targets.items():
                        frame[target] = [classes[i] for i in logits[target].argmax(-1).tolist()]
                table = pa.Table.from_pandas(frame, preserve_index=False)
                writer = writer or pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
                predicted.append(probs.argmax(-1))
                confidence.append(calibrated.max(-1))
                doubtful.append(least_confident(frame, confidence[-1]))
                if labelled:
                    known = chunk.index["label"].to_numpy() != ""
                    n_labelled_in_training += int((known & seen).sum())
                    known &= ~seen  # a row the model trained on is not a test
                    ys.append(chunk.index["label_idx"].to_numpy()[known].astype(int))
                    probs_labelled.append(probs[known])
                drift.add(chunk)
                n += len(frame)
                n_in_training += int(seen.sum())
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            raise UserError(f"no rows to score in {[str(p) for p in parts]}")
    y = np.concatenate(ys) if ys else np.zeros(0, dtype=int)
    metrics = (labelled_metrics(y, np.concatenate(probs_labelled), temperature, labels)
               if len(y) else {})
    return ScoreResult(n_scored=n, n_labelled=len(y), predicted=np.concatenate(predicted),
                       metrics=metrics, drift=drift, n_in_training=n_in_training,
                       n_labelled_in_training=n_labelled_in_training,
                       confidence=np.concatenate(confidence),
                       least_confident=least_confident(pd.concat(doubtful, ignore_index=True)))


def least_confident(frame: pd.DataFrame, confidence: np.ndarray | None = None,
                    limit: int = LEAST_CONFIDENT) -> pd.DataFrame:
    """The ``limit`` rows of ``frame`` with the lowest calibrated confidence (``id``, ``line``,
    ``predicted``, ``confidence``), least confident first; ties keep file order.

    >>> f = pd.DataFrame({"id": ["a", "b", "c"], "line": [2, 3, 4], "predicted": ["x", "y", "x"]})
    >>> least_confident(f, np.array([0.9, 0.4, 0.6]), limit=2)["id"].tolist()
    ['b', 'c']
    """
    if confidence is not None:
        frame = frame[["id", "line", "predicted"]].assign(confidence=confidence)
    return frame.sort_values("confidence", kind="stable").head(limit).reset_index(drop=True)


def _prediction_rows(chunk: Chunk, probs: np.ndarray, calibrated: np.ndarray, labels: list[str],
                     modalities: list[str], labelled: bool, model_version: str) -> pd.DataFrame:
    frame = pd.DataFrame({"id": chunk.index["id"].astype(str), "line": chunk.index["line"]})
    if labelled:
        frame["label"] = chunk.index["label"].astype(str)
    frame["predicted"] = [labels[i] for i in probs.argmax(-1)]
    for i, name in enumerate(labels):
        frame[f"p_{name}"] = calibrated[:, i].astype(float)
    present = np.stack([chunk.present[m].numpy() for m in modalities], axis=1)
    frame["modalities"] = ["+".join(m for m, p in zip(modalities, row, strict=True) if p)
                           for row in present]
    frame["model_version"] = model_version
    return frame
