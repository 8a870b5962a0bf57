"""The typed run configuration: the one place where defaults live.

A run is fully described by a :class:`RunConfig`. It is loaded from YAML
(``configs/default.yaml``), overridden with ``--set key=value`` pairs, and
serialised to JSON to become the pipeline's parameter, so every stage of a run
sees exactly the same values.

Example
-------
>>> cfg = load_config(None, overrides=["fusion.method=late", "train.epochs=5"])
>>> cfg.fusion.method, cfg.train.epochs
('late', 5)
"""

from __future__ import annotations

import difflib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from crossfuse.errors import UserError

MODALITIES = ("image", "text", "audio")


def _refuse_unknown(keys, known: tuple[str, ...], what: str) -> None:
    unknown = set(keys) - set(known)
    if unknown:
        raise ValueError(f"{what} {sorted(unknown)}; known: {list(known)}")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Section):
    path: str = Field("data", description="The dataset folder: manifest.csv plus the media it "
                                          "names (relative paths, confined to the folder).")
    name: str | None = Field(None, description="Dataset name; defaults to the folder name.")
    extra_targets: list[str] = Field(
        default_factory=list, description="More label columns to learn at once (multi-task).")
    extra_columns_file: str | None = Field(
        None, description="CSV in the dataset folder joined to the manifest on id "
                          "(e.g. extra_metadata.csv holding an extra target).")
    remote: str | None = Field(
        None, description="DVC remote URL (s3://..., gs://..., a folder). Set: the steps pull the "
                          "data version the .dvc file pins from it, md5-checked, instead of "
                          "reading `path` from their own disk (how cluster pods get the data).")
    remote_options: dict[str, str] = Field(
        default_factory=dict,
        description="DVC remote settings (`dvc remote modify`), e.g. {endpointurl: "
                    "http://minio:9000} for MinIO; credentials come from the environment.")
    dvc_file: str | None = Field(None, description="The .dvc file pinning the version; "
                                                    "default: <path>.dvc.")
    pinned: dict[str, Any] | None = Field(
        None, description="The .dvc file's output entry (md5, size, nfiles), filled in when a "
                          "run starts or is submitted; the steps pull exactly this.")
    fetch_dir: str = Field(".cache/crossfuse/data",
                           description="Where pulled data versions are kept, one folder per md5.")

    def dataset_name(self) -> str:
        return self.name or Path(self.path).resolve().name


class ValidationConfig(_Section):
    on_error: Literal["fail", "drop"] = Field(
        "fail", description="fail: any bad row stops the run before preprocessing; drop: bad "
                            "rows go to rejects.csv and the run goes on with the rest.")
    min_text_chars: int = Field(1, ge=0, description="Shorter text (after trimming) is a bad row.")
    max_text_chars: int = Field(2000, ge=1, description="Longer text is a bad row.")
    min_samples_per_class: int = Field(3, ge=1, description="A class with fewer valid rows stops the "
                                       "run (it cannot reach train, val and test).")
    max_image_pixels: int = Field(50_000_000, ge=1, description="Larger images (width x height) are "
                                  "bad rows: a guard against decompression bombs.")
    min_image_side: int = Field(16, ge=1, description="Images with a side shorter than this "
                                "(pixels) are used, upscaled, and counted in a warning.")
    max_aspect_ratio: float = Field(10.0, ge=1, description="Images longer than this many "
                                    "times their width (or wider than tall) are used, squashed "
                                    "to a square, and counted in a warning.")
    min_audio_seconds: float = Field(0.05, ge=0, description="Shorter audio is a bad row.")
    max_audio_seconds: float = Field(600.0, gt=0, description="Longer audio is a bad row.")
    max_audio_channels: int = Field(8, ge=1, description="Audio with more channels is a bad row "
                                    "(1..this many are mixed down to mono).")
    labels: list[str] | None = Field(None, description="Declared label set; None accepts any.")
    allow_missing_modalities: bool = Field(
        False, description="Accept rows lacking some modality (at least one must be there).")
    label_case: Literal["error", "fold", "keep"] = Field(
        "error", description="Labels that differ only by case (Cat, cat): error stops the run "
        "naming every variant and its lines; fold merges them into the most common spelling; "
        "keep treats them as different classes.")
    duplicates: Literal["error", "drop", "keep"] = Field(
        "error", description="Rows with the same content (media bytes + text) under different "
        "ids. error: a group that spans splits (leakage) or has conflicting labels rejects its "
        "rows; drop: keep each group's first row, reject the rest (all of a conflicting "
        "group); keep: only warn.")
    allow_class_loss: bool = Field(
        False, description="A class of the manifest whose rows were all rejected (on_error="
        "drop) is named as a warning; the gate refuses to promote such a model unless this "
        "is true.")


