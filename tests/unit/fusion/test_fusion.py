"""Fusion heads: the shared interface, missing-modality masking, gradients, determinism."""

import pytest
import torch

from crossfuse.errors import UserError
from crossfuse.fusion import (
    FUSION_METHODS,
    FusionSpec,
    build_fusion_head,
    load_fusion_head,
    save_fusion_head,
)

DIMS2 = {"image": 12, "text": 7}
DIMS3 = {"image": 12, "text": 7, "audio": 5}


def batch(dims, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = {m: torch.randn(n, d, generator=g, requires_grad=True) for m, d in dims.items()}
    present = {m: torch.ones(n, dtype=torch.bool) for m in dims}
    return feats, present


@pytest.mark.parametrize("method", sorted(FUSION_METHODS))
@pytest.mark.parametrize("dims", [DIMS2, DIMS3], ids=["2mod", "3mod"])
def test_shapes_and_gradients_reach_every_modality(method, dims):
    head = build_fusion_head(FusionSpec(method, dims, num_classes=5, hidden_dim=16))
    feats, present = batch(dims)
    logits = head(feats, present)
    assert logits.shape == (4, 5)
    logits.sum().backward()
    for m in dims:
        assert feats[m].grad is not None and feats[m].grad.abs().sum() > 0, m


@pytest.mark.parametrize("method", sorted(FUSION_METHODS))
def test_missing_modality_values_cannot_change_the_output(method):
    head = build_fusion_head(FusionSpec(method, DIMS2, num_classes=3, hidden_dim=16)).eval()
    feats, present = batch(DIMS2)
    present["text"] = torch.tensor([True, False, True, False])
    out = head(feats, present)
    noisy = {m: v.detach().clone() for m, v in feats.items()}
    noisy["text"][~present["text"]] = float("nan")   # garbage where the text is missing
    out2 = head(noisy, present)
    assert torch.isfinite(out2).all()
    assert torch.allclose(out, out2)
    # ...while the present rows do depend on their text.
    noisy["text"][present["text"]] += torch.randn(2, DIMS2["text"])  # not a constant: LayerNorm
    assert not torch.allclose(head(noisy, present)[present["text"]], out[present["text"]])


@pytest.mark.parametrize("method", sorted(FUSION_METHODS))
def test_same_seed_same_weights(method, tmp_path):
    spec = FusionSpec(method, DIMS2, num_classes=3, hidden_dim=16)
    torch.manual_seed(3)
    a = build_fusion_head(spec)
    torch.manual_seed(3)
    b = build_fusion_head(spec)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    save_fusion_head(a, tmp_path, extra={"labels": ["x", "y", "z"]})
    loaded, meta = load_fusion_head(tmp_path)
    feats, present = batch(DIMS2)
    assert torch.allclose(loaded(feats, present), a.eval()(feats, present))
    assert meta["labels"] == ["x", "y", "z"] and meta["method"] == method


def test_unknown_method_lists_the_available_ones():
    with pytest.raises(ValueError, match=r"unknown fusion method 'nope'; available: \['attention'"):
        build_fusion_head(FusionSpec("nope", DIMS2, 2))


def test_eleven_methods_are_registered():
    assert sorted(FUSION_METHODS) == ["attention", "concat", "film", "gmu", "late", "linear",
                                      "lowrank", "mfb", "tensor", "transformer", "xattn"]


@pytest.mark.parametrize("method", sorted(FUSION_METHODS))
def test_extra_targets_and_auxiliary_heads(method):
    spec = FusionSpec(method, DIMS2, num_classes=3, hidden_dim=16, extra_targets={"fine": 11},
                      aux_heads=True)
    head = build_fusion_head(spec).eval()
    feats, present = batch(DIMS2)
    out = head.forward_all(feats, present)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "label": (4, 3), "fine": (4, 11), "aux:image": (4, 3), "aux:text": (4, 3)}
    assert torch.equal(head(feats, present), out["label"])


