"""Fine-tuning: train the encoders' tops (``fusion.finetune``) together with the fusion head.

The frozen encoders' vectors come from the feature set as usual. For each modality whose
encoder is adapted (:mod:`crossfuse.encoders.adapt`), the train stage reads the preprocessed
items, runs the frozen bottom of the encoder once per item (cached by content under
``extract.cache_dir``, so a rerun or another candidate does not pay it again), and each
epoch runs only the adapted top blocks on those cached outputs.

Training is the head's loop (:mod:`crossfuse.training.loop`) with the tops inside it:
discriminative learning rates (the encoder's is ``fusion.finetune_lr_scale`` times the
head's), gradient clipping at ``fusion.finetune_clip``, mixed precision (bf16) on a GPU,
early stopping on validation macro-F1 and a checkpoint after every epoch that a killed run
resumes from.

Example
-------
>>> model = finetune(cfg, fs, Path("preprocessed"))               # doctest: +SKIP
>>> model.result.best_val_macro_f1, sorted(model.splits)         # doctest: +SKIP
(0.93, ['text'])
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from crossfuse.config import RunConfig
from crossfuse.data.preprocess import read_samples
from crossfuse.encoders import build_encoder, resolve_device
from crossfuse.encoders.adapt import ADAPTED_DIR, EncoderSplit, FinetuneSpec, can_finetune, split_encoder
from crossfuse.errors import UserError
from crossfuse.features.extract import _item_hashes, _load_items
from crossfuse.features.store import FeatureCache, FeatureSet, SplitInputs
from crossfuse.fusion import FUSION_METHODS, FusionHead, build_fusion_head
from crossfuse.progress import progress
from crossfuse.training.checkpoint import checkpoint_key, load_checkpoint, save_checkpoint
from crossfuse.training.loop import (
    EpochCallback,
    LoopState,
    TrainResult,
    build_spec,
    drop_modalities,
    seed_everything,
    training_loss,
    validation_metrics,
)

log = logging.getLogger(__name__)

BOTTOMS_DIR = "bottoms"  # under extract.cache_dir: the frozen bottoms' outputs, by content
BOTTOM_BATCH = 32


@dataclass
class Finetuned:
    """A fine-tuning's outcome: the head, the adapted splits (their tops trained), the feature
    set with the adapted modalities' vectors re-made by the trained tops, and the result."""

    head: FusionHead
    splits: dict[str, EncoderSplit]
    features: FeatureSet
    result: TrainResult