class SplitConfig(_Section):
    train: float = Field(0.7, gt=0, lt=1, description="Share of rows in train (without a split column).")
    val: float = Field(0.15, gt=0, lt=1, description="Share in validation: early stopping, calibration.")
    test: float = Field(0.15, gt=0, lt=1, description="Share in test: the reported metrics and the gate.")
    salt: str = Field("crossfuse", description="Hash salt; change it to draw a different split.")
    strategy: Literal["stratified", "hash"] = Field(
        "stratified", description="Without a split column: stratified puts each class's rows "
        "in hash order and cuts them by the fractions (every class with 3+ rows reaches train, "
        "val and test); hash picks each row's split from its own hash alone.")

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6 or min(self.train, self.val, self.test) <= 0:
            raise ValueError(f"split fractions must be positive and sum to 1, got {total:.3f}")
        return self


class PreprocessConfig(_Section):
    image_size: int = Field(224, ge=8, description="Images are resized to this square size (pixels).")
    lowercase_text: bool = Field(False, description="Lowercase text before encoding.")
    image_noise: float = Field(0.0, ge=0, description="A benchmark setting: Gaussian noise of "
                               "this std (pixels in [0, 1]) added to every image at "
                               "preprocessing, seeded by run seed and sample id, to degrade the "
                               "image modality as AV-MNIST does; the served model never adds it.")
    audio_seconds: float = Field(2.0, gt=0, description="Audio is mixed to mono, resampled to "
                                 "its encoder's rate, peak-normalised, then cut or zero-padded "
                                 "to this many seconds.")
    split: SplitConfig = Field(SplitConfig(), description="How rows are split when the "
                               "manifest has no split column.")


class ExtractConfig(_Section):
    encoders: dict[str, str] = Field(
        {"image": "efficientnet-lite0", "text": "minilm"},
        description="Modality -> encoder: a bundled name (efficientnet-lite0, minilm) or "
                    "hf:<local folder> for any transformers model. The modalities a run uses.")
    batch_size: int = Field(32, ge=1, description="Items per encoder forward pass.")
    shard_size: int = Field(1024, ge=1, description="Items per feature-store shard file.")
    cache_dir: str = Field(".cache/crossfuse/features", description="The content-addressed "
                           "feature cache (item bytes + encoder + settings -> vector).")
    token_sequences: bool = Field(False, description="Also store token sequences (for xattn).")
    max_tokens: int = Field(32, ge=1, description="Tokens kept per sample and modality (text "
                                            "truncated; images: a sqrt(n) x sqrt(n) grid).")
    hf_offline: bool = Field(True, description="Never reach a model hub (HF_HUB_OFFLINE).")
    trust_remote_code: bool = Field(False, description="Let hf: models run the Python code "
                                                       "their folder ships (unsandboxed).")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$",
                        description="Where the encoders run: auto (CUDA when the machine has a "
                                    "GPU), cpu, cuda or cuda:N. The fusion head trains on the CPU.")
    backend: Literal["auto", "torch", "onnxruntime"] = Field(
        "auto", description="What runs the encoders' networks: auto (ONNX Runtime on the CPU for "
        "encoders that support it, exported once and checked against PyTorch; else PyTorch), "
        "torch or onnxruntime. Each backend's features are cached under their own key.")
    gpu_batch_size: int = Field(256, ge=1, description="Items per forward pass on a GPU.")
    decode_workers: int = Field(
        0, ge=0, description="Processes that read and decode media ahead of the encoder; 0 = "
        "in the encoding process (measured fastest on 2 CPU cores and on an H100 machine: "
        "docs/performance.md).")

    @field_validator("encoders")
    @classmethod
    def _known_modalities(cls, v: dict[str, str]) -> dict[str, str]:
        _refuse_unknown(v, MODALITIES, "unknown modalities")
        if not v:
            raise ValueError("extract.encoders needs at least one modality")
        return v


class SearchConfig(_Section):
    trials: int = Field(0, ge=0, description="Optuna trials on the validation split; 0 = no search.")
    epochs: int = Field(40, ge=1, description="Epoch budget of each trial.")


FINETUNE_PATTERN = r"^(none|top:[1-9]\d*|lora:[1-9]\d*(:[1-9]\d*)?)$"


