"""The registered model: an MLflow pyfunc from raw inputs to predictions.

It runs the training code path — each modality's checks and preparation
(:mod:`crossfuse.data.modalities`), the same frozen encoders, the trained fusion head —
on a DataFrame with one column per modality of the model:

- ``text``: the text, a string (empty or null = missing);
- ``image``, ``audio``: the file's bytes (PNG/JPEG/..., WAV/FLAC/...), base64-encoded (empty
  or null = missing). A path on the server is read only under ``serving.media_root`` (env
  ``CROSSFUSE_SERVING_MEDIA_ROOT``), unset by default: a request cannot make the server
  open, or reveal, any other file.

It returns one row per input: ``label`` and ``p_<class>`` for every class, plus the
predicted class of each extra target (multi-task models) in a column named after it.

Bad requests are refused whole, before any work, with an :class:`InvalidInput` (HTTP 400
from ``mlflow models serve``) whose message names each bad row, its column and the reason:
an unknown column, a row with every modality missing, a value of the wrong type, bytes
that are not base64 or not a usable image or sound, a path outside ``media_root``.

Example
-------
>>> model = mlflow.pyfunc.load_model("models:/crossfuse-sample@champion")     # doctest: +SKIP
>>> png = base64.b64encode(Path("data/images/s00001.png").read_bytes()).decode()  # doctest: +SKIP
>>> model.predict(pd.DataFrame({"text": ["A fox rested at midnight."],
...                             "image": [png]}))                             # doctest: +SKIP
         label  p_circle-day  ...
0  circle-night          0.01  ...
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
from pathlib import Path

import mlflow.pyfunc
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from crossfuse.config import RunConfig
from crossfuse.data.modalities import Modality, get_modality
from crossfuse.data.validation.checks import text_problem
from crossfuse.encoders import pad_tokens, place_encoder
from crossfuse.encoders.adapt import model_encoder
from crossfuse.fusion import load_fusion_head
from crossfuse.fusion.model import RUN_CONFIG_FILE
from crossfuse.training.calibration import apply_temperature

MEDIA_ROOT_ENV = "CROSSFUSE_SERVING_MEDIA_ROOT"
MAX_PROBLEMS_NAMED = 10


class InvalidInput(MlflowException):
    """A request the model refuses; the message names the rows, columns and reasons (HTTP 400)."""

    def __init__(self, problems: list[str]):
        shown = "; ".join(problems[:MAX_PROBLEMS_NAMED])
        extra = len(problems) - MAX_PROBLEMS_NAMED
        more = f"; and {extra} more" if extra > 0 else ""
        super().__init__(f"invalid input: {shown}{more}", error_code=INVALID_PARAMETER_VALUE)


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and pd.isna(value)) or \
        (isinstance(value, str) and value == "")


EXCERPT = 60  # characters of a client's value quoted back: a 5 MB body is never echoed


def excerpt(value: str) -> str:
    """``value`` quoted for a message, cut to :data:`EXCERPT` characters.

    >>> excerpt("x" * 100)
    "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'… (100 characters)"
    """
    return repr(value) if len(value) <= EXCERPT else f"{value[:EXCERPT]!r}… ({len(value):,} characters)"


_DATA_URI = re.compile(r"data:[\w.+-]+/[\w.+-]+;base64,", re.IGNORECASE)
_STANDARD = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_URL_SAFE = re.compile(r"[A-Za-z0-9_-]+={0,2}")


def media_bytes(value: str) -> bytes | None:
    """A file's bytes from base64: standard or URL-safe, padded or not, bare or as a
    ``data:<type>;base64,`` URI; None when it is none of those.

    >>> media_bytes("data:image/png;base64,aGk"), media_bytes("aGk="), media_bytes("a path.png")
    (b'hi', b'hi', None)
    """
    text = _DATA_URI.sub("", value.strip(), count=1) if value[:5].lower() == "data:" else value
    text = "".join(text.split())  # line-wrapped base64
    # Standard base64 must be padded (unpadded, "/etc/passwd" would decode); URL-safe base64
    # may drop its padding, as JWT-style encoders do.
    try:
        if len(text) % 4 == 0 and _STANDARD.fullmatch(text):
            return base64.b64decode(text)
        if _URL_SAFE.fullmatch(text):
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        pass
    return None


def decode_media(value: str, modality: Modality, cfg: RunConfig, media_root: Path | None):
    """A request's media (image, audio): base64 file bytes, or (only under ``media_root``) a path.

    The bytes pass the same checks as validation's (:meth:`Modality.check`) and the same
    preparation as preprocessing's. Raises ``ValueError`` with the reason; its wording
    never depends on whether a file outside ``media_root`` exists.
    """
    what = modality.name
    raw = media_bytes(value)
    if raw is not None:
        problem = modality.check(io.BytesIO(raw), f"(the request's {what})", cfg)
        if problem is None:
            return modality.prepare(io.BytesIO(raw), cfg)
        if media_root is None:
            raise ValueError(f"base64 decodes but is not usable: {problem[0]}: {problem[1]}")
    if media_root is None:
        raise ValueError(f"expected the {what} file's bytes, base64-encoded; paths are refused "
                         f"unless the server sets serving.media_root")
    outside = ValueError(f"neither base64 {what} bytes nor a path inside serving.media_root")
    try:  # absolute or relative to media_root, but inside it after symlinks and ..
        path = (Path(value) if Path(value).is_absolute() else media_root / value).resolve()
    except (OSError, ValueError, RuntimeError):
        raise outside from None
    if not path.is_relative_to(media_root):
        raise outside
    if not path.is_file():
        raise ValueError(f"no file {excerpt(value)} under serving.media_root")
    problem = modality.check(path, value, cfg)
    if problem is not None:
        raise ValueError(f"{problem[0]}: {problem[1]}")
    return modality.prepare(path, cfg)


def check_request(frame: pd.DataFrame, modalities: list[str]) -> list[str]:
    """What is wrong with a request's columns and value types, one message per problem."""
    problems = []
    twice = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
    if twice:
        return [f"column(s) {twice} appear more than once in the request; send each once"]
    unknown = [str(c) for c in frame.columns if c not in modalities]
    if unknown:
        hint = ("; the body looks like JSON: send it with Content-Type: application/json"
                if any(c.lstrip().startswith(("{", "[", '"')) for c in unknown) else "")
        shown = [c if len(c) <= EXCERPT else f"{c[:EXCERPT]}…" for c in unknown]
        problems.append(f"unknown column(s) {shown}: this model reads {modalities}{hint}")
    usable = [m for m in modalities if m in frame.columns]
    for row in range(len(frame)):
        values = {m: frame[m].iat[row] for m in usable}
        for m, v in values.items():
            if not _is_missing(v) and not isinstance(v, str):
                problems.append(f"row {row}, column {m!r}: expected a string "
                                f"({'base64 bytes' if get_modality(m).media else m}), got "
                                f"{type(v).__name__} {str(v)[:40]!r}")
        if all(_is_missing(v) for v in values.values()):
            problems.append(f"row {row}: every modality is missing ({', '.join(modalities)}); "
                            f"send at least one")
    return problems


