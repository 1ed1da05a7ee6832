"""The paper's design (issue 24): framings as a grid axis, and the paper's three mitigation variants."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bias_ray.generate.prompts import make_plan
from bias_ray.spec import SpecError, dump_spec, parse_spec
from bias_ray.train.mitigations.loss import mean_representation_gap
from bias_ray.train.student import model_inputs
from bias_ray.train.sweep import grid_cells
from tests.conftest import micro_spec_dict
from tests.test_mitigations import make, rows

SIX = ["contextual-single-explicit", "contextual-single-implicit", "contextual-intersectional-explicit",
       "contrastive-single-explicit", "contrastive-single-implicit", "contrastive-intersectional-explicit"]


def framed_spec(tmp_path, tiny_model, data_root, **overrides):
    d = micro_spec_dict(tmp_path, tiny_model, data_root, bias_types=["gender_occupations", "culture"],
                        framings=SIX, **overrides)
    return parse_spec(d, check_files=False)


# ---------------------------------------------------------------- framings


def test_framings_cross_every_bias_type_into_grid_cells(tmp_path, tiny_model, data_root):
    spec = framed_spec(tmp_path, tiny_model, data_root)
    names = [b.name for b in spec.bias_type_specs]
    assert names == [f"{d}.{f}" for d in ("gender_occupations", "culture") for f in SIX]
    assert spec.generation.template.name == "paper_framings.yaml"  # the default framed template
    cell = spec.bias_type("culture.contrastive-single-implicit")
    assert (cell.base_name, cell.dimension_name, cell.framing) == ("culture", "culture", "contrastive-single-implicit")
    assert spec.grid_size == 12 * 2 * 1 * 1 and len(grid_cells(spec)) == 24
    again = parse_spec(dump_spec(spec), check_files=False)  # what every Ray worker reads: not crossed twice
    assert [b.name for b in again.bias_type_specs] == names


def test_every_framing_problem_is_named_at_once(tmp_path, tiny_model, data_root):
    d = micro_spec_dict(tmp_path, tiny_model, data_root,
                        bias_types=[{"name": "gender_occupations", "groups": ["women", "trans"]}, "religion"],
                        framings=["contextual-single-explicit", "sideways"])
    with pytest.raises(SpecError) as err:
        parse_spec(d, check_files=False)
    text = str(err.value)
    assert "unknown framing(s) ['sideways']" in text
    assert "group(s) ['trans'] are not groups of dimension 'gender_occupations'" in text
    assert "no dimension 'religion'" in text and "set the bias type's `dimension`" in text
    few_shot = micro_spec_dict(tmp_path, tiny_model, data_root, bias_types=["gender_occupations"],
                               framings=["contextual-single-explicit"],
                               generation={"template": "bias_ray/resources/prompts/toxigen_statements.yaml"})
    with pytest.raises(SpecError, match="framings need a framed prompt template"):
        parse_spec(few_shot, check_files=False)


def test_framed_prompts_follow_their_axes(tmp_path, tiny_model, data_root):
    spec = framed_spec(tmp_path, tiny_model, data_root,
                       generation={"samples_per_bias_type": 40, "stances": {"biased": 0.5, "neutral": 0.5}})
    plan = make_plan(spec)
    table = plan.rows(np.arange(plan.total))
    assert len(table) == 12 * 40 and table["sample_id"].is_unique
    gender_words = ["woman", "man", "women", "men"]
    for bias, cell in table.groupby("bias_type"):
        framing = bias.split(".", 1)[1]
        prompts = cell["prompt"].tolist()
        if framing.endswith("implicit"):  # the group only through first names
            assert all("only by first name" in p for p in prompts)
            if bias.startswith("gender"):
                assert not any(f" {w} " in p or f" {w}," in p for p in prompts for w in gender_words)
        if "contrastive" in framing:
            assert all(p.startswith("Write one paragraph comparing") for p in prompts)
        else:
            assert all(p.startswith("Write a short biography") for p in prompts)
        biased = cell[cell["stance"] == "biased"]
        assert (biased["label"] == 1).all() and biased["prompt"].str.contains("stereotypes").all()
        assert not cell[cell["stance"] == "neutral"]["prompt"].str.contains("stereotypes").any()
    cell_of = table["bias_type"] + "/" + table["group"]
    women = table[cell_of == "gender_occupations.contrastive-single-explicit/women"]
    assert women["prompt"].str.contains("comparing a woman and a man").all()
    arabic = table[cell_of == "culture.contextual-intersectional-explicit/arabic"]
    assert arabic["prompt"].str.contains(r"of an? (?:young |older )?Arab (?:wo)?man").all()
    # a row is a pure function of its index: any subset in any order gives the same rows
    picked = np.array([7, 301, 3, 200])
    assert plan.rows(picked).reset_index(drop=True).equals(table.iloc[picked].reset_index(drop=True))
    assert make_plan(spec).sample_ids(picked) == table.iloc[picked]["sample_id"].tolist()


# ---------------------------------------------------------------- the paper's mitigation variants


def test_the_paper_variants_train_exactly_the_parameters_of_none(tmp_path, tiny_model, data_root):
    """Fair comparison: no variant adds a trainable parameter."""
    from bias_ray.train.trainable import trainable_parameter_count

    counts = {}
    for label, mitigation in [("none", "none"), ("token", {"name": "token", "params": {"style": "prefix"}}),
                              ("mask", {"name": "mask", "params": {"style": "replace"}}),
                              ("loss", {"name": "loss", "params": {"kind": "mean_alignment"}})]:
        _, _, _, model = make(tmp_path / label, tiny_model, data_root, mitigation, bias_type="gender_occupations")
        counts[label] = trainable_parameter_count(model)
    assert counts["token"] == counts["mask"] == counts["loss"] == counts["none"]


@pytest.mark.timeout(120)
def test_token_prefix_warns_on_augmented_rows_only(tmp_path, tiny_model, data_root):
    from transformers import AutoTokenizer

    _, m, student, _ = make(tmp_path, tiny_model, data_root,
                            {"name": "token", "params": {"style": "prefix", "text": "Caution, maybe biased:"}})
    assert len(student.tokenizer) == len(AutoTokenizer.from_pretrained(tiny_model))  # nothing added
    train = m.transform_train(rows([("they pray", True), ("they pray", False)]))
    assert train["text"].tolist() == ["Caution, maybe biased: they pray", "they pray"]
    assert m.transform_eval(rows([("they pray", False)]))["text"].tolist() == ["they pray"]
    assert m.stats()["mitigation/prefixed_augmented"] == 1
    default = make(tmp_path / "d", tiny_model, data_root, {"name": "token", "params": {"style": "prefix"}})[1]
    assert default.transform_train(rows([("x", True)]))["text"].iloc[0] == "The following text may contain bias: x"


@pytest.mark.timeout(120)
def test_mask_replace_rewrites_identity_words_of_augmented_rows(tmp_path, tiny_model, data_root):
    text = "She told Emily that her brother, a nurse, was emotional."
    _, m, _, _ = make(tmp_path, tiny_model, data_root, {"name": "mask", "params": {"style": "replace"}},
                      bias_type="gender_occupations")
    out = m.transform_train(rows([(text, True), (text, False)]))["text"].tolist()
    assert out == ["[MASK] told [MASK] that [MASK] [MASK], a nurse, was emotional.", text]  # groups only by default
    assert m.stats()["mitigation/replaced_terms"] == 4 and m.stats()["mitigation/replaced_rows"] == 1
    _, n, _, _ = make(tmp_path / "n", tiny_model, data_root,
                      {"name": "mask", "params": {"style": "replace", "replacement": "neutral"}},
                      bias_type="gender_occupations")
    assert n.transform_train(rows([(text, True)]))["text"].iloc[0] == (
        "They told someone that their sibling, a nurse, was emotional.")
    _, c, _, _ = make(tmp_path / "c", tiny_model, data_root,
                      {"name": "mask", "params": {"style": "replace", "replacement": "neutral"}}, bias_type="culture")
    assert c.transform_train(rows([("Wei, a Chinese dentist, met Arabs.", True)]))["text"].iloc[0] == (
        "Someone, a local dentist, met locals.")


def test_mean_alignment_is_the_squared_gap_of_the_mean_representations():
    hidden = torch.tensor([[[1.0, 0.0], [3.0, 2.0]],  # real, 2 tokens: mean (2, 1)
                           [[5.0, 5.0], [9.0, 9.0]],  # augmented, 1 token (second is padding): (5, 5)
                           [[1.0, 1.0], [1.0, 1.0]]])  # augmented: (1, 1)
    mask = torch.tensor([[1, 1], [1, 0], [1, 1]])
    gap = mean_representation_gap(hidden, mask, torch.tensor([False, True, True]))
    assert gap.item() == pytest.approx(((2 - 3) ** 2 + (1 - 3) ** 2) / 2)  # averaged over the H = 2 dimensions
    assert mean_representation_gap(hidden, mask, torch.tensor([False, False, False])) is None
    assert mean_representation_gap(hidden, mask, torch.tensor([True, True, True])) is None


@pytest.mark.timeout(120)
def test_loss_mean_alignment_reaches_lora_and_skips_one_sided_batches(tmp_path, tiny_model, data_root):
    _, m, student, model = make(tmp_path, tiny_model, data_root,
                                {"name": "loss", "params": {"kind": "mean_alignment", "lambda": 2.0}})
    assert m.forward_kwargs() == {"output_hidden_states": True}
    r = rows([("Muslims are kind people", True), ("the weather is nice today", False)])
    batch = student.encode(r["text"].tolist(), [1, 0])
    outputs = model(**model_inputs(batch), **m.forward_kwargs())
    extra = m.extra_loss(model, batch, outputs, r)
    assert extra is not None and extra.item() > 0
    assert m.stats()["mitigation/extra_loss"] == pytest.approx(extra.item(), rel=1e-5)
    extra.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_" in n)
    only_real = rows([("the weather is nice today", False)])
    one = student.encode(only_real["text"].tolist(), [0])
    assert m.extra_loss(model, one, model(**model_inputs(one), **m.forward_kwargs()), only_real) is None


@pytest.mark.parametrize("mitigation, message", [
    ({"name": "token", "params": {"style": "prefix", "real_tag": "<r>"}}, "real_tag belong to style tags"),
    ({"name": "token", "params": {"text": "careful"}}, "`text` belongs to style prefix"),
    ({"name": "mask", "params": {"style": "replace", "input_rule": "replace"}}, "input_rule do not apply"),
    ({"name": "mask", "params": {"replacement": "neutral"}}, "replacement do not apply to style loss"),
    ({"name": "loss", "params": {"kind": "mean_alignment", "divergence": "kl"}}, "belong to kind divergence"),
])
def test_a_variant_refuses_the_other_styles_parameters(tmp_path, tiny_model, data_root, mitigation, message):
    with pytest.raises(SpecError, match=message):
        parse_spec(micro_spec_dict(tmp_path, tiny_model, data_root, mitigations=[mitigation]), check_files=False)


# ---------------------------------------------------------------- sweeps/paper.yaml


def test_the_paper_spec_dry_runs_the_papers_grid(tmp_path, monkeypatch):
    from pathlib import Path

    from typer.testing import CliRunner

    from bias_ray.cli import app
    from bias_ray.spec import load_spec

    paper = Path(__file__).resolve().parent.parent / "sweeps" / "paper.yaml"
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("BIAS_RAY_DATA", str(tmp_path / "no-data-here"))
    monkeypatch.chdir(tmp_path)
    spec = load_spec(paper, check_files=False)
    assert spec.framings == SIX and spec.bias_ratios == [0.0, 0.05, 0.1, 0.2, 0.5]
    assert spec.training.mix_mode == "fixed_real" and spec.training.learning_rate == 1e-5
    assert [m.label for m in spec.mitigation_specs] == [
        "none", "token(style=prefix)", "mask(style=replace)", "loss(kind=mean_alignment,lambda=1.0)"]
    out = CliRunner().invoke(app, ["sweep", str(paper), "--dry-run"], env={"COLUMNS": "200"})
    text = " ".join(out.output.split())
    assert out.exit_code == 0, out.output
    assert ("grid: 6 framings x 2 bias types (gender_occupations, culture) x 5 bias ratios x 4 mitigations "
            "x 3 seeds = 720 cells, 612 trials (108 cells at ratio 0 train exactly as none and copy its result")\
        in text
    assert "paper: 612 trials (dry run), per bias ratio" in text


def test_the_paper_specs_name_bias_in_bios_and_the_culture_half(tmp_path, monkeypatch):
    from pathlib import Path

    from typer.testing import CliRunner

    from bias_ray.cli import app
    from bias_ray.spec import load_spec

    sweeps = Path(__file__).resolve().parent.parent / "sweeps"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.chdir(tmp_path)
    paper = load_spec(sweeps / "paper.yaml", check_files=False)
    assert (paper.data.task, paper.data.path) == ("huggingface", "LabHC/bias_in_bios")
    assert paper.data.labels == ["architect", "dentist", "nurse", "painter", "professor", "software_engineer"]
    assert paper.data.label_names[13] == "nurse" and paper.data.group_names == {"0": "men", "1": "women"}
    assert "hatecheck" not in paper.evaluation.tasks and "global_opinions" in paper.evaluation.tasks
    culture = load_spec(sweeps / "paper_culture.yaml", check_files=False)
    assert culture.training.learning_rate == 1e-6 and culture.framings == SIX
    assert len(culture.evaluation.task_options["cultural_sets"]["sets"]) == 4
    out = CliRunner().invoke(app, ["sweep", str(sweeps / "paper_culture.yaml"), "--dry-run"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "6 framings x 1 bias types (culture) x 5 bias ratios x 4 mitigations x 3 seeds = 360 cells, 306 trials" \
        in " ".join(out.output.split())
