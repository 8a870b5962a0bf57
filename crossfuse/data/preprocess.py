"""Stage 2, preprocess: prepare every modality's input, split deterministically.

Output folder layout::

    samples.parquet    one row per usable sample: id, line, label, split, one column per
                       modality (text itself; media as ``<folder>/shard-NNNNN.npy#row``),
                       extra targets
    labels.json        the sorted class names; index = class id
    targets.json       {extra target: sorted class names} (multi-task runs)
    images/shard-*.npy uint8 ``[n, S, S, 3]`` RGB, S = ``preprocess.image_size``, EXIF-rotated,
                       alpha on white (+ ``index.json``: shape, dtype, item hashes)
    audio/shard-*.npy  float32 ``[n, L]`` mono at the audio encoder's rate, peak-normalised,
                       L = ``preprocess.audio_seconds`` x rate (+ ``index.json``)

Media are decoded here once and stored model-ready (:mod:`crossfuse.data.media_shards`):
later stages map the shards and read the arrays without decoding.

Each modality's preparation is its declaration's (:mod:`crossfuse.data.modalities`).
The split is taken from the manifest's ``split`` column when present. Otherwise
each id is hashed to train / val / test by the configured fractions, and rows that
hold the same content are hashed together (:mod:`crossfuse.data.splits`).

Example
-------
>>> result = preprocess(cfg, Path("data"), Path("/tmp/pre"))   # doctest: +SKIP
>>> result.split_counts                                          # doctest: +SKIP
{'train': 42, 'val': 9, 'test': 9}
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from crossfuse.atomic import atomic_path, write_json
from crossfuse.config import RunConfig
from crossfuse.data.content import row_keys
from crossfuse.data.manifest import ManifestError, load_run_manifest, resolve_media
from crossfuse.data.media_shards import ShardWriter
from crossfuse.data.modalities import Modality, get_modality
from crossfuse.data.splits import SPLITS, grouped_splits, split_problem
from crossfuse.progress import progress

log = logging.getLogger(__name__)

SAMPLES_FILE = "samples.parquet"
SCORE_SPLIT = "score"  # the split of every row of data to be scored (batch prediction)
LABELS_FILE = "labels.json"
TARGETS_FILE = "targets.json"


@dataclass(frozen=True)
class PreprocessResult:
    n_samples: int
    split_counts: dict[str, int]
    labels: list[str]


def _noise_seed(sample_id: str) -> int:
    """A per-sample seed for a benchmark's deliberate damage (ids may hold any characters)."""
    return int(hashlib.sha1(sample_id.encode("utf-8")).hexdigest()[:15], 16)


def prepare_media(modality: Modality, frame: pd.DataFrame, root: Path, out_dir: Path,
                  cfg: RunConfig) -> list[str]:
    """Prepare every file of a media column into shard files under ``out_dir/<folder>/``;
    each row's cell (``<folder>/shard-NNNNN.npy#row``, or "" where the cell is empty)."""
    writer = ShardWriter(out_dir, modality.folder)
    cells = []
    for sample_id, rel in progress(list(zip(frame["id"], frame[modality.name], strict=True)),
                                   desc=f"preprocess {modality.name}", unit="file"):
        if not rel:  # a missing cell stays missing (validation allowed it)
            cells.append("")
            continue
        rng = np.random.default_rng([cfg.seed, _noise_seed(sample_id)])
        item = modality.degrade(modality.prepare(resolve_media(root, rel), cfg), cfg, rng)
        cells.append(writer.add(modality.to_array(item)))
    writer.close()
    return cells


def preprocess(cfg: RunConfig, data_root: Path, out_dir: Path,
               rejected_lines: set[int] | frozenset[int] = frozenset(),
               model_labels: list[str] | None = None) -> PreprocessResult:
    """Write the preprocessed dataset of ``data_root`` to ``out_dir``.

    Parameters
    ----------
    cfg: run config (``preprocess`` section, ``extract.encoders`` for the modalities).
    data_root: dataset folder with ``manifest.csv``.
    out_dir: output folder (created).
    rejected_lines: manifest lines validation rejected; those rows are skipped.
    model_labels: data to be scored by a model with these classes: every row's split is
        ``score``, labels are optional (empty when absent) and ``labels.json`` holds the
        model's classes, so class ids match the model's.
    """
    out_dir = Path(out_dir)
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"path": str(data_root)})})
    scoring = model_labels is not None
    manifest = load_run_manifest(cfg, labels_optional=scoring)
    frame = manifest.frame.reset_index(drop=True)
    frame["line"] = manifest.lines
    # Splits of the rows that are used, as validation computed them: a rejected row must
    # not take a class's only val or test row with it, and rows sharing content or a media
    # file stay in one split.
    frame = frame[~frame["line"].isin(rejected_lines)].reset_index(drop=True)
    frame["split"] = SCORE_SPLIT if scoring else grouped_splits(
        frame, cfg.preprocess.split, *row_keys(frame, manifest.root, cfg.modalities))
    bad = [] if scoring else [(line, why) for line, v in zip(frame["line"], frame["split"], strict=True)
                              if (why := split_problem(v))]
    if bad:
        raise ManifestError(f"{manifest.path} " + "; ".join(f"line {line}: {why}"
                                                          for line, why in bad[:5])
                            + (f" (and {len(bad) - 5} more rows)" if len(bad) > 5 else "")
                            + ". Validation rejects these rows: run it first")

    columns = ["id", "line", "label", "split", *cfg.data.extra_targets]
    for m in cfg.modalities:
        modality = get_modality(m)
        frame[m] = (prepare_media(modality, frame, manifest.root, out_dir, cfg) if modality.media
                    else [modality.prepare(v, cfg) for v in frame[m]])
        columns.append(m)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = list(model_labels) if scoring else sorted(frame["label"].unique().tolist())
    write_json(out_dir / LABELS_FILE, labels, indent=None)
    write_json(out_dir / TARGETS_FILE,
               {t: sorted(frame[t].unique().tolist()) for t in cfg.data.extra_targets}, indent=None)
    with atomic_path(out_dir / SAMPLES_FILE) as tmp:  # last: the folder is complete with it
        frame[columns].to_parquet(tmp, index=False)

    counts = frame["split"].value_counts().to_dict()
    per_class = frame.groupby(["label", "split"]).size().unstack(fill_value=0)
    for split in [] if scoring else SPLITS:
        if split not in per_class.columns or (per_class[split] == 0).any():
            log.warning("some classes have no %s samples; metrics on %s will miss them",
                        split, split)
    return PreprocessResult(n_samples=len(frame),
                            split_counts={s: int(counts.get(s, 0)) for s in SPLITS},
                            labels=labels)


def preprocess_result(out_dir: Path) -> PreprocessResult:
    """The :class:`PreprocessResult` of a preprocessed folder, read back from its files."""
    samples, labels, _ = read_samples(out_dir)
    counts = samples["split"].value_counts().to_dict()
    return PreprocessResult(n_samples=len(samples),
                            split_counts={s: int(counts.get(s, 0)) for s in SPLITS}, labels=labels)


def read_samples(out_dir: Path) -> tuple[pd.DataFrame, list[str], dict[str, list[str]]]:
    """Read a preprocessed folder back: (samples, label list, {extra target: class list})."""
    out_dir = Path(out_dir)
    targets = out_dir / TARGETS_FILE
    return (pd.read_parquet(out_dir / SAMPLES_FILE),
            json.loads((out_dir / LABELS_FILE).read_text()),
            json.loads(targets.read_text()) if targets.is_file() else {})