@pytest.mark.parametrize("method", sorted(FUSION_METHODS))
def test_a_row_with_every_modality_missing_stays_finite(method):
    head = build_fusion_head(FusionSpec(method, DIMS3, num_classes=3, hidden_dim=16)).eval()
    feats, present = batch(DIMS3)
    for m in present:
        present[m][0] = False
    assert torch.isfinite(head(feats, present)).all()


def test_transformer_heads_must_divide_hidden_dim():
    with pytest.raises(UserError, match="divisible"):
        build_fusion_head(FusionSpec("transformer", DIMS2, 3, hidden_dim=18))


def test_incompatible_saved_weights_say_to_retrain(tmp_path):
    import json

    save_fusion_head(build_fusion_head(FusionSpec("concat", DIMS2, 3, hidden_dim=16)), tmp_path)
    meta = json.loads((tmp_path / "fusion_spec.json").read_text())
    assert meta["crossfuse_version"]
    meta["hidden_dim"] = 32                      # as if the architecture had changed since
    del meta["aux_heads"]                        # and an older spec lacked a field
    (tmp_path / "fusion_spec.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="weights do not fit .* retrain it"):
        load_fusion_head(tmp_path)


@pytest.mark.parametrize("method", ["concat", "late"])
def test_heads_saved_before_composition_still_load(method, tmp_path):
    """Weights saved when methods subclassed the head (no ``fusion.`` prefix) load unchanged."""
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    head = build_fusion_head(FusionSpec(method, DIMS2, 3, hidden_dim=16, aux_heads=True)).eval()
    save_fusion_head(head, tmp_path)
    weights = tmp_path / "fusion_head.safetensors"
    legacy = {k.removeprefix("fusion."): v for k, v in load_file(str(weights)).items()}
    assert not any(k.startswith("fusion.") for k in legacy)
    save_file(legacy, str(weights))
    loaded, _ = load_fusion_head(tmp_path)
    feats, present = batch(DIMS2)
    assert torch.equal(loaded(feats, present), head(feats, present))


def test_late_fusion_decides_itself_and_the_head_adds_no_target_layers():
    head = build_fusion_head(FusionSpec("late", DIMS2, 3, hidden_dim=16))
    assert not hasattr(head, "heads") and head.fusion.decides
    assert "heads" in dict(build_fusion_head(FusionSpec("concat", DIMS2, 3, hidden_dim=16)).named_children())


@pytest.mark.parametrize("method", sorted(FUSION_METHODS))
def test_bottleneck_gives_every_modality_the_same_width(method):
    wide = {"image": 1280, "text": 7}
    head = build_fusion_head(FusionSpec(method, wide, 3, hidden_dim=16, bottleneck=8)).eval()
    assert head.fusion.spec.dims == {"image": 8, "text": 8}          # what the method sees
    assert head.placeholders["image"].shape == (1280,)                # what a row lacks
    feats, present = batch(wide)
    present["image"][0] = False
    assert head(feats, present).shape == (4, 3)


def test_bottleneck_projects_token_sequences_too():
    spec = FusionSpec("xattn", {"image": 12, "text": 7}, 3, hidden_dim=16, bottleneck=8,
                      token_inputs=True)
    head = build_fusion_head(spec).eval()
    feats, present = batch(spec.dims)
    tokens = {m: (torch.randn(4, 5, d), torch.ones(4, 5, dtype=torch.bool)) for m, d in spec.dims.items()}
    assert head(feats, present, tokens).shape == (4, 3)


def test_input_dropout_acts_only_while_training():
    torch.manual_seed(0)
    head = build_fusion_head(FusionSpec("concat", DIMS2, 3, hidden_dim=16, dropout=0.0,
                                        input_dropout=0.5))
    feats, present = batch(DIMS2)
    head.eval()
    assert torch.equal(head(feats, present), head(feats, present))
    head.train()
    assert not torch.equal(head(feats, present), head(feats, present))