class AutoConfig(_Section):
    """``fusion.method: auto``: choose the model by stratified cross-validation over train+val."""

    candidates: list[str] = Field(
        default_factory=lambda: ["linear", "late"],
        description="Fusion methods tried (each with the fusion/train settings of this config); "
                    "linear probes race first.")
    race: bool = Field(True, description="Drop a network whose first setting trails the best "
                                         "candidate so far on the tuning fold by more than twice "
                                         "that fold's noise, before its search and cross-fit.")
    unimodal: bool = Field(True, description="Also try one head per modality alone.")
    ensemble: bool = Field(True, description="Also try a Caruana-style weighted ensemble of the "
                                             "candidates, selected on their out-of-fold predictions.")
    folds: int = Field(5, ge=2, description="Cross-validation folds over train+val.")
    holdout_above: int = Field(5000, ge=0, description="Above this many train+val rows, one fold is held "
                                                 "out instead of all k (a single holdout).")
    ensemble_rounds: int = Field(25, ge=1, description="Greedy selection steps (with replacement).")
    calibration_fraction: float = Field(
        0.1, ge=0.0, lt=0.5, description="Share of each class's train+val rows (whole content "
        "groups) held out of every fit: the shipped model's temperature is fitted on its "
        "predictions there. 0, or a slice under 30 rows, = no slice and no temperature (T = 1).")
    trials: int | None = Field(
        None, ge=0, description="Optuna trials per network candidate on the tuning fold (fold "
        "0, which is then never scored); the best trial also sets the epochs every fold model "
        "trains. null scales with the data: many cheap trials on small data, a few on large "
        "(crossfuse.training.tuning.search_budget); 0 = the config's settings (one fit). "
        "Linear probes tune their penalty instead.")
    ship: Literal["bagged", "refit"] = Field(
        "bagged", description="What ships: bagged = the winner's fold models averaged; refit = "
        "the winner trained again on all of train+val (less the calibration slice) with the "
        "same settings and epochs.")
    modality_dropout: float = Field(
        0.2, ge=0.0, lt=1.0, description="Fused candidates train with this chance of losing each "
        "modality (where train.modality_dropout does not set one), so the chosen model answers "
        "sensibly when a modality is missing; 0 turns it off.")
    finetune: bool | None = Field(
        None, description="Also try the linear head with the encoders fine-tuned as each of "
        "finetune_candidates says (docs/finetuning.md), cross-validated like the rest; one wins "
        "only by beating the best frozen candidate by more than one standard error of the folds, "
        "and ships refitted. null = on when the train step has a GPU (torch sees one and the "
        "preprocessed items reach it), off on a CPU, where it costs k+1 fine-tunings (k to "
        "cross-fit, 1 to refit).")
    finetune_candidates: list[str] = Field(
        default_factory=lambda: ["top:1"], description="The fusion.finetune values tried as "
        "candidates when fusion.auto.finetune is on.")

    @field_validator("finetune_candidates")
    @classmethod
    def _finetune_values(cls, values: list[str]) -> list[str]:
        bad = [v for v in values if not re.match(FINETUNE_PATTERN, v) or v == "none"]
        if bad:
            raise ValueError(f"{bad}: each must be top:<n>, lora:<rank> or lora:<rank>:<n>")
        return values


class FusionConfig(_Section):
    method: str = Field("auto", description="A fusion method, or auto: choose by cross-validation "
                                              "among fusion.auto.candidates, unimodal heads and "
                                              "their ensemble.")
    hidden_dim: int = Field(256, ge=1, description="Width of the fusion head's hidden layer.")
    dropout: float = Field(0.2, ge=0, lt=1, description="Dropout in the fusion head.")
    options: dict[str, int | float | str] = Field(
        default_factory=dict, description="Method-specific settings, e.g. rank, factor, heads.")
    aux_weight: float = Field(0.0, ge=0, description="Weight of per-modality auxiliary heads' loss; "
                                               "0 turns them off.")
    bottleneck: int = Field(0, ge=0, description="Project each modality to this many dimensions "
                            "(LayerNorm -> Linear -> GELU) before fusing, so a wide encoder cannot "
                            "swamp a narrow one; 0 = off.")
    input_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on each modality's "
                                 "input features while training.")
    search: SearchConfig = Field(SearchConfig(), description="Hyper-parameter search for a "
                                 "single method.")
    finetune: str = Field(
        "none", pattern=FINETUNE_PATTERN,
        description="Fine-tune the encoders with the head (one fusion method, not auto): none "
        "(frozen encoders), top:<n> (unfreeze the last n blocks of every transformers encoder "
        "and of efficientnet-lite0) or lora:<rank>[:<n>] (LoRA adapters of that rank on the "
        "last n blocks, default half of them, of every transformers encoder). Other encoders "
        "stay frozen. docs/finetuning.md.")
    finetune_lr_scale: float = Field(0.1, gt=0, le=1, description="The adapted encoder blocks' "
                                     "learning rate as a share of train.lr (the head's).")
    finetune_clip: float = Field(1.0, gt=0, description="Gradient norm clipping while fine-tuning.")
    finetune_max_tokens: int = Field(64, ge=1, description="Fine-tuned text encoders read at most "
                                     "this many tokens (in training and when serving).")
    auto: AutoConfig = Field(AutoConfig(), description="Settings of fusion.method: auto.")

    @model_validator(mode="after")
    def _finetune_needs_one_method(self) -> FusionConfig:
        if self.finetune != "none" and self.method == "auto":
            raise ValueError(f"fusion.finetune={self.finetune} trains the encoders with one fusion "
                             f"method, not auto: set fusion.method (e.g. concat), or "
                             f"fusion.finetune=none")
        return self


