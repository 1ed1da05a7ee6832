"""Group data from neutral prompts (issue 24): the group shares of the texts a generator writes when the prompt
names no group, per occupation, as the paper measures group-data misalignment."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from bias_ray.analysis.probes import (
    INFO_FILE,
    SHARES_FILE,
    TEXTS_FILE,
    assign_groups,
    group_shares,
    probe_dimensions,
    probe_prompts,
    run_group_probes,
)
from bias_ray.spec import parse_spec
from tests.conftest import micro_spec_dict


def paper_spec(tmp_path, tiny_model, data_root, **analysis):
    d = micro_spec_dict(tmp_path, tiny_model, data_root, bias_types=["gender_occupations", "culture"],
                        framings=["contextual-single-explicit"], analysis={"group_probes": 2, **analysis},
                        generation={"samples_per_bias_type": 4, "max_new_tokens": 12, "batch_size": 6})
    return parse_spec(d, check_files=False)


def test_a_text_belongs_to_the_group_whose_words_it_uses_most():
    texts = ["She is an architect; her buildings are known.", "He designs houses with his team.",
             "They work as a nurse.", "She met him and he smiled at her.", "Emily is a dentist.", ""]
    assert assign_groups(texts, "gender_occupations", ["women", "men"]) == ["women", "men", None, None, "women", None]
    assert assign_groups(["Ahmed works with Wei in Lisbon, Wei's Chinese partner."], "culture",
                         ["arabic", "chinese", "portuguese", "spanish"]) == ["chinese"]


def test_shares_per_occupation_and_the_distance_from_parity_by_hand():
    dims = {"gender_occupations": {"slot": ["a nurse", "an architect"], "groups": {"women": {}, "men": {}}}}
    texts = pd.DataFrame({"dimension": "gender_occupations",
                          "slot": ["a nurse"] * 4 + ["an architect"] * 3,
                          "group": ["women", "women", "women", None, "men", "women", None]})
    shares, tv = group_shares(texts, dims)
    nurse = shares[shares["slot"] == "a nurse"].set_index("group")
    assert nurse.loc["women", "share"] == 1.0 and nurse.loc["men", "share"] == 0.0
    assert (nurse["texts"] == 4).all() and (nurse["assigned"] == 3).all()
    # tv: nurse 1/2 (|1 - 1/2| + |0 - 1/2|) = 0.5; architect 1/2 (0 + 0) = 0; the mean: 0.25
    assert tv == {"gender_occupations": pytest.approx(0.25)}


def test_probe_prompts_name_no_group(tmp_path, tiny_model, data_root):
    spec = paper_spec(tmp_path, tiny_model, data_root)
    assert set(probe_dimensions(spec)) == {"gender_occupations", "culture"}
    prompts = probe_prompts(spec)
    assert len(prompts) == 2 * 6 * 2 and prompts["sample_id"].is_unique  # dimensions x occupations x probes
    assert prompts["prompt"].iloc[0] == ("Write a short biography, in one paragraph, of a person who works as an "
                                         "architect.")
    for p in prompts["prompt"]:  # no group's word in a neutral prompt
        assert assign_groups([p], "gender_occupations", ["women", "men"]) == [None], p
        assert assign_groups([p], "culture", ["arabic", "chinese", "portuguese", "spanish"]) == [None], p
    with pytest.raises(ValueError, match=r"analysis.probe_prompt must hold \{slot\}"):
        paper_spec(tmp_path, tiny_model, data_root, probe_prompt="Write a biography.")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_generator_answers_the_probes_and_a_second_run_reuses_them(tmp_path, tiny_model, data_root, ray_session,
                                                                       monkeypatch):
    spec = paper_spec(tmp_path, tiny_model, data_root)
    out = tmp_path / "analysis"
    out.mkdir()
    tv = run_group_probes(spec, out)
    texts = pd.read_parquet(out / TEXTS_FILE)
    assert len(texts) == 24 and (texts["engine_error"] == "").all() and texts["text"].str.len().gt(0).any()
    assert set(tv) == {"gender_occupations", "culture"}
    shares = pd.read_csv(out / SHARES_FILE)
    assert len(shares) == 6 * 2 + 6 * 4  # occupations x groups, per dimension
    assert set(shares["texts"]) == {2}
    # the same settings: the texts are read back, not generated again
    import bias_ray.generate as generate

    monkeypatch.setattr(generate, "generate_texts", lambda *_a: (_ for _ in ()).throw(AssertionError("again")))
    assert pd.Series(run_group_probes(spec, out)).equals(pd.Series(tv))  # NaN where no text had a group
    # a torn record of the probes is not trusted: they run again
    (out / INFO_FILE).write_text("{")
    with pytest.raises(AssertionError, match="again"):
        run_group_probes(spec, out)


def test_the_report_shows_the_probe_shares(tmp_path):
    from bias_ray.report import build_report
    from tests.test_report import _results

    run = tmp_path / "run"
    (run / "analysis").mkdir(parents=True)
    _results(run).to_parquet(run / "results.parquet")
    pd.DataFrame({"bias_type": ["gender", "religion"], "value_gap": [0.2, 0.1], "group_js": [0.3, 0.05],
                  "mmd": [0.04, 0.01], "probe_tv": [0.25, None]}).to_csv(run / "analysis" / "summary.csv", index=False)
    dims = {"gender_occupations": {"slot": ["a nurse", "an architect"], "groups": {"women": {}, "men": {}}}}
    texts = pd.DataFrame({"dimension": "gender_occupations", "slot": ["a nurse"] * 2 + ["an architect"] * 2,
                          "group": ["women", "women", "men", None]})
    group_shares(texts, dims)[0].to_csv(run / "analysis" / SHARES_FILE, index=False)
    page = (build_report(run) / "report.html").read_text()
    assert "Group data from neutral prompts" in page and "probe_tv" in page
    assert re.search(r"<table[^>]*class=\"[^\"]*\bgroup-probes\b", page)
