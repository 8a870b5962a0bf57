"""The promotion gate: primary metric with a margin, and the ECE / missing-modality guardrails."""

import pytest

from crossfuse.config import RegistryConfig
from crossfuse.errors import UserError
from crossfuse.registry.promotion import decide_promotion, missing_one_metrics

CHAMPION = {"test_macro_f1": 0.88, "test_log_loss": 0.40, "test_ece_calibrated": 0.030,
            "present_image_test_macro_f1": 0.60, "present_text_test_macro_f1": 0.75,
            "present_image_and_text_test_macro_f1": 0.88}


def challenger(**changes):
    return {**CHAMPION, **changes}


@pytest.mark.parametrize("metrics, gate, promote, words", [
    (challenger(test_macro_f1=0.91), {}, True,
     "test_macro_f1 0.9100 beats champion v3's 0.8800 (margin 0.0000); guardrails passed"),
    (challenger(), {}, False, "does not beat champion v3's 0.8800"),
    (challenger(test_macro_f1=0.70), {}, False, "does not beat"),
    # A margin: a gain of 0.01 is not enough when 0.02 is asked.
    (challenger(test_macro_f1=0.89), {"margin": 0.02}, False, "(margin 0.0200)"),
    (challenger(test_macro_f1=0.91), {"margin": 0.02}, True, "beats"),
    # Lower is better for a loss, inferred from the name.
    (challenger(test_log_loss=0.35), {"metric": "test_log_loss"}, True, "beats"),
    (challenger(test_log_loss=0.45), {"metric": "test_log_loss"}, False, "does not beat"),
    # Guardrails: better on the primary metric, worse elsewhere.
    (challenger(test_macro_f1=0.95, test_ece_calibrated=0.08), {}, False,
     "calibrated ECE 0.0800 vs champion's 0.0300: worse by +0.0500, over the limit 0.0200"),
    (challenger(test_macro_f1=0.95, present_text_test_macro_f1=0.60), {}, False,
     "macro-F1 with image missing 0.6000 vs champion's 0.7500: worse by +0.1500, over the limit"),
    (challenger(test_macro_f1=0.95, present_text_test_macro_f1=0.74), {}, True, "guardrails passed"),
    # Switched off, the guardrails do not block.
    (challenger(test_macro_f1=0.95, test_ece_calibrated=0.08, present_text_test_macro_f1=0.1),
     {"guardrails": {"max_ece_increase": None, "max_missing_modality_drop": None}}, True, "beats"),
])
def test_gate(metrics, gate, promote, words):
    d = decide_promotion(metrics, CHAMPION, "3", RegistryConfig(**gate))
    assert d.promote is promote
    assert words in d.reason


def test_every_check_keeps_both_numbers_and_its_limit():
    d = decide_promotion(challenger(test_macro_f1=0.95, test_ece_calibrated=0.08), CHAMPION, "3",
                         RegistryConfig())
    checks = {c.check: c for c in d.checks}
    # Missing-modality checks in order of the modality missing: image, then text.
    assert list(checks) == ["test_macro_f1", "test_ece_calibrated", "present_text_test_macro_f1",
                            "present_image_test_macro_f1"]
    ece = checks["test_ece_calibrated"]
    assert (ece.challenger, ece.champion, ece.limit, ece.passed) == (0.08, 0.03, 0.02, False)
    assert d.compared_metrics()["test_macro_f1"] == 0.95


def test_no_champion_and_champion_without_a_guardrail_metric():
    d = decide_promotion(challenger(), None, None, RegistryConfig())
    assert d.promote and d.reason.startswith("no champion yet; test_macro_f1=0.8800")
    older = {"test_macro_f1": 0.80}  # registered before the guardrail metrics existed
    d = decide_promotion(challenger(), older, "1", RegistryConfig())
    assert d.promote
    assert "skipped, the champion has no test_ece_calibrated" in d.checks[1].detail


def test_unknown_metric_is_explained():
    with pytest.raises(UserError, match="registry.metric='test_f1_zebra' is not an evaluation"):
        decide_promotion(challenger(), CHAMPION, "3", RegistryConfig(metric="test_f1_zebra"))
    # A name the evaluation never logs is refused when the config loads, before any work.
    from crossfuse.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="'test_f2' is not a metric the evaluation logs"):
        load_config(None, ["registry.metric=test_f2"], env={})


def test_missing_one_of_three_modalities():
    names = {f"present_{s}_test_macro_f1": 0.5 for s in
             ("a", "b", "c", "a_and_b", "a_and_c", "b_and_c", "a_and_b_and_c")}
    assert missing_one_metrics(names) == {"c": "present_a_and_b_test_macro_f1",
                                          "b": "present_a_and_c_test_macro_f1",
                                          "a": "present_b_and_c_test_macro_f1"}