class TrainConfig(_Section):
    epochs: int = Field(60, ge=1, description="Most epochs of one fit.")
    batch_size: int = Field(64, ge=1, description="Samples per optimiser step.")
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate.")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay.")
    patience: int = Field(10, ge=1, description="Stop after this many epochs without a better "
                          "validation macro-F1; the best epoch's weights are kept.")
    modality_dropout: dict[str, float] = Field(
        default_factory=dict, description="Per modality, the probability a training sample "
                                          "loses it (one modality always stays).")
    extra_target_weight: float = Field(0.5, ge=0, description="Loss weight of each extra target's "
                                       "head (multi-task).")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="Cross-entropy label "
                                   "smoothing (Szegedy et al. 2016): softer targets for small data.")
    checkpoint_dir: str = Field(".cache/crossfuse/checkpoints", description="Per-epoch training "
                                "state; a rerun of the same training resumes from it.")

    @field_validator("modality_dropout")
    @classmethod
    def _probabilities(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {m: p for m, p in v.items() if not 0.0 <= p < 1.0}
        if bad:
            raise ValueError(f"modality_dropout probabilities must be in [0, 1): {bad}")
        return v


class RobustnessConfig(_Section):
    levels: int = Field(11, ge=2, description="Noise levels evenly spaced from 0 to 1 (inclusive).")
    features: bool = Field(True, description="Gaussian noise on the encoded features, "
                                             "std = level x the feature's train-split std.")
    raw: bool = Field(True, description="Noise on the raw input, then re-encoded: pixel noise "
                                        "(std = level, pixels in [0, 1]) and word dropout "
                                        "(each word dropped with probability = level).")
    raw_max_samples: int = Field(256, ge=0, description="Test samples re-encoded per raw level "
                                                  "(the first ones in test order).")

    @field_validator("levels")
    @classmethod
    def _at_least_two(cls, v: int) -> int:
        if v < 2:
            raise ValueError(f"robustness.levels must be >= 2 (0 and 1 at least), got {v}")
        return v


class EvaluateConfig(_Section):
    unimodal_baselines: bool = Field(True, description="Score one model per modality alone on "
                                     "the same split, beside the fused one (fusion gain).")
    robustness: RobustnessConfig = Field(RobustnessConfig(), description="Noise sweeps.")
    permutation_repeats: int = Field(5, ge=0, description="Shuffles per modality for permutation "
                                                    "importance; 0 turns it off.")
    efficiency: bool = Field(True, description="Measure parameters, latency and peak memory: the "
                             "head's in evaluate; the served model's (a fresh process: load time, "
                             "raw-input latency, peak memory) in register, for a model it "
                             "promotes, reused when the same model bytes were profiled before.")
    efficiency_samples: int = Field(64, ge=0, description="Raw test samples timed end to end "
                                    "(0: no served-model profile).")


class DriftConfig(_Section):
    """How new data is compared with a model's training data (batch prediction)."""

    max_p_value: float = Field(0.01, gt=0, lt=1, description="A modality's embeddings drifted "
                               "when the MMD two-sample test's p-value is below this.")
    max_label_shift: float = Field(0.25, ge=0, le=1, description="Predicted labels drifted when "
                                   "their distribution is further than this (total variation) "
                                   "from the training labels'.")
    max_missing_change: float = Field(0.1, ge=0, le=1, description="A modality drifted when its "
                                      "missing-row rate rose by more than this.")
    permutations: int = Field(200, ge=19, description="Permutations of the MMD test (its "
                              "smallest p-value is 1 / (permutations + 1)).")
    max_samples: int = Field(500, ge=10, description="Rows per side in the MMD test (a seeded "
                             "draw above it), so its cost does not grow with the data.")
    require_embeddings: bool = Field(
        True, description="`crossfuse predict --fail-on-drift` also fails when the embeddings "
        "could not be compared (the model's training vectors are not in the feature cache or "
        "on storage.root): the verdict is then 'not checked', never 'none'.")


class PredictConfig(_Section):
    """Batch prediction: which model scores a folder of new data, and how."""

    model: str = Field("", description="The registered model that scores: NAME@ALIAS or "
                       "NAME/VERSION; empty = this config's model at @champion.")
    fail_on_drift: bool = Field(False, description="`crossfuse predict` exits 3 when any drift "
                                "figure crosses its threshold (the predictions are still "
                                "written), so a scheduled job can alert.")


class MlflowConfig(_Section):
    tracking_uri: str = Field("sqlite:///mlflow.db", description="MLflow tracking store: a "
                              "SQLite file or http(s):// server (env MLFLOW_TRACKING_URI wins).")
    artifact_root: str = Field("mlartifacts", description="Artifact folder of experiments "
                               "crossfuse creates in a local store.")
    experiment: str | None = Field(None, description="Defaults to crossfuse-<dataset name>.")

    @property
    def served(self) -> bool:
        """Whether the store is a tracking server, which keeps its own artifacts.

        >>> MlflowConfig(tracking_uri="http://mlflow:5000").served, MlflowConfig().served
        (True, False)
        """
        return self.tracking_uri.startswith(("http://", "https://", "databricks"))


class GuardrailConfig(_Section):
    max_ece_increase: float | None = Field(
        0.02, ge=0, description="The challenger's calibrated test ECE may exceed the champion's by at "
                          "most this much; null turns the guardrail off.")
    max_missing_modality_drop: float | None = Field(
        0.02, ge=0, description="With any one modality missing, the challenger's test macro-F1 may "
                          "fall below the champion's by at most this much; null turns it off.")
    min_fusion_gain: float | None = Field(
        0.0, ge=-1, le=1, description="A fused model's test macro-F1 minus its best unimodal baseline's "
                         "(fusion_gain_macro_f1) must be at least this, champion or not: a fused "
                         "model that loses to one modality is never promoted. Null turns it off.")


TEST_SCORES = ("macro_f1", "accuracy", "micro_f1", "auroc_ovr", "auprc_ovr", "log_loss",
               "log_loss_calibrated", "ece", "ece_calibrated")
_GATE_METRIC = re.compile(
    rf"test_(?:.+_)?(?:{'|'.join(TEST_SCORES)})|test_(?:precision|recall|f1)_.+"
    r"|fusion_gain_macro_f1|(?:baseline|present)_.+_test_(?:macro_f1|accuracy)"
    r"|robustness_.+_auc|importance_(?:drop|permutation)_.+|efficiency_.+")


def is_gate_metric(name: str) -> bool:
    """Whether the evaluate stage logs a metric of this name (for some data).

    >>> is_gate_metric("test_macro_f1"), is_gate_metric("test_f1_cat"), is_gate_metric("test_f2")
    (True, True, False)
    """
    return _GATE_METRIC.fullmatch(name) is not None


class RegistryConfig(_Section):
    model_name: str | None = Field(None, description="Defaults to crossfuse-<dataset name>.")
    metric: str = Field("test_macro_f1", description="The primary metric the gate compares.")
    greater_is_better: bool | None = Field(
        None, description="Direction of `metric`; null infers it (loss/ece/error: lower).")
    margin: float = Field(0.0, ge=-1, le=1, description="The challenger must beat the champion's primary "
                                           "metric by more than this.")
    guardrails: GuardrailConfig = Field(GuardrailConfig(), description="Checks a challenger "
                                        "must also pass to be promoted.")
    bootstrap: int = Field(
        1000, ge=0, description="Paired bootstrap resamples of the test predictions when the "
                                "champion's predictions cover the same test rows: promote only "
                                "when the 95% interval of the gain clears `margin`. 0 compares "
                                "the two numbers alone.")

    @field_validator("metric")
    @classmethod
    def _a_logged_metric(cls, v: str) -> str:
        if not is_gate_metric(v):
            raise ValueError(f"{v!r} is not a metric the evaluation logs; choose one of "
                             f"{', '.join(f'test_{n}' for n in TEST_SCORES)} or "
                             f"fusion_gain_macro_f1 (per class: test_f1_<class>; docs/mlflow.md "
                             f"lists every metric)")
        return v

    def higher_is_better(self) -> bool:
        """Whether a larger ``metric`` is better (explicit, or inferred from its name).

        >>> RegistryConfig(metric="test_log_loss").higher_is_better()
        False
        """
        if self.greater_is_better is not None:
            return self.greater_is_better
        return not any(word in self.metric for word in ("loss", "ece", "error"))


STAGES = ("validate", "preprocess", "extract", "merge_features", "train", "evaluate", "register")


class Toleration(_Section):
    """One Kubernetes toleration (the pod may run on nodes with the matching taint)."""

    key: str | None = Field(None, description="The taint's key.")
    operator: Literal["Equal", "Exists"] = Field("Equal", description="Equal: key and value "
                                                 "match; Exists: the key alone.")
    value: str | None = Field(None, description="The taint's value (with Equal).")
    effect: Literal["NoExecute", "NoSchedule", "PreferNoSchedule"] | None = Field(
        None, description="The taint effect tolerated; null: all.")


class StageResources(_Section):
    """Kubernetes resources of one pipeline step on a cluster (the local runner ignores all but
    the retries)."""

    cpu_request: str | None = Field(None, description='e.g. "2" or "500m"')
    cpu_limit: str | None = Field(None, description="CPU limit.")
    memory_request: str | None = Field(None, description='e.g. "4G"')
    memory_limit: str | None = Field(None, description="Memory limit; the pod is killed above it.")
    accelerator_type: str | None = Field(None, description='e.g. "nvidia.com/gpu"')
    accelerator_limit: int | None = Field(None, ge=1, description="Accelerators per pod.")
    retries: int = Field(0, ge=0, description="Retries of the step after a pod failure (the "
                         "local runner retries too); a retried train resumes from its checkpoint.")
    retry_backoff_seconds: int = Field(30, ge=0, description="Wait before the first retry "
                                       "(doubling after each).")
    node_selector: dict[str, str] = Field(
        default_factory=dict, description='Node labels the pod needs, e.g. {"pool": "gpu"}.')
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Taints the pod tolerates (e.g. on GPU nodes).")


def _default_resources() -> dict[str, StageResources]:
    light = StageResources(cpu_request="1", memory_request="2G", memory_limit="4G")
    heavy = StageResources(cpu_request="2", memory_request="4G", memory_limit="8G", retries=1)
    return {"validate": light, "preprocess": light, "extract": heavy, "merge_features": light,
            "train": heavy, "evaluate": heavy, "register": light}


class PipelineConfig(_Section):
    pipeline_root: str = Field("local_outputs", description="Where the local runner keeps "
                               "step outputs, one folder per run, and per-run logs "
                               "(logs/run-<time>-<pid>.log).")
    resources: dict[str, StageResources] = Field(
        default_factory=_default_resources,
        description="Per step: CPU/memory requests and limits, accelerator, retries, node "
                    "selector, tolerations.")
    extract_parts: int = Field(1, ge=1, description="Pods the extraction is spread over "
                                                     "(dsl.ParallelFor), then merged.")
    secret_env: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Kubernetes Secrets as environment variables of every step: secret name -> "
                    "{secret key: VARIABLE}, e.g. the DVC remote's AWS_ACCESS_KEY_ID.")
    stage_cache_dir: str | None = Field(
        ".cache/crossfuse/stages", description="Content-addressed records of the validate and "
        "preprocess outputs: a stage whose data, settings and code are unchanged restores its "
        "output from here instead of recomputing it; also the served-model profiles, by model "
        "bytes; null turns records off.")
    caching: bool = Field(False, description="KFP step caching. Off: every step logs to the "
                                             "run's MLflow run, a cached step would not; "
                                             "features, checkpoints and stage records are kept "
                                             "by content (storage.root) anyway.")

    @field_validator("resources")
    @classmethod
    def _known_stages(cls, v: dict[str, StageResources]) -> dict[str, StageResources]:
        _refuse_unknown(v, STAGES, "pipeline.resources: unknown steps")
        return {**_default_resources(), **v}  # a step you configure replaces its default


