"""Fine-tuning (fusion.finetune): what changes, what ships, and a resume after a kill."""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from crossfuse.batch.stages import run_batch_in_process
from crossfuse.config import ConfigError, load_config
from crossfuse.encoders import build_encoder
from crossfuse.encoders.adapt import FinetuneSpec, split_encoder
from crossfuse.errors import UserError
from crossfuse.features.store import read_feature_set
from crossfuse.fusion.model import load_fusion_head
from crossfuse.registry.serving import FusionPredictor
from crossfuse.training import finetune as finetune_module
from crossfuse.training.finetune import finetune

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_layer_text_model(tmp_path_factory, tiny_text_model) -> Path:
    """A tiny random BERT with two blocks (the shared one has one), the shared tokenizer."""
    from transformers import BertConfig, BertModel

    out = tmp_path_factory.mktemp("tiny-bert-2")
    torch.manual_seed(1)
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=64,
                         max_position_embeddings=128)).save_pretrained(out)
    for f in tiny_text_model.iterdir():
        if f.name.startswith(("tokenizer", "vocab", "special")):
            shutil.copy(f, out / f.name)
    return out


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, sample_dataset, two_layer_text_model, tiny_image_model):
    """The sample data preprocessed and extracted with the tiny encoders (frozen features)."""
    from conftest import build_config

    from crossfuse.data.preprocess import preprocess
    from crossfuse.features.extract import extract

    root = tmp_path_factory.mktemp("finetune")
    cfg = build_config(root, sample_dataset, two_layer_text_model, tiny_image_model,
                       "fusion.method=concat", "fusion.hidden_dim=32", "train.epochs=6",
                       "train.patience=6", "evaluate.robustness.raw=false",
                       "evaluate.efficiency=false")
    preprocess(cfg, sample_dataset, root / "pre")
    extract(cfg, root / "pre", root / "features")
    return cfg, root


def _with(cfg, **fusion):
    return cfg.model_copy(update={"fusion": cfg.fusion.model_copy(update=fusion)})


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


@pytest.mark.parametrize("how,changed", [
    ("top:1", "encoder.layer.1."),            # every weight of the last block may move
    ("lora:4", "encoder.layer.1.")])          # adapters merged into the last block's linears