class FinetunedFusion(nn.Module):
    """The fusion head with the adapted encoders' tops in front of it.

    ``forward(vectors, bottoms, present)``: frozen modalities' vectors ``{m: [B, D_m]}``,
    adapted modalities' bottom outputs ``{m: {name: [B, ...]}}`` -> every head's logits.
    """

    def __init__(self, head: FusionHead, tops: dict[str, nn.Module]):
        super().__init__()
        self.head, self.tops = head, nn.ModuleDict(tops)

    def vectors(self, vectors: dict[str, torch.Tensor], bottoms: dict[str, dict[str, torch.Tensor]],
                present: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The head's input vectors: the tops' outputs (zero where the modality is absent)."""
        made = {m: top(bottoms[m]).float() * present[m].unsqueeze(1).to(torch.float32)
                for m, top in self.tops.items()}
        return {**vectors, **made}

    def forward(self, vectors, bottoms, present) -> dict[str, torch.Tensor]:
        return self.head.forward_all(self.vectors(vectors, bottoms, present), present, None)


def finetune_spec(cfg: RunConfig) -> FinetuneSpec:
    return FinetuneSpec.parse(cfg.fusion.finetune)


def adapted_modalities(cfg: RunConfig, encoders: dict[str, dict]) -> list[str]:
    """The modalities whose encoder ``fusion.finetune`` adapts (the rest stay frozen).

    Raises :class:`UserError` when it names a way none of the run's encoders can be adapted.
    """
    spec = finetune_spec(cfg)
    chosen = [m for m, e in encoders.items() if can_finetune(e["name"], spec)]
    if spec.active and not chosen:
        names = {m: e["name"] for m, e in encoders.items()}
        raise UserError(f"fusion.finetune={spec.describe()} adapts none of this run's encoders "
                        f"{names}: top:<n> adapts transformers encoders (minilm, hf:<model>) and "
                        f"efficientnet-lite0, lora:<rank> transformers encoders only")
    return chosen


def build_splits(cfg: RunConfig, fs: FeatureSet, modalities: list[str]) -> dict[str, EncoderSplit]:
    """Each adapted modality's encoder, split at the cut ``fusion.finetune`` asks for."""
    spec = finetune_spec(cfg)
    return {m: split_encoder(build_encoder(fs.encoders[m]["name"], m, offline=cfg.extract.hf_offline,
                                           trust_remote_code=cfg.extract.trust_remote_code),
                             spec, cfg.fusion.finetune_max_tokens)
            for m in modalities}


def bottom_outputs(cfg: RunConfig, fs: FeatureSet, modality: str, split: EncoderSplit,
                   preprocessed: Path) -> dict[str, torch.Tensor]:
    """The frozen bottom's outputs for every row of ``fs`` (zeros where ``modality`` is absent),
    through the content-addressed cache; only items it lacks are read and encoded."""
    cache = FeatureCache(Path(cfg.extract.cache_dir) / BOTTOMS_DIR, split.cache_key)
    hashes = fs.index[f"hash_{modality}"].tolist()
    present = fs.present(modality).numpy()
    wanted = sorted({h for h, p in zip(hashes, present, strict=False) if p and h not in cache})
    if wanted:
        samples = read_samples(preprocessed)[0]
        have = samples[modality].notna() & (samples[modality].astype(str) != "")
        rows_of = dict(zip(_item_hashes(samples[have], modality, preprocessed),
                           np.flatnonzero(have.to_numpy()), strict=False))
        lost = [h for h in wanted if h not in rows_of]
        if lost:
            raise UserError(f"{len(lost)} {modality} items of the feature set are not in "
                            f"{preprocessed}: give the train stage the preprocessed folder the "
                            f"features were extracted from")
        for s in progress(range(0, len(wanted), BOTTOM_BATCH), desc=f"finetune {modality} bottom",
                          unit="batch"):
            chunk = wanted[s:s + BOTTOM_BATCH]
            items = _load_items(samples, modality, preprocessed, [int(rows_of[h]) for h in chunk])
            cache.put(chunk, split.bottom(list(items) if modality == "text" else items))
    rows = np.flatnonzero(present)
    found = cache.get([hashes[r] for r in rows]) if len(rows) else {}
    out = {}
    for name, tensor in found.items():
        full = torch.zeros((len(hashes), *tensor.shape[1:]), dtype=tensor.dtype)
        full[torch.from_numpy(rows)] = tensor
        out[name] = full
    if "mask" in out and len(rows):  # keep the positions some row uses: the rest are padding
        used = int(out["mask"].any(0).nonzero().max()) + 1
        out = {k: v[:, :used] for k, v in out.items()}
    return out


def _select(bottoms: dict[str, dict[str, torch.Tensor]], rows: torch.Tensor, device) -> dict:
    return {m: {k: v[rows].to(device) for k, v in b.items()} for m, b in bottoms.items()}


def _autocast(device: torch.device):
    # bf16 on a GPU; on a CPU autocast is off (bf16 there is many times slower than fp32).
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def adapted_vectors(model: FinetunedFusion, bottoms: dict, present: dict, rows: torch.Tensor,
                    device, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """The trained tops' vectors ``{m: [len(rows), D_m]}`` (eval mode, float32, on the CPU)."""
    model.eval()
    out = {m: [] for m in model.tops}
    for s in range(0, len(rows), batch_size):
        part = rows[s:s + batch_size]
        with _autocast(device):
            made = model.vectors({}, _select(bottoms, part, device),
                                 {m: present[m][part].to(device) for m in model.tops})
        for m in out:
            out[m].append(made[m].float().cpu())
    return {m: torch.cat(v) if v else torch.empty(0) for m, v in out.items()}


def finetune(cfg: RunConfig, fs: FeatureSet, preprocessed: Path,
             on_epoch: EpochCallback | None = None, epochs: int | None = None) -> Finetuned:
    """Fine-tune the adapted encoders' tops with ``cfg.fusion.method``'s head on ``fs``'s train
    split, early-stopped on its validation split; checkpointed under ``train.checkpoint_dir``.

    With ``epochs``: exactly that many epochs and no validation split (a cross-fit fold model
    or a refit, whose epoch count was chosen elsewhere); the last epoch's weights are kept.
    """
    fusion, train, seed = cfg.fusion, cfg.train, cfg.seed
    if fusion.method not in FUSION_METHODS:
        raise UserError(f"fusion.finetune trains one fusion method with the encoders; "
                        f"fusion.method={fusion.method!r}: choose one of {sorted(FUSION_METHODS)}")
    if preprocessed is None or not Path(preprocessed).is_dir():
        raise UserError(f"fusion.finetune={fusion.finetune} reads the preprocessed items, but the "
                        f"train stage got no preprocessed folder ({preprocessed})")
    modalities = fs.modalities
    adapted = adapted_modalities(cfg, {m: fs.encoders[m] for m in modalities})
    frozen = [m for m in modalities if m not in adapted]
    if frozen:
        log.info("fine-tuning %s; %s stay frozen", adapted, frozen)
    splits = build_splits(cfg, fs, adapted)
    bottoms = {m: bottom_outputs(cfg, fs, m, s, Path(preprocessed)) for m, s in splits.items()}
    device = resolve_device(cfg.extract.device)

    seed_everything(seed)
    spec = build_spec(fs, fusion, modalities)
    if spec.token_inputs:
        raise UserError(f"fusion.finetune trains the encoders' pooled vectors, but "
                        f"fusion.method={fusion.method} reads token sequences here; set "
                        f"extract.token_sequences=false, or fusion.finetune=none")
    model = FinetunedFusion(build_fusion_head(spec), {m: s.top for m, s in splits.items()})
    trainable = {m: s.adapt() for m, s in splits.items()}
    log.info("fine-tuning %s: %s trainable encoder weights", fusion.finetune, trainable)
    model.to(device)
    optimiser = torch.optim.AdamW(
        [{"params": list(model.head.parameters()), "lr": train.lr},
         {"params": [p for p in model.tops.parameters() if p.requires_grad],
          "lr": train.lr * fusion.finetune_lr_scale}], weight_decay=train.weight_decay)
    generator = torch.Generator().manual_seed(seed)

    rows_tr, rows_va = fs.rows("train"), fs.rows("val")
    if len(rows_tr) == 0 or (epochs is None and len(rows_va) == 0):
        raise UserError(f"need train and val samples, got {len(rows_tr)} train / {len(rows_va)} "
                        f"val; add samples or change preprocess.split")
    present = {m: fs.present(m) for m in modalities}
    labels = fs.labels_of()
    targets = {spec.target: labels, **{t: fs.labels_of(t) for t in spec.extra_targets}}
    key = (f"{checkpoint_key(fs, fusion, train, seed, modalities)}-{epochs or 'stop'}"
           if train.checkpoint_dir else "")
    ckpt = Path(train.checkpoint_dir) / f"finetune-{key}.pt" if key else None
    saved = load_checkpoint(ckpt, key) if ckpt else None
    state = LoopState.from_checkpoint(saved, model, optimiser, generator) if saved else LoopState()
    if saved:
        log.info("resuming fine-tuning from the checkpoint of epoch %d (%s)", len(state.history), ckpt)
        for row in state.history if on_epoch else []:
            on_epoch(row["epoch"], {k: v for k, v in row.items() if k != "epoch"})
    params = [p for p in model.parameters() if p.requires_grad]
    for epoch in range(len(state.history) + 1, (epochs or train.epochs) + 1):
        if state.stopped:
            break
        model.train()
        order = rows_tr[torch.randperm(len(rows_tr), generator=generator)]
        total = 0.0
        for s in range(0, len(order), train.batch_size):
            rows = order[s:s + train.batch_size]
            kept = drop_modalities({m: p[rows] for m, p in present.items()},
                                   train.modality_dropout, generator)
            kept = {m: p.to(device) for m, p in kept.items()}
            vectors = {m: fs.vectors[m][rows].to(device) for m in frozen}
            with _autocast(device):
                out = model(vectors, _select(bottoms, rows, device), kept)
                loss = training_loss({k: v.float() for k, v in out.items()},
                                     {t: y[rows].to(device) for t, y in targets.items()},
                                     kept, spec.target, fusion, train)
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, fusion.finetune_clip)
            optimiser.step()
            total += loss.item() * len(rows)
        metrics = {"train_loss": total / len(rows_tr)}
        if epochs is None:
            val = _inputs(model, fs, bottoms, present, rows_va, device)
            metrics.update(validation_metrics(model.head.cpu(), val))
            model.head.to(device)
            state.record(epoch, metrics, model, train.patience)
        else:
            state.history.append({"epoch": epoch, **metrics})
        if on_epoch:
            on_epoch(epoch, metrics)
        if ckpt:
            save_checkpoint(ckpt, state.to_checkpoint(key, model, optimiser, generator))
    if epochs is None:
        model.load_state_dict(state.best_state)
    model.cpu().eval()
    everything = torch.arange(len(fs.index))
    made = adapted_vectors(model, bottoms, present, everything, torch.device("cpu"))
    features = dataclasses.replace(fs, vectors={**fs.vectors, **made})
    log.info("fine-tuned %s on %s: best val macro-F1 %.4f at epoch %d/%d", fusion.method,
             "+".join(adapted), state.best[0], state.best_epoch, len(state.history))
    result = TrainResult(method=fusion.method, modalities=modalities,
                         best_epoch=state.best_epoch if epochs is None else epochs,
                         epochs_run=len(state.history), best_val_macro_f1=state.best[0],
                         history=state.history, checkpoint=ckpt)
    return Finetuned(head=model.head, splits=splits, features=features, result=result)


def _inputs(model: FinetunedFusion, fs: FeatureSet, bottoms, present, rows, device) -> SplitInputs:
    """``rows``' inputs for the head, the adapted modalities' vectors made by the tops now."""
    made = adapted_vectors(model, bottoms, present, rows, device)
    vectors = {m: (made[m] if m in made else fs.vectors[m][rows]) for m in fs.modalities}
    return SplitInputs(vectors, {m: present[m][rows] for m in fs.modalities}, fs.labels_of()[rows])


def adapted_folder(modality: str) -> str:
    """Where a model folder keeps ``modality``'s adapted encoder (relative to the folder)."""
    return f"{ADAPTED_DIR}/{modality}"


FINETUNED = "finetune:"  # an auto candidate's name: finetune:<fusion.finetune value>


def auto_finetune_on(cfg: RunConfig, preprocessed: Path | None) -> bool:
    """Whether ``auto`` tries fine-tuned candidates: ``fusion.auto.finetune``, or when null, when
    this machine has a GPU; either way only when the preprocessed items are here."""
    wanted = cfg.fusion.auto.finetune
    if wanted is None:
        wanted = torch.cuda.is_available()
    if wanted and preprocessed is None:
        log.warning("fusion.auto.finetune is on, but the train stage has no preprocessed items: "
                    "auto tries frozen candidates only")
    return bool(wanted) and preprocessed is not None


def candidate_config(cfg: RunConfig, spec: str, head: str, seed: int | None = None) -> RunConfig:
    """``cfg`` for one fine-tuned candidate: ``head`` with the encoders fine-tuned as ``spec``
    says, modality dropout as auto's fused candidates have it, no per-epoch checkpoints."""
    auto, train = cfg.fusion.auto, cfg.train
    rates = dict(train.modality_dropout)
    if auto.modality_dropout > 0:
        rates = {m: train.modality_dropout.get(m, auto.modality_dropout) for m in cfg.modalities}
    return cfg.model_copy(update={
        "seed": cfg.seed if seed is None else seed,
        "fusion": cfg.fusion.model_copy(update={"method": head, "finetune": spec}),
        "train": train.model_copy(update={"modality_dropout": rates, "checkpoint_dir": ""})})


def cross_fit_finetuned(cfg: RunConfig, fs: FeatureSet, plan, spec: str, head: str,
                        preprocessed: Path, on_fold=None):
    """One fine-tuned candidate cross-fitted like the others (:mod:`crossfuse.training.crossfit`).

    Its epoch count is chosen on the tuning fold (fold 0, early stopping, never scored);
    each scored fold's model then fine-tunes for exactly that many epochs on the other folds
    and scores its held-out fold with its own adapted encoders. Returns
    ``(fold_scores, oof [len(plan.rows), C], epochs, tuning macro-F1, RunConfig)``.
    """
    from crossfuse.metrics import macro_f1, predict_split
    from crossfuse.training.crossfit import UNUSED, with_splits

    tuned_cfg = candidate_config(cfg, spec, head)
    first = finetune(tuned_cfg, with_splits(fs, plan.rows, plan.tuning_view_splits()), preprocessed)
    epochs = max(1, first.result.best_epoch)
    labels = fs.labels_of()
    oof = np.full((len(plan.rows), len(fs.labels)), np.nan)
    scores = []
    for done, f in enumerate(plan.models, start=1):
        if f in plan.scored:
            view = with_splits(fs, plan.rows, np.where(plan.trains_on(f), "train", UNUSED))
            model = finetune(candidate_config(cfg, spec, head, seed=cfg.seed + f), view,
                             preprocessed, epochs=epochs)
            at = plan.folds == f
            rows = torch.from_numpy(plan.rows[at])
            made = model.features
            scored = predict_split(model.head, SplitInputs(
                {m: made.vectors[m][rows] for m in made.modalities},
                {m: made.present(m)[rows] for m in made.modalities}, labels[rows]))
            oof[at] = scored.probs
            scores.append(macro_f1(scored.labels, scored.probs.argmax(-1), len(fs.labels)))
        if on_fold:
            on_fold(done, len(plan.models))
    return scores, oof, epochs, first.result.best_val_macro_f1, tuned_cfg


def refit_finetuned(fs: FeatureSet, plan, tuned_cfg: RunConfig, epochs: int,
                    preprocessed: Path) -> Finetuned:
    """The fine-tuned winner trained again on every row outside the calibration slice, for the
    epochs its folds trained (what ships: one set of adapted encoders)."""
    from crossfuse.training.crossfit import with_splits

    rows = plan.fit_rows()
    everything = with_splits(fs, rows, np.full(len(rows), "train", dtype=object))
    return finetune(tuned_cfg, everything, preprocessed, epochs=epochs)