class StorageConfig(_Section):
    root: str | None = Field(
        None, description="Where run state that a later task, retry or run reads is kept: the "
        "feature cache (with the encoders' ONNX exports and the noised-input features), training "
        "checkpoints and stage records. Unset: the local folders extract.cache_dir, "
        "train.checkpoint_dir and pipeline.stage_cache_dir (one machine). An fsspec URL "
        "(s3://bucket/prefix, gs://..., abfs://..., file:///mnt/shared) or a local path, e.g. "
        "a volume every pod mounts: each task works in a local copy (storage.work_dir) and "
        "reads from and writes to <root>/features, <root>/checkpoints and <root>/stages.")
    options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec storage options for storage.root, e.g. "
        "{endpoint_url: http://minio:9000} for S3-compatible storage. Credentials come from the "
        "environment (pipeline.secret_env on a cluster), never from here.")
    work_dir: str | None = Field(
        None, description="With storage.root set: the task's local working copy of the state. "
        "Unset: a new temporary folder per task process (a pod's own disk), removed at exit.")
    heartbeat_seconds: float = Field(
        30.0, gt=0, description="How often a running stage stamps its MLflow run "
        "(crossfuse.heartbeat); `crossfuse runs gc` marks RUNNING runs whose stamp is older "
        "than its --stale-minutes KILLED.")