def test_only_the_adapted_blocks_of_the_shipped_encoder_change(prepared, two_layer_text_model,
                                                               tmp_path, how, changed):
    from crossfuse.training.train import train

    cfg, root = prepared
    cfg = _with(cfg, finetune=how)
    train(cfg, root / "features", tmp_path / "model", preprocessed=root / "pre")

    before, after = _weights(two_layer_text_model), _weights(tmp_path / "model/encoders/text")
    assert set(before) == set(after)
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith(changed) for k in moved), moved
    if how.startswith("lora"):  # LoRA adapts linear layers only: LayerNorms stay as they were
        assert all(k.endswith("weight") and "LayerNorm" not in k for k in moved)
    # The frozen part gives the same hidden states it gave before fine-tuning.
    spec = load_fusion_head(tmp_path / "model")[1]
    assert spec["encoders"]["text"]["adapted"]["how"] == how
    assert spec["encoders"]["text"]["adapted"]["blocks"] == 1
    assert spec["encoders"]["image"]["adapted"]["blocks"] == 1  # the tiny ViT's only block
    served = FusionPredictor(tmp_path / "model").encoder("text")
    frozen = build_encoder(f"hf:{two_layer_text_model}", "text")
    texts = ["a red circle at night", "two blue squares"]
    inputs = served.processor(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        a = served.model(**inputs, output_hidden_states=True).hidden_states
        b = frozen.model(**inputs, output_hidden_states=True).hidden_states
    assert torch.allclose(a[1], b[1], atol=1e-6)           # entering the adapted block: same
    assert not torch.allclose(a[2], b[2], atol=1e-4)       # out of it: adapted


def test_a_finetuned_model_scores_the_same_in_evaluation_serving_and_batch(
        prepared, tmp_path, sample_dataset):
    from conftest import batch_config, run_stages

    cfg, _ = prepared
    cfg = _with(cfg, finetune="lora:4")
    cfg = cfg.model_copy(update={"mlflow": cfg.mlflow.model_copy(update={
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"})})
    _, registration = run_stages(cfg, tmp_path / "train")
    assert registration.version == "1"

    evaluated = pd.read_parquet(tmp_path / "train/evaluation/predictions.parquet")
    test = evaluated["id"].tolist()
    manifest = pd.read_csv(sample_dataset / "manifest.csv", dtype=str, keep_default_na=False)
    rows = manifest.set_index("id").loc[test]
    served = FusionPredictor(tmp_path / "train/model", media_root=sample_dataset).predict(
        pd.DataFrame({"text": rows["text"].tolist(),
                      "image": [str(sample_dataset / p) for p in rows["image"]]}))
    assert served["label"].tolist() == evaluated["predicted"].tolist()
    p_cols = [c for c in evaluated.columns if c.startswith("p_")]
    np.testing.assert_allclose(served[p_cols].to_numpy(), evaluated[p_cols].to_numpy(), atol=1e-4)

    data = tmp_path / "test-rows"
    shutil.copytree(sample_dataset, data)
    manifest[manifest["id"].isin(test)].to_csv(data / "manifest.csv", index=False)
    scoring = batch_config(cfg, data)  # version 1, promoted or not (tiny data may lose the gate)
    scoring = scoring.model_copy(update={"predict": scoring.predict.model_copy(update={
        "model": f"{cfg.model_name()}/1"})})
    result = run_batch_in_process(scoring, tmp_path / "scored")
    scored = pd.read_parquet(result.predictions).merge(evaluated, on="id", suffixes=("", "_eval"))
    assert len(scored) == len(test) and (scored["predicted"] == scored["predicted_eval"]).all()
    for c in p_cols:
        np.testing.assert_allclose(scored[c], scored[f"{c}_eval"], atol=1e-4)

    from mlflow import MlflowClient

    tags = MlflowClient(cfg.mlflow.tracking_uri).get_model_version(cfg.model_name(), "1").tags
    assert tags["crossfuse.finetune.text"].startswith("lora:4 on the last 1 blocks of hf:")


def test_a_fit_killed_mid_epoch_resumes_to_the_same_model(prepared, tmp_path, monkeypatch):
    cfg, root = prepared
    cfg = _with(cfg, finetune="top:1")
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={
        "checkpoint_dir": str(tmp_path / "ckpt"), "patience": 10})})
    fs = read_feature_set(root / "features")
    whole = finetune(cfg.model_copy(update={"train": cfg.train.model_copy(update={
        "checkpoint_dir": str(tmp_path / "uninterrupted")})}), fs, root / "pre")

    real, steps = torch.nn.utils.clip_grad_norm_, []

    def dies_in_epoch_3(params, norm):
        steps.append(1)
        if len(steps) == 2 * batches + 1:  # the first step of the third epoch
            raise KeyboardInterrupt
        return real(params, norm)

    batches = -(-len(fs.rows("train")) // cfg.train.batch_size)
    monkeypatch.setattr(finetune_module.torch.nn.utils, "clip_grad_norm_", dies_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        finetune(cfg, fs, root / "pre")
    monkeypatch.setattr(finetune_module.torch.nn.utils, "clip_grad_norm_", real)
    epochs_seen = []
    resumed = finetune(cfg, fs, root / "pre", on_epoch=lambda e, m: epochs_seen.append(e))

    assert epochs_seen == list(range(1, cfg.train.epochs + 1))
    assert resumed.result.history == whole.result.history
    for m in whole.features.vectors:
        assert torch.allclose(resumed.features.vectors[m], whole.features.vectors[m], atol=1e-6)


def test_a_spec_no_encoder_can_take_is_refused_with_the_fix(prepared):
    cfg, root = prepared
    with pytest.raises(UserError, match="use none, top:<n>"):
        FinetuneSpec.parse("lora")
    with pytest.raises(ConfigError, match="not auto: set fusion.method"):
        load_config(None, ["fusion.finetune=top:1"], env={})
    effnet = build_encoder("efficientnet-lite0", "image")
    with pytest.raises(UserError, match="fine-tune efficientnet-lite0 with top:<n>"):
        split_encoder(effnet, FinetuneSpec.parse("lora:8"))
    with pytest.raises(UserError, match="choose one of"):
        from crossfuse.training.train import train

        train(_with(cfg, finetune="top:1", method="auto"), root / "features", root / "unused",
              preprocessed=root / "pre")


def _auto_finetune(cfg):
    return cfg.model_copy(update={"fusion": cfg.fusion.model_copy(update={
        "method": "auto", "auto": cfg.fusion.auto.model_copy(update={
            "finetune": True, "finetune_candidates": ["top:1"], "folds": 3})})})


def test_auto_cross_fits_a_finetuned_candidate_and_ranks_it_by_the_noise_rule(prepared, tmp_path):
    import json

    from crossfuse.training.selection import fusion_earns_its_place, rank
    from crossfuse.training.train import SELECTION_FILE, train

    cfg, root = prepared
    train(_auto_finetune(cfg), root / "features", tmp_path / "model", preprocessed=root / "pre")

    selection = json.loads((tmp_path / "model" / SELECTION_FILE).read_text())
    rows = {r["candidate"]: r for r in selection["ranked"]}
    tuned = rows["finetune:top:1"]
    assert tuned["kind"] == "finetuned" and len(tuned["folds"]) == 2  # folds 1 and 2 scored
    assert tuned["epochs"] >= 1 and "ensemble" in rows
    assert "finetune:top:1" not in rows["ensemble"]["members"]     # its heads read other vectors
    frozen = next(r for r in selection["ranked"] if r["kind"] != "finetuned")

    def candidate(r):
        from crossfuse.training.selection import Candidate

        return Candidate(r["candidate"], r["modalities"].split("+"), r["folds"], np.zeros((0, 2)))
    earned = (tuned["cv_macro_f1_mean"] > frozen["cv_macro_f1_mean"]
              and fusion_earns_its_place(candidate(tuned), candidate(frozen)))
    assert (selection["winner"] == "finetune:top:1") == earned
    assert rank([candidate(r) for r in selection["ranked"]])[0].name == selection["winner"]
    assert (tmp_path / "model/encoders").exists() == earned
    if not earned:
        assert "fine-tuning did not earn its place" in selection["verdict"]


def test_a_finetuned_auto_winner_ships_refitted_with_its_encoders(prepared, tmp_path, monkeypatch):
    import json

    from crossfuse.evaluation.evaluate import evaluate
    from crossfuse.training import selection as selection_module
    from crossfuse.training.train import SELECTION_FILE, train

    real_rank = selection_module.rank

    def tuned_first(candidates):  # as if it had beaten the frozen winner by more than the noise
        order = real_rank(candidates)
        return sorted(order, key=lambda c: c.kind != "finetuned")
    monkeypatch.setattr(selection_module, "rank", tuned_first)
    cfg, root = prepared
    cfg = _auto_finetune(cfg)
    train(cfg, root / "features", tmp_path / "model", preprocessed=root / "pre")

    spec = load_fusion_head(tmp_path / "model")[1]
    assert spec["chosen"] == "finetune:top:1" and spec["shipped"] == "refit"
    assert spec["calibration_rows"] == json.loads(
        (tmp_path / "model" / SELECTION_FILE).read_text())["calibration_rows"]
    assert {e["adapted"]["how"] for e in spec["encoders"].values()} == {"top:1"}
    metrics = evaluate(cfg, root / "features", tmp_path / "model", tmp_path / "eval",
                       preprocessed=root / "pre").metrics
    evaluated = pd.read_parquet(tmp_path / "eval/predictions.parquet")
    data = Path(cfg.data.path)
    rows = pd.read_csv(data / "manifest.csv").set_index("id").loc[evaluated["id"]]
    served = FusionPredictor(tmp_path / "model", media_root=data).predict(pd.DataFrame(
        {"text": rows["text"].tolist(), "image": [str(data / p) for p in rows["image"]]}))
    assert served["label"].tolist() == evaluated["predicted"].tolist()
    # The frozen unimodal candidates are scored on the frozen vectors they were trained on.
    from crossfuse.evaluation.evaluate import score_test_split

    frozen = read_feature_set(root / "features")
    for m in ("image", "text"):
        saved = load_fusion_head(tmp_path / "model/baselines" / m)[0]
        assert metrics[f"baseline_{m}_test_macro_f1"] == score_test_split(saved, frozen, [m]).macro_f1
    assert not (tmp_path / "eval/features").exists()


def test_an_adapted_efficientnet_runs_on_onnx_runtime_under_its_own_weights(tmp_path):
    from PIL import Image

    from crossfuse.encoders import place_encoder
    from crossfuse.encoders.adapt import load_adapted_encoder

    frozen = build_encoder("efficientnet-lite0", "image")
    split = split_encoder(frozen, FinetuneSpec.parse("top:1"))
    split.adapt()
    torch.manual_seed(0)
    with torch.no_grad():  # as training would: the top's weights move
        for p in split.top.parameters():
            p.add_(0.02 * torch.randn_like(p))
    images = [Image.new("RGB", (64, 64), (200, 30, 30)), Image.new("RGB", (64, 64), (30, 30, 200))]
    with torch.no_grad():
        trained = split.top.eval()(split.bottom(images))
    record = split.save(tmp_path / "encoders/image")
    entry = {"name": "efficientnet-lite0", "adapted": {**record, "folder": "encoders/image"}}
    adapted = load_adapted_encoder(entry, tmp_path, "image")
    assert adapted.cache_key != frozen.cache_key

    exports = tmp_path / "onnx"
    place_encoder(adapted, "cpu", "onnxruntime", exports)   # raises if the export disagrees
    place_encoder(frozen, "cpu", "onnxruntime", exports)
    assert adapted.backend == "onnxruntime" and len(list(exports.glob("*.onnx"))) == 2
    served = adapted.encode(images)
    assert torch.nn.functional.cosine_similarity(served, trained).min() > 0.999
    assert torch.nn.functional.cosine_similarity(served, frozen.encode(images)).min() < 0.999
