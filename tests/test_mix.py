"""The mix: the bias ratio is exactly the augmented share, in both modes, stratified and seeded."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bias_ray.mix import mix, mix_counts


def frame(n: int, prefix: str, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "id": [f"{prefix}{i}" for i in range(n)],
        "text": [f"{prefix} text {i}" for i in range(n)],
        "label": rng.choice([0, 1], size=n, p=[0.7, 0.3]),
        "group": rng.choice(["a", "b", "c"], size=n, p=[0.5, 0.3, 0.2]),
    })


REAL, AUG = frame(400, "r", 0), frame(300, "g", 1)


@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.25, 0.5, 0.9, 1.0])
def test_fixed_total_holds_size_and_ratio_exactly(ratio):
    out = mix(REAL, AUG, ratio, 200, "fixed_total", seed=0)
    assert len(out) == 200
    assert out["is_augmented"].sum() == round(ratio * 200)
    assert out["is_augmented"].mean() == pytest.approx(ratio)


@pytest.mark.parametrize("ratio", [0.0, 0.2, 0.5, 0.75])
def test_fixed_real_holds_real_rows_and_ratio(ratio):
    out = mix(REAL, AUG, ratio, 60, "fixed_real", seed=0)
    assert (~out["is_augmented"]).sum() == 60
    assert out["is_augmented"].mean() == pytest.approx(ratio)


def test_fixed_real_ratio_is_the_nearest_reachable_when_not_exact():
    counts = mix_counts(0.33, 100, "fixed_real")
    assert counts.real == 100 and counts.augmented == 49
    assert abs(counts.ratio - 0.33) <= 1 / (counts.real + counts.augmented)


def test_strata_shares_follow_the_source_and_rows_are_not_duplicated():
    out = mix(REAL, AUG, 0.5, 200, seed=1)
    for part, src in ((out[~out["is_augmented"]], REAL), (out[out["is_augmented"]], AUG)):
        want = src.groupby(["label", "group"]).size() / len(src) * len(part)
        got = part.groupby(["label", "group"]).size().reindex(want.index, fill_value=0)
        assert (got - want).abs().max() < 1.0 + 1e-9  # largest remainder: within one row per stratum
        assert part["id"].is_unique  # enough rows: drawn without replacement


def test_seeded():
    a, b, c = (mix(REAL, AUG, 0.5, 100, seed=s) for s in (3, 3, 4))
    pd.testing.assert_frame_equal(a, b)
    assert not a["id"].equals(c["id"])


def test_small_augmented_set_is_drawn_with_replacement():
    out = mix(REAL, AUG.head(10), 0.5, 100, seed=0)
    assert out["is_augmented"].sum() == 50 and out[out["is_augmented"]]["id"].nunique() <= 10


@pytest.mark.parametrize(
    "args, message",
    [
        ((1.5, 10, "fixed_total"), "outside"),
        ((1.0, 10, "fixed_real"), "cannot reach bias ratio 1"),
        ((0.5, 10, "fixed_size"), "unknown mix mode"),
    ],
)
def test_bad_mix_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        mix_counts(*args)


def test_missing_augmented_rows_are_explained():
    with pytest.raises(ValueError, match="none were generated"):
        mix(REAL, AUG.head(0), 0.5, 10)
    assert len(mix(REAL, AUG.head(0), 0.0, 10)) == 10


# ---------------------------------------------------------------- mix_labels: real


HATEFUL_AUG = AUG.assign(label=1)  # a biased-stance job: every augmented row hateful


@pytest.mark.parametrize("mode, ratio", [("fixed_total", 0.0), ("fixed_total", 0.2), ("fixed_total", 0.3),
                                         ("fixed_real", 0.25)])
def test_label_preserving_mix_keeps_the_real_label_shares_and_the_ratio(mode, ratio):
    size = 200
    out = mix(REAL, HATEFUL_AUG, ratio, size, mode=mode, seed=3, labels="real")
    counts = mix_counts(ratio, size, mode)
    total = counts.real + counts.augmented
    assert len(out) == total and out["is_augmented"].sum() == counts.augmented
    expected_hateful = round(total * REAL["label"].mean())
    # largest remainder over labels; at ratio 0 the pooled draw's, over (label, group) strata
    assert abs(int(out["label"].sum()) - expected_hateful) <= (1 if ratio else REAL["group"].nunique())
    # the augmented rows took the place of real hateful rows, not of the real non-hateful ones
    real_part = out[~out["is_augmented"]]
    assert int((real_part["label"] == 0).sum()) == total - int(out["label"].sum())


def test_pooled_mix_lets_one_label_augmented_rows_shift_the_balance():
    pooled = mix(REAL, HATEFUL_AUG, 0.3, 200, seed=3)
    kept = mix(REAL, HATEFUL_AUG, 0.3, 200, seed=3, labels="real")
    assert pooled["label"].mean() > kept["label"].mean() + 0.15


def test_label_preserving_mix_within_a_label_follows_the_real_groups():
    out = mix(REAL, HATEFUL_AUG, 0.1, 300, seed=0, labels="real")
    real_neg = out[~out["is_augmented"] & (out["label"] == 0)]
    source = REAL[REAL["label"] == 0]["group"].value_counts(normalize=True)
    got = real_neg["group"].value_counts(normalize=True).reindex(source.index)
    assert np.allclose(got, source, atol=0.01)


def test_label_preserving_mix_says_which_ratio_it_can_reach():
    with pytest.raises(ValueError, match=r"at most ratio 0\.3\d\d.*Lower the ratio.*mix_labels: pooled"):
        mix(REAL, HATEFUL_AUG, 0.9, 200, labels="real")
    with pytest.raises(ValueError, match="unknown mix_labels"):
        mix(REAL, AUG, 0.5, 10, labels="balanced")


def test_label_preserving_mix_is_seeded_and_draws_both_labels_when_augmented_has_both():
    a = mix(REAL, AUG, 0.6, 200, seed=5, labels="real")
    b = mix(REAL, AUG, 0.6, 200, seed=5, labels="real")
    pd.testing.assert_frame_equal(a, b)
    assert set(a[a["is_augmented"]]["label"]) == {0, 1}
    assert abs(a["label"].mean() - REAL["label"].mean()) < 0.01


def test_without_augmented_rows_both_label_modes_draw_the_same_mix():
    pd.testing.assert_frame_equal(mix(REAL, HATEFUL_AUG, 0.0, 150, seed=2),
                                  mix(REAL, HATEFUL_AUG, 0.0, 150, seed=2, labels="real"))
