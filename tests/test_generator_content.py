"""What the generator writes is measured, and the mask and loss mitigations act on it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bias_ray.generate.measure import generator_measures, names_group
from bias_ray.spec import parse_spec
from tests.conftest import micro_spec_dict


class _ByWord:
    """A stand-in stance classifier: hate iff the text holds 'hate'."""

    def proba(self, texts):
        return np.array([0.9 if "hate" in t else 0.1 for t in texts])


def _write_shard(out, rows: pd.DataFrame) -> None:
    (out / "shards").mkdir(parents=True)
    rows.to_parquet(out / "shards" / "part-0.parquet", index=False)


def test_generator_measures_per_group_and_stance(tmp_path, tiny_model, data_root):
    spec = parse_spec(micro_spec_dict(tmp_path, tiny_model, data_root), check_files=False)
    out = tmp_path / "aug"
    rows = pd.DataFrame({
        "sample_id": [f"s{i}" for i in range(7)],
        "text": ["muslims hate this", "the mosque is open", "people walk", "I hate jews", "a dog", "a dog", "x"],
        "drop_reason": ["", "", "", "", "", "", "too_short"],
        "bias_type": ["religion"] * 7,
        "group": ["muslim", "muslim", "muslim", "jewish", "jewish", "jewish", "jewish"],
        "stance": ["biased"] * 3 + ["neutral"] * 4,
    })
    _write_shard(out, rows)
    pd.DataFrame({"sample_id": ["s5"], "duplicate_of": ["s4"]}).to_parquet(out / "duplicates.parquet")
    got = {(m["group"], m["stance"]): m for m in generator_measures(spec, out, classifier=_ByWord())}
    assert got[("muslim", "biased")] == {"bias_type": "religion", "group": "muslim", "stance": "biased", "kept": 3,
                                         "names_group_share": round(2 / 3, 4), "hate_share": round(1 / 3, 4),
                                         "hate_share_low": 0.0615, "hate_share_high": 0.7923, "hate_scored": 3}
    # s5 is a duplicate and s6 was filtered: 2 kept, one names "jews", one says hate
    assert got[("jewish", "neutral")]["kept"] == 2
    assert got[("jewish", "neutral")]["names_group_share"] == 0.5 and got[("jewish", "neutral")]["hate_share"] == 0.5
    # a big job scores only the first max_scored kept rows of a cell; every row still counts for the mention share
    capped = {(m["group"], m["stance"]): m for m in generator_measures(spec, out, classifier=_ByWord(), max_scored=1)}
    assert capped[("muslim", "biased")]["hate_scored"] == 1 and capped[("muslim", "biased")]["kept"] == 3
    assert capped[("muslim", "biased")]["hate_share"] == 1.0   # "muslims hate this", the first kept row
    assert capped[("muslim", "biased")]["names_group_share"] == round(2 / 3, 4)


def test_names_group_uses_the_prompted_groups_terms_only():
    assert names_group(["Muslims pray", "jews pray", "Muslimsx"], "religion", "muslim").tolist() == [True, False, False]
    assert names_group(["anything"], "religion", "no_such_group") is None


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, data_root):
    from bias_ray.models import PretrainConfig, pretrain_tiny_model

    config = PretrainConfig(hidden_size=48, num_layers=1, vocab_size=1000, max_steps=60, eval_every=60,
                            batch_size=8, seq_len=96, learning_rate=1e-2)
    return pretrain_tiny_model(tmp_path_factory.mktemp("pre") / "tiny", data_root, 0.3, config, log=lambda *_: None)


@pytest.mark.slow
def test_mask_and_loss_act_on_rows_the_pretrained_generator_writes(tmp_path, pretrained, data_root):
    """Generated (not planted) augmented rows name groups, so mask hides tokens and loss has rows."""
    from transformers import AutoModelForSequenceClassification

    from bias_ray.generate.engines.transformers_engine import TransformersGenerator
    from bias_ray.generate.prompts import make_plan, sampling_params
    from bias_ray.generate.quality import clean_generation
    from bias_ray.train.mitigations.base import TrialContext
    from bias_ray.train.mitigations.loss import LossMitigation
    from bias_ray.train.mitigations.mask import MaskMitigation
    from bias_ray.train.student import StudentIO, model_inputs

    spec = parse_spec(micro_spec_dict(tmp_path, pretrained, data_root, bias_types=["gender"],
                                      generation={"samples_per_bias_type": 24, "max_new_tokens": 24,
                                                  "batch_size": 24}), check_files=False)
    plan = make_plan(spec)
    prompts = plan.rows(np.arange(plan.total))
    texts, _ = TransformersGenerator(str(pretrained), sampling_params(spec)).generate(prompts["prompt"].tolist(), 0)
    rows = prompts.assign(text=[clean_generation(t) for t in texts], is_augmented=True)
    rows = rows[rows["text"].str.strip() != ""].reset_index(drop=True)  # the pipeline's filters drop empty rows
    named = np.concatenate([names_group(part["text"].tolist(), "gender", g) for g, part in rows.groupby("group")])
    assert named.any(), rows["text"].tolist()  # the quickstart-sized model names far more (manifest)

    ctx = TrialContext(bias_type="gender", groups=spec.bias_type("gender").groups)
    student_model = AutoModelForSequenceClassification.from_pretrained(pretrained, num_labels=2)
    from transformers import AutoTokenizer

    student = StudentIO("seq_cls", AutoTokenizer.from_pretrained(pretrained), 64)
    batch = student.encode(rows["text"].tolist(), rows["label"].tolist())
    mask = MaskMitigation(kinds=["groups", "attributes"])
    mask.setup(ctx)
    mask.prepare_model(student, student_model)
    mask.transform_batch(dict(batch), rows)
    assert mask.stats()["mitigation/masked_tokens"] > 0 and mask.stats()["mitigation/masked_rows"] > 0

    loss = LossMitigation(**{"lambda": 1.0})
    loss.setup(ctx)
    loss.prepare_model(student, student_model)
    outputs = student_model(**model_inputs(batch))
    extra = loss.extra_loss(student_model, batch, outputs, rows)
    assert extra is not None and loss.stats()["mitigation/rows"] > 0


def test_measures_are_a_step_after_the_job_kept_in_its_manifest(tmp_path, tiny_model, data_root, ray_session):
    """The job's manifest is complete without them; ``measure_generation`` adds them once, atomically."""
    import json

    from bias_ray.generate import generate, measure_generation

    spec = parse_spec(micro_spec_dict(tmp_path, tiny_model, data_root, tracking={"wandb": "disabled"}),
                      check_files=False)
    out = generate(spec, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and "generator_measures" not in manifest
    measures = measure_generation(spec, classifier=_ByWord())
    after = json.loads((out / "manifest.json").read_text())
    assert after["generator_measures"] == measures and sum(m["kept"] for m in measures) == after["rows"]
    assert {k: v for k, v in after.items() if k != "generator_measures"} == manifest
    # computed once: a second call reads the manifest (a classifier that fails would show a recompute)
    assert measure_generation(spec, classifier=object()) == measures
    assert generate(spec, progress=False) == out  # the finished job is left as it is, measures and all
    assert json.loads((out / "manifest.json").read_text()) == after