class ServingConfig(_Section):
    media_root: str | None = Field(
        None, description="The served model reads image paths only inside this folder; unset, "
        "requests must send base64 bytes (env CROSSFUSE_SERVING_MEDIA_ROOT overrides).")


class RunConfig(_Section):
    seed: int = Field(0, ge=0, description="One seed for splits, training and noise: same data + "
                      "config + seed = same metrics.")
    data: DataConfig = Field(DataConfig(), description="The dataset and its version.")
    validation: ValidationConfig = Field(ValidationConfig(), description="What a valid row "
                                         "is, and what happens to bad ones.")
    preprocess: PreprocessConfig = Field(PreprocessConfig(), description="Cleaning and the "
                                         "split.")
    extract: ExtractConfig = Field(ExtractConfig(), description="The frozen encoders and the "
                                   "feature cache.")
    fusion: FusionConfig = Field(FusionConfig(), description="The fusion model.")
    train: TrainConfig = Field(TrainConfig(), description="Training the fusion head.")
    evaluate: EvaluateConfig = Field(EvaluateConfig(), description="What the evaluate stage "
                                     "measures beyond the test metrics.")
    drift: DriftConfig = Field(DriftConfig(), description="Drift between training data and "
                               "data scored in batch.")
    predict: PredictConfig = Field(PredictConfig(), description="Batch prediction with a "
                                   "registered model.")
    mlflow: MlflowConfig = Field(MlflowConfig(), description="Tracking.")
    registry: RegistryConfig = Field(RegistryConfig(), description="The model registry and "
                                     "the promotion gate.")
    pipeline: PipelineConfig = Field(PipelineConfig(), description="The KFP pipeline: local "
                                     "outputs, cluster resources.")
    serving: ServingConfig = Field(ServingConfig(), description="The served model.")
    storage: StorageConfig = Field(StorageConfig(), description="Run state shared by tasks, "
                                   "retries and runs: a local folder or an object store.")

    @property
    def modalities(self) -> list[str]:
        """The modalities this run uses, in a fixed order."""
        return [m for m in MODALITIES if m in self.extract.encoders]

    def model_name(self) -> str:
        return self.registry.model_name or f"crossfuse-{self.data.dataset_name()}"

    def experiment_name(self) -> str:
        return self.mlflow.experiment or f"crossfuse-{self.data.dataset_name()}"

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        return cls.model_validate_json(text)

    def resolved(self, base: Path | None = None) -> RunConfig:
        """Return a copy whose relative paths are absolute (against ``base``, default cwd).

        Stages may run in another working directory (KFP subprocesses), so the
        config handed to the pipeline carries absolute paths only.
        """
        base = (base or Path.cwd()).resolve()
        data = self.model_copy(deep=True)

        def absolute(p: str) -> str:
            return str(p if Path(p).is_absolute() else (base / p).resolve())

        data.data.path = absolute(data.data.path)
        data.data.fetch_dir = absolute(data.data.fetch_dir)
        if data.data.dvc_file:
            data.data.dvc_file = absolute(data.data.dvc_file)
        data.extract.cache_dir = absolute(data.extract.cache_dir)
        data.train.checkpoint_dir = absolute(data.train.checkpoint_dir)
        data.mlflow.artifact_root = absolute(data.mlflow.artifact_root)
        data.pipeline.pipeline_root = absolute(data.pipeline.pipeline_root)
        if data.pipeline.stage_cache_dir:
            data.pipeline.stage_cache_dir = absolute(data.pipeline.stage_cache_dir)
        data.mlflow.tracking_uri = _absolute_sqlite_uri(data.mlflow.tracking_uri, base)
        if data.storage.root and "://" not in data.storage.root:
            data.storage.root = absolute(data.storage.root)
        if data.storage.work_dir:
            data.storage.work_dir = absolute(data.storage.work_dir)
        return data


