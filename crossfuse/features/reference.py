"""What a model was trained on, kept with the model so new data can be compared with it.

The train stage writes ``drift_reference.parquet`` into the model folder: for each train and
validation row, its label, which modalities it has and their content hashes. The vectors
themselves stay in the content-addressed feature cache, under the encoder keys the model
records, so the reference costs a few bytes per row and is exact: :func:`load_reference`
reads back the very vectors the model learned from.

Example
-------
>>> write_reference(fs, Path("model"))                                   # doctest: +SKIP
>>> ref = load_reference(Path("model"), Path(".cache/crossfuse/features"))  # doctest: +SKIP
>>> ref.vectors["image"].shape                                           # doctest: +SKIP
(612, 1280)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from crossfuse.atomic import atomic_path
from crossfuse.data.media_shards import ITEM_HASH_SCHEME
from crossfuse.features.store import FeatureCache, FeatureSet
from crossfuse.fusion.model import SPEC_FILE

REFERENCE_FILE = "drift_reference.parquet"
REFERENCE_SPLITS = ("train", "val")
# How the reference's media hashes were made (ITEM_HASH_SCHEME), in the parquet file's metadata.
# A reference written before media were stored as arrays has none: it hashed each preprocessed
# file's bytes, so its image and audio hashes can never match a new batch's.
MEDIA_HASH_KEY, MEDIA_HASH = b"crossfuse.media_hash", ITEM_HASH_SCHEME.encode()


@dataclass
class Reference:
    """A model's training rows: ``labels`` (one per row), ``present`` ``{m: bool [rows]}`` and
    ``vectors`` ``{m: float32 [rows with m, dim]}``."""

    labels: list[str]
    present: dict[str, np.ndarray]
    vectors: dict[str, np.ndarray]


def write_reference(fs: FeatureSet, model_dir: Path) -> Path | None:
    """Write the train and validation rows' labels, presence and hashes into ``model_dir``.

    None (nothing written) for a feature set without content hashes: one built in memory,
    not by extraction, has no cached vectors to point at.
    """
    rows = fs.index[fs.index["split"].isin(REFERENCE_SPLITS)]
    columns = ["label", *(f"{kind}_{m}" for m in fs.modalities for kind in ("present", "hash"))]
    if not set(columns) <= set(rows.columns):
        return None
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(rows[columns].reset_index(drop=True), preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           MEDIA_HASH_KEY: MEDIA_HASH})
    path = Path(model_dir) / REFERENCE_FILE
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def media_hashes_comparable(model_dir: Path) -> bool:
    """Whether the reference's image and audio hashes are made as new data's are.

    False for a reference written before media were stored as arrays: its media hashes are
    of the preprocessed files' bytes, so no new row's would match (text hashes did not change).

    >>> media_hashes_comparable(Path("model"))                       # doctest: +SKIP
    True
    """
    import pyarrow.parquet as pq

    metadata = pq.read_schema(Path(model_dir) / REFERENCE_FILE).metadata or {}
    return metadata.get(MEDIA_HASH_KEY) == MEDIA_HASH


def reference_rows(model_dir: Path) -> pd.DataFrame:
    """The model's training rows (label, ``present_<m>``, ``hash_<m>``), without vectors.

    Raises FileNotFoundError naming the fix when the model has no reference.
    """
    path = Path(model_dir) / REFERENCE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: the model was trained before crossfuse "
                                f"kept a drift reference; train it again to compare new data with it")
    return pd.read_parquet(path)


def load_reference(model_dir: Path, cache_dir: Path, rows: pd.DataFrame | None = None) -> Reference:
    """The model's training rows (``rows``, when already read by :func:`reference_rows`) with
    their vectors from the feature cache at ``cache_dir``.

    Raises FileNotFoundError naming the fix when the model has no reference (trained before
    references existed) or the cache no longer holds its vectors.
    """
    model_dir = Path(model_dir)
    rows = reference_rows(model_dir) if rows is None else rows
    encoders = json.loads((model_dir / SPEC_FILE).read_text())["encoders"]
    present, vectors = {}, {}
    for m, encoder in encoders.items():
        present[m] = rows[f"present_{m}"].to_numpy(dtype=bool)
        hashes = rows.loc[present[m], f"hash_{m}"].tolist()
        cache = FeatureCache(Path(cache_dir), encoder["cache_key"])
        missing = sum(h not in cache for h in hashes)
        if missing:
            raise FileNotFoundError(
                f"the feature cache {cache_dir} lacks {missing} of the {len(hashes)} {m} vectors "
                f"this model was trained on ({encoder['cache_key']}); point extract.cache_dir at "
                f"the training run's cache, or re-run training here to fill it")
        vectors[m] = (cache.get(hashes)["vectors"].numpy() if hashes
                      else np.zeros((0, 0), dtype=np.float32))
    return Reference(labels=rows["label"].tolist(), present=present, vectors=vectors)
