"""The registered model: an MLflow pyfunc from raw inputs to predictions.

It runs the training code path — :func:`crossfuse.data.preprocess.normalise_text`,
:func:`crossfuse.data.images.prepare_image`, the same frozen encoders, the trained
fusion head — on a DataFrame with one column per modality:

- ``text``: the text (empty or null = missing);
- ``image``: a file path, or the image bytes base64-encoded (empty or null = missing).

It returns one row per input: ``label`` and ``p_<class>`` for every class, plus the
predicted class of each extra target (multi-task models) in a column named after it.

Example
-------
>>> model = mlflow.pyfunc.load_model("models:/crossfuse-sample@champion")     # doctest: +SKIP
>>> model.predict(pd.DataFrame({"text": ["A fox rested at midnight."],
...                             "image": ["data/images/s00001.png"]}))       # doctest: +SKIP
         label  p_circle-day  ...
0  circle-night          0.01  ...
"""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path

import mlflow.pyfunc
import pandas as pd
import torch
from PIL import Image

from crossfuse.config import RunConfig
from crossfuse.data.images import prepare_image
from crossfuse.data.text import normalise_text
from crossfuse.encoders import build_encoder, pad_tokens, resolve_device
from crossfuse.fusion import load_fusion_head
from crossfuse.fusion.model import RUN_CONFIG_FILE


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and pd.isna(value)) or str(value) == ""


def _open_image(value: str, size: int) -> Image.Image:
    path = Path(value)
    if len(value) < 4096 and path.is_file():
        return prepare_image(path, size)
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"image value is neither an existing file nor base64 image bytes: "
                         f"{value[:80]!r}") from exc
    return prepare_image(io.BytesIO(raw), size)


class FusionPredictor:
    """Raw inputs -> class probabilities with a saved model folder (no MLflow needed).

    Parameters
    ----------
    model_dir: the train stage's output (fusion head, spec, run config).

    The encoders run on this machine's GPU when it has one (wherever the model was
    trained); the fusion head runs on the CPU.
    """

    def __init__(self, model_dir: Path):
        model_dir = Path(model_dir)
        self.head, self.meta = load_fusion_head(model_dir)
        self.cfg = RunConfig.from_json((model_dir / RUN_CONFIG_FILE).read_text())
        self.labels: list[str] = self.meta["labels"]
        self.modalities = list(self.meta["dims"])
        self.encoders = {m: build_encoder(self.meta["encoders"][m]["name"], m,
                                          offline=self.cfg.extract.hf_offline,
                                          trust_remote_code=self.cfg.extract.trust_remote_code)
                         .to(resolve_device("auto")) for m in self.modalities}

    def encode_items(self, modality: str, items: list):
        """Encode prepared items (normalised texts or RGB images at the training size).

        Returns (vectors ``[n, D]``, padded tokens ``([n, L, D], [n, L])`` or None when
        the head reads pooled vectors only).
        """
        dim, length = self.meta["dims"][modality], self.cfg.extract.max_tokens
        vectors = torch.zeros(len(items), dim)
        tokens = ((torch.zeros(len(items), length, dim), torch.zeros(len(items), length,
                                                                    dtype=torch.bool))
                  if self.head.spec.token_inputs else None)
        encoder, batch = self.encoders[modality], self.cfg.extract.batch_size
        for s in range(0, len(items), batch):
            chunk = items[s:s + batch]
            vectors[s:s + len(chunk)] = encoder.encode(chunk)
            if tokens is not None:
                padded = pad_tokens(*encoder.encode_tokens(chunk, length), length)
                tokens[0][s:s + len(chunk)], tokens[1][s:s + len(chunk)] = \
                    padded["tokens"], padded["mask"]
        return vectors, tokens

    def _encode(self, modality: str, values: list):
        """(vectors [N, D], present [N], tokens ([N, L, D], [N, L]) or None) for raw values."""
        present = torch.tensor([not _is_missing(v) for v in values], dtype=torch.bool)
        rows = present.nonzero().flatten().tolist()
        if modality == "text":
            items = [normalise_text(str(values[r]), self.cfg.preprocess.lowercase_text) for r in rows]
        else:
            items = [_open_image(str(values[r]), self.cfg.preprocess.image_size) for r in rows]
        found, found_tokens = self.encode_items(modality, items)
        dim, length = self.meta["dims"][modality], self.cfg.extract.max_tokens
        vectors = torch.zeros(len(values), dim)
        vectors[rows] = found
        tokens = None
        if found_tokens is not None:
            tokens = (torch.zeros(len(values), length, dim),
                      torch.zeros(len(values), length, dtype=torch.bool))
            tokens[0][rows], tokens[1][rows] = found_tokens
        return vectors, present, tokens

    def logits(self, frame: pd.DataFrame) -> dict[str, torch.Tensor]:
        """Every head's logits for raw inputs; absent columns count as missing."""
        vectors, present, tokens = {}, {}, {}
        for m in self.modalities:
            values = frame[m].tolist() if m in frame.columns else [None] * len(frame)
            vectors[m], present[m], tokens[m] = self._encode(m, values)
        with torch.inference_mode():
            return self.head.eval().forward_all(vectors, present,
                                                tokens if self.head.spec.token_inputs else None)

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        logits = self.logits(frame)
        temperature = float(self.meta.get("temperature", 1.0))  # fitted on validation
        probs = (logits[self.head.spec.target] / temperature).softmax(-1).numpy()
        out = pd.DataFrame({"label": [self.labels[i] for i in probs.argmax(-1)]})
        for i, name in enumerate(self.labels):
            out[f"p_{name}"] = probs[:, i].astype(float)
        for target, classes in self.meta.get("targets", {}).items():
            out[target] = [classes[i] for i in logits[target].argmax(-1).tolist()]
        return out


class CrossfusePyfunc(mlflow.pyfunc.PythonModel):
    """MLflow wrapper around :class:`FusionPredictor`; the artifact ``model`` is the model folder."""

    def load_context(self, context) -> None:
        self.predictor = FusionPredictor(Path(context.artifacts["model"]))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return self.predictor.predict(pd.DataFrame(model_input))
