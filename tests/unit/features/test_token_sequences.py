"""Token sequences: stored by extract, read by xattn, masked when missing, served alike."""

import pandas as pd
import pytest
import torch

from crossfuse.data.preprocess import preprocess
from crossfuse.evaluation.evaluate import evaluate
from crossfuse.features.extract import extract, pad_tokens
from crossfuse.features.store import read_feature_set
from crossfuse.fusion import FusionSpec, build_fusion_head
from crossfuse.registry.serving import FusionPredictor
from crossfuse.training.train import train


def test_pad_tokens():
    out = pad_tokens(torch.ones(2, 3, 4), torch.tensor([[1, 1, 0], [1, 0, 0]]).bool(), 5)
    assert out["tokens"].shape == (2, 5, 4) and out["mask"].sum().item() == 3
    assert pad_tokens(torch.ones(1, 9, 2), torch.ones(1, 9).bool(), 4)["mask"].shape == (1, 4)


@pytest.fixture
def token_run(sample_dataset, make_config, tmp_path):
    cfg = make_config(sample_dataset, "extract.token_sequences=true", "extract.max_tokens=16",
                      "fusion.method=xattn", "fusion.hidden_dim=32", "train.epochs=5",
                      "evaluate.unimodal_baselines=false")
    preprocess(cfg, sample_dataset, tmp_path / "pre")
    extract(cfg, tmp_path / "pre", tmp_path / "f")
    return cfg, tmp_path


def test_extract_stores_and_caches_token_sequences(token_run):
    cfg, tmp = token_run
    fs = read_feature_set(tmp / "f")
    tokens, mask = fs.tokens["text"]
    assert tokens.shape == (60, 16, 32) and mask.shape == (60, 16) and mask.dtype == torch.bool
    assert mask[:, 0].all() and not mask.all()  # short captions are padded
    assert fs.tokens["image"][0].shape == (60, 16, 32)  # tiny ViT: [CLS] + 16 patches, cut at 16
    again = extract(cfg, tmp / "pre", tmp / "f2")
    assert again.encoded == {"image": 0, "text": 0}
    assert torch.equal(read_feature_set(tmp / "f2").tokens["text"][0], tokens)


def test_xattn_on_tokens_ignores_missing_modality_values():
    dims = {"image": 6, "text": 5}
    head = build_fusion_head(FusionSpec("xattn", dims, 3, hidden_dim=16, token_inputs=True)).eval()
    g = torch.Generator().manual_seed(0)
    feats = {m: torch.randn(4, d, generator=g) for m, d in dims.items()}
    tokens = {m: (torch.randn(4, 7, d, generator=g), torch.ones(4, 7, dtype=torch.bool))
              for m, d in dims.items()}
    present = {"image": torch.tensor([True, True, False, True]),
               "text": torch.tensor([True, False, True, False])}
    out = head(feats, present, tokens)
    for m in dims:
        tokens[m][0][~present[m]] = float("nan")
        feats[m][~present[m]] = float("nan")
    assert torch.allclose(head(feats, present, tokens), out)
    with pytest.raises(ValueError, match="trained on token sequences"):
        head(feats, present)


def test_xattn_trains_on_tokens_and_serves_the_same_predictions(token_run):
    cfg, tmp = token_run
    result = train(cfg, tmp / "f", tmp / "model")
    assert result.method == "xattn"
    import json

    assert json.loads((tmp / "model" / "fusion_spec.json").read_text())["token_inputs"] is True
    evaluate(cfg, tmp / "f", tmp / "model", tmp / "eval")
    preds = pd.read_parquet(tmp / "eval" / "predictions.parquet")
    data = cfg.data.path
    rows = pd.read_csv(f"{data}/manifest.csv").set_index("id").loc[preds["id"]]
    served = FusionPredictor(tmp / "model", media_root=data).predict(pd.DataFrame(
        {"text": rows["text"].tolist(), "image": [f"{data}/{p}" for p in rows["image"]]}))
    assert served["label"].tolist() == preds["predicted"].tolist()