class FusionPredictor:
    """Raw inputs -> class probabilities with a saved model folder (no MLflow needed).

    Parameters
    ----------
    model_dir: the train stage's output (fusion head, spec, run config).
    media_root: the folder image paths may point into; default ``CROSSFUSE_SERVING_MEDIA_ROOT``,
        else the model's ``serving.media_root``, else none (base64 bytes only).
    export_dir: where ONNX exports of the encoders are kept (default: one per-user folder in
        the system's temporary directory); evaluation passes the run's.
    device: where the encoders run (``extract.device`` values; default ``auto``).

    Encoders are built on first use (:attr:`encoders` builds them all), so a caller that
    finds every vector it needs in a cache never loads them; the served model loads them
    when it is loaded.

    The encoders run on this machine's GPU when it has one (wherever the model was
    trained); the fusion head runs on the CPU.
    """

    def __init__(self, model_dir: Path, media_root: Path | str | None = None,
                 export_dir: Path | None = None, device: str = "auto"):
        self.model_dir = model_dir = Path(model_dir)
        self.head, self.meta = load_fusion_head(model_dir)
        self.cfg = RunConfig.from_json((model_dir / RUN_CONFIG_FILE).read_text())
        root = media_root or os.environ.get(MEDIA_ROOT_ENV) or self.cfg.serving.media_root
        self.media_root = Path(root).resolve() if root else None
        self.labels: list[str] = self.meta["labels"]
        self.modalities = list(self.meta["dims"])
        self._placement = (device, self.cfg.extract.backend, export_dir)
        self._encoders: dict = {}

    def encoder(self, modality: str):
        """The encoder of ``modality``, built and placed on first use."""
        if modality not in self._encoders:
            encoder = model_encoder(self.meta["encoders"][modality], modality, self.model_dir,
                                    offline=self.cfg.extract.hf_offline,
                                    trust_remote_code=self.cfg.extract.trust_remote_code)
            self._encoders[modality] = place_encoder(encoder, *self._placement)
        return self._encoders[modality]

    @property
    def encoders(self) -> dict:
        """Every modality's encoder (built now if not yet)."""
        return {m: self.encoder(m) for m in self.modalities}

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
        encoder, batch = self.encoder(modality), self.cfg.extract.batch_size
        for s in range(0, len(items), batch):
            chunk = items[s:s + batch]
            vectors[s:s + len(chunk)] = encoder.encode(chunk)
            if tokens is not None:
                padded = pad_tokens(*encoder.encode_tokens(chunk, length), length)
                tokens[0][s:s + len(chunk)], tokens[1][s:s + len(chunk)] = \
                    padded["tokens"], padded["mask"]
        return vectors, tokens

    def _prepare(self, modality: str, values: list) -> tuple[list[int], list, list[str]]:
        """(present rows, their normalised texts or decoded RGB images, problems) for raw values."""
        rows = [r for r, v in enumerate(values) if not _is_missing(v)]
        declared = get_modality(modality)
        if not declared.media:
            problems = [f"row {r}, column {modality!r}: {why}" for r in rows
                        if (why := text_problem(values[r], self.cfg))]
            return rows, [declared.prepare(values[r], self.cfg) for r in rows], problems
        items, problems = [], []
        for r in rows:
            try:
                items.append(decode_media(values[r], declared, self.cfg, self.media_root))
            except ValueError as exc:
                problems.append(f"row {r}, column {modality!r}: {exc}")
        return rows, items, problems

    def _encode(self, modality: str, n: int, rows: list[int], items: list):
        """(vectors [N, D], present [N], tokens ([N, L, D], [N, L]) or None) of ``n`` rows,
        ``items`` being the prepared values of ``rows`` (the rest are missing)."""
        present = torch.zeros(n, dtype=torch.bool)
        present[rows] = True
        found, found_tokens = self.encode_items(modality, items)
        dim, length = self.meta["dims"][modality], self.cfg.extract.max_tokens
        vectors = torch.zeros(n, dim)
        vectors[rows] = found
        tokens = None
        if found_tokens is not None:
            tokens = (torch.zeros(n, length, dim), torch.zeros(n, length, dtype=torch.bool))
            tokens[0][rows], tokens[1][rows] = found_tokens
        return vectors, present, tokens

    def logits(self, frame: pd.DataFrame) -> dict[str, torch.Tensor]:
        """Every head's logits for raw inputs; absent columns count as missing.

        Raises :class:`InvalidInput` naming every bad row before anything is encoded.
        """
        problems = check_request(frame, self.modalities)
        if problems:
            raise InvalidInput(problems)
        prepared = {}
        for m in self.modalities:
            values = frame[m].tolist() if m in frame.columns else [None] * len(frame)
            rows, items, found = self._prepare(m, values)
            prepared[m] = rows, items
            problems += found
        if problems:
            raise InvalidInput(problems)
        vectors, present, tokens = {}, {}, {}
        for m, (rows, items) in prepared.items():
            vectors[m], present[m], tokens[m] = self._encode(m, len(frame), rows, items)
        with torch.inference_mode():
            return self.head.eval().forward_all(vectors, present,
                                                tokens if self.head.spec.token_inputs else None)

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        logits = self.logits(frame)
        # Evaluation's path exactly: the head's probabilities, then the temperature (fitted on
        # rows the model never trained on) and the floor that keeps them off 0 and 1.
        probs = apply_temperature(logits[self.head.spec.target].softmax(-1).numpy(),
                                  float(self.meta.get("temperature", 1.0)))
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
        _ = self.predictor.encoders  # loaded with the model, not at the first request

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        frame = pd.DataFrame(model_input)
        # MLflow's schema enforcement drops columns the signature does not name before this
        # runs, so a misspelt column arrives as an absent one: require every column (null
        # where a modality is missing) to name the mistake instead of serving a guess.
        absent = [m for m in self.predictor.modalities if m not in frame.columns]
        if absent:
            raise InvalidInput([f"the request has no column(s) {absent}: this model reads "
                                f"{self.predictor.modalities}; send each, null where a modality "
                                f"is missing, as dataframe_records or dataframe_split with "
                                f"columns (unknown columns are dropped by the server, and so are "
                                f"the unnamed columns of an 'inputs' array; a JSON body sent as "
                                f"text/csv arrives like this too: send JSON with Content-Type: "
                                f"application/json)"])
        if len(frame) == 0:
            raise InvalidInput(["the request has no rows: send one row per sample"])
        return self.predictor.predict(frame)