def _absolute_sqlite_uri(uri: str, base: Path) -> str:
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str((base / uri[len(prefix) :]).resolve())
    return uri


def _parse_value(text: str) -> Any:
    """Parse a ``--set`` value as YAML so ``5`` is an int and ``true`` a bool."""
    return yaml.safe_load(text) if text != "" else ""


def apply_override(tree: dict[str, Any], assignment: str) -> None:
    """Apply one ``dotted.key=value`` override to a nested dict, in place.

    >>> t = {"fusion": {"method": "concat"}}
    >>> apply_override(t, "fusion.method=late"); t
    {'fusion': {'method': 'late'}}
    """
    if "=" not in assignment:
        raise ConfigError([f"--set {assignment!r} is not key=value (e.g. fusion.method=late)"])
    key, value = assignment.split("=", 1)
    parts = key.strip().split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError([f"--set {assignment!r}: {part!r} is not a section"])
    node[parts[-1]] = _parse_value(value)


def load_config(
    path: str | Path | None,
    overrides: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> RunConfig:
    """Load a run config from YAML, then apply environment and ``--set`` overrides.

    ``MLFLOW_TRACKING_URI`` from ``env`` (default: the process environment) overrides
    ``mlflow.tracking_uri``; explicit ``--set`` overrides win over both.

    Parameters
    ----------
    path: YAML file, or None for the built-in defaults.
    overrides: ``["section.key=value", ...]``.
    env: environment mapping to read ``MLFLOW_TRACKING_URI`` from.
    """
    env = os.environ if env is None else env
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"config file {path} not found (try configs/default.yaml)")
        tree = read_yaml(path)
    if env.get("MLFLOW_TRACKING_URI"):
        tree.setdefault("mlflow", {})["tracking_uri"] = env["MLFLOW_TRACKING_URI"]
    for assignment in overrides or []:
        apply_override(tree, assignment)
    try:
        cfg = RunConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError([_in_words(e) for e in exc.errors()]) from None
    problems = unknown_names(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg


def read_yaml(path: Path) -> dict[str, Any]:
    """The mapping a YAML config file holds; a syntax error names the file, line and column."""
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError([f"{where}: YAML syntax error ({problem}); fix that line"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ConfigError([f"{path}: a config is a YAML mapping of sections (fusion:, train:, "
                           f"...), not a {type(tree).__name__}"])
    return tree


class ConfigError(UserError, ValueError):
    """A config that cannot run; one line per bad key, each naming the key and the fix."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("bad config:\n" + "\n".join(f"  {p}" for p in problems))


def _in_words(error: dict) -> str:
    key = ".".join(str(part) for part in error["loc"])
    got = error.get("input")
    if error["type"] == "extra_forbidden":
        return f"{key}: no such key{did_you_mean(error['loc'])} (crossfuse config lists them all)"
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    message = error["msg"].removeprefix("Value error, ")
    return f"{key}: {message[0].lower() + message[1:]}{shown}"


def did_you_mean(loc: tuple) -> str:
    """``"; did you mean 'epochs'?"`` for a mistyped key at ``loc``, or "" when none is close.

    >>> did_you_mean(("train", "epoch"))
    "; did you mean 'train.epochs'?"
    """
    model: type[BaseModel] = RunConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        inner = field.annotation if field else None
        if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
            return ""
        model = inner
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.6)
    return f"; did you mean {'.'.join([*map(str, loc[:-1]), close[0]])!r}?" if close else ""


def unknown_names(cfg: RunConfig) -> list[str]:
    """Enumerated keys checked against the registries: methods and encoders that exist.

    >>> unknown_names(RunConfig(fusion={"method": "nope"}))[0][:57]
    "fusion.method: 'nope' is not a fusion method; choose auto"
    """
    from crossfuse.encoders import known_encoders
    from crossfuse.fusion import FUSION_METHODS

    methods = sorted(FUSION_METHODS)
    problems = []
    if cfg.fusion.method != "auto" and cfg.fusion.method not in FUSION_METHODS:
        problems.append(f"fusion.method: {cfg.fusion.method!r} is not a fusion method; choose "
                        f"auto or one of {', '.join(methods)}")
    bad = [c for c in cfg.fusion.auto.candidates if c not in FUSION_METHODS]
    if bad:
        problems.append(f"fusion.auto.candidates: {bad} are not fusion methods; choose from "
                        f"{', '.join(methods)}")
    for modality, name in cfg.extract.encoders.items():
        if name.startswith("hf:"):
            continue
        known = known_encoders(modality)
        if name not in known:
            problems.append(f"extract.encoders.{modality}: {name!r} is not an encoder for {modality}; "
                            f"choose {', '.join(known) or 'none built in'} or hf:<model id or "
                            f"folder>")
    return problems


def config_summary(cfg: RunConfig) -> dict[str, Any]:
    """Flatten a config to ``{"fusion.method": "concat", ...}`` for MLflow params."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            flat[prefix] = json.dumps(node) if isinstance(node, list | dict) else node

    walk("", cfg.model_dump())
    return flat