@pytest.mark.parametrize("champion", [None, CHAMPION], ids=["no-champion", "champion"])
def test_a_fused_model_that_loses_to_one_modality_is_never_promoted(champion):
    # Better than the champion, but text alone scored 0.09 more on the same test split.
    loses = challenger(test_macro_f1=0.95, fusion_gain_macro_f1=-0.09)
    d = decide_promotion(loses, champion, "3" if champion else None, RegistryConfig())
    assert not d.promote
    assert "fusion lost to one modality alone: fusion_gain_macro_f1 -0.0900" in d.reason
    gain = next(c for c in d.checks if c.check == "fusion_gain_macro_f1")
    assert (gain.challenger, gain.limit, gain.passed) == (-0.09, 0.0, False)


def test_fusion_gain_guardrail_minimum_and_switch():
    wins = challenger(test_macro_f1=0.95, fusion_gain_macro_f1=0.01)
    assert decide_promotion(wins, None, None, RegistryConfig()).promote
    strict = RegistryConfig(guardrails={"min_fusion_gain": 0.02})
    assert not decide_promotion(wins, CHAMPION, "3", strict).promote
    off = RegistryConfig(guardrails={"min_fusion_gain": None})
    assert decide_promotion(challenger(test_macro_f1=0.95, fusion_gain_macro_f1=-0.2), CHAMPION,
                            "3", off).promote
    # A tie with the best single modality is not a loss.
    assert decide_promotion(challenger(fusion_gain_macro_f1=0.0), None, None, RegistryConfig()).promote


def _paired(challenger_wrong: int, champion_wrong: int, n: int = 200):
    import numpy as np

    from crossfuse.registry.promotion import paired_bootstrap

    y = np.arange(n) % 4
    wrong = lambda k: np.where(np.arange(n) < k, (y + 1) % 4, y)  # noqa: E731
    return paired_bootstrap(y, wrong(challenger_wrong), wrong(champion_wrong), 4, resamples=500)


def test_paired_bootstrap_clear_win_promotes():
    b = _paired(challenger_wrong=10, champion_wrong=60)
    assert b.gain > 0.2 and b.low > 0.1 and b.rows == 200
    d = decide_promotion(challenger(test_macro_f1=0.95), CHAMPION, "3", RegistryConfig(), b)
    assert d.promote and "95% interval [+" in d.reason and "paired bootstrap of 200 test rows" in d.reason


def test_paired_bootstrap_tie_or_noise_does_not_promote():
    tie = _paired(challenger_wrong=30, champion_wrong=30)
    assert (tie.gain, tie.low, tie.high) == (0.0, 0.0, 0.0)
    # The point estimate beats the champion, but the interval does not clear the margin.
    d = decide_promotion(challenger(test_macro_f1=0.89), CHAMPION, "3", RegistryConfig(), tie)
    assert not d.promote and "does not clear the margin 0.0000" in d.reason
    slight = _paired(challenger_wrong=28, champion_wrong=30)
    assert slight.gain > 0 and slight.low <= 0
    assert not decide_promotion(challenger(test_macro_f1=0.89), CHAMPION, "3", RegistryConfig(),
                                slight).promote


def _bootstrap_one_draw_at_a_time(y, challenger, champion, k, metric, resamples, seed):
    """The reference: scikit-learn's scores on each resample, one by one (the gate's old code)."""
    import numpy as np
    from sklearn.metrics import f1_score

    def score(t, p):
        if metric == "test_accuracy":
            return float((t == p).mean())
        return float(f1_score(t, p, labels=list(range(k)), average="macro", zero_division=0))

    draws = np.random.default_rng(seed).integers(0, len(y), size=(resamples, len(y)))
    gains = np.array([score(y[d], challenger[d]) - score(y[d], champion[d]) for d in draws])
    return (score(y, challenger) - score(y, champion), float(np.percentile(gains, 2.5)),
            float(np.percentile(gains, 97.5)))


@pytest.mark.parametrize("metric", ["test_macro_f1", "test_accuracy"])
@pytest.mark.parametrize("n, k, seed", [(270, 9, 0), (37, 5, 3), (500, 2, 11)])
def test_vectorised_bootstrap_equals_scoring_each_draw(metric, n, k, seed, monkeypatch):
    import numpy as np

    import crossfuse.metrics
    import crossfuse.registry.promotion as promotion

    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    challenger = np.where(rng.random(n) < 0.8, y, rng.integers(0, k, n))
    champion = np.where(rng.random(n) < 0.7, y, rng.integers(0, k, n))
    # Small blocks too: the draws must not depend on how many are scored at once.
    monkeypatch.setattr(crossfuse.metrics, "_DRAW_CELLS", 3 * n + 1)
    b = promotion.paired_bootstrap(y, challenger, champion, k, metric, resamples=300, seed=seed)
    assert (b.gain, b.low, b.high) == _bootstrap_one_draw_at_a_time(
        y, challenger, champion, k, metric, 300, seed)
