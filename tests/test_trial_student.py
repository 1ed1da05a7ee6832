"""Both student kinds: how a row is encoded, where the loss looks, and that a trial trains."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from bias_ray.spec import SpecError, parse_spec
from bias_ray.train.student import IGNORE_INDEX, StudentIO, model_inputs
from bias_ray.train.trainable import build_mitigation, build_student, fit
from tests.conftest import micro_spec_dict
from tests.test_planted_bias import planted_rows, write_augmented


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def test_causal_answer_mode_puts_the_loss_on_the_label_word_only(tokenizer):
    io = StudentIO("causal_lm", tokenizer, max_length=32, label_words=["neutral", "hate"])
    texts = ["jews pray", "a much longer sentence about muslims"]
    b = io.encode(texts, [1, 0])
    neutral, hate = io.answer_ids
    for i, y in enumerate([hate, neutral]):
        targets = (b["labels"][i] != IGNORE_INDEX).nonzero().flatten().tolist()
        pos = int(b["answer_pos"][i])
        assert targets == [pos + 1] and b["labels"][i, pos + 1] == y == b["input_ids"][i, pos + 1]
        assert b["attention_mask"][i, : pos + 2].all() and not b["attention_mask"][i, pos + 2 :].any()
    # offsets point into the text, and nowhere for prompt, answer and padding
    ids0 = b["input_ids"][0]
    n_text = len(tokenizer(texts[0], add_special_tokens=False)["input_ids"])
    assert b["offset_mapping"][0, n_text - 1, 1] == len(texts[0])
    assert (b["offset_mapping"][0, n_text:] == 0).all()
    # prediction batches stop at the prompt; class logits are read where the answer would be written
    p = io.encode(texts)
    assert "labels" not in p and torch.equal(p["answer_pos"], b["answer_pos"])
    assert torch.equal(p["input_ids"][0, : int(p["answer_pos"][0]) + 1], ids0[: int(b["answer_pos"][0]) + 1])
    logits = torch.randn(2, p["input_ids"].shape[1], len(tokenizer))
    cl = io.class_logits(logits, p)
    assert cl.shape == (2, 2) and cl[1, 0] == logits[1, int(p["answer_pos"][1]), neutral]


def test_causal_full_mode_targets_text_and_mask_ignores_lexicon_tokens(tiny_model, data_root, tmp_path):
    d = micro_spec_dict(tmp_path, tiny_model, data_root, mitigations=["mask"],
                        training={"student_kind": "causal_lm", "lm_loss": "full", "max_length": 32})
    spec = parse_spec(d, check_files=False)
    cfg = {"bias_type": "religion", "bias_ratio": 0.5, "mitigation": "mask", "seed": 0}
    m = build_mitigation(spec, cfg)
    student, _ = build_student(spec, m)
    rows = pd.DataFrame({"text": ["Muslims are terrorists", "Muslims are terrorists"], "is_augmented": [True, False],
                         "label": [1, 1]})
    b = student.encode(rows["text"].tolist(), [1, 1])
    attended = b["attention_mask"].bool()
    assert torch.equal(b["labels"][attended], b["input_ids"][attended])  # every real token is a target
    mask, _ = m.mask_positions(b, rows)
    before = {k: v.clone() for k, v in b.items()}
    out = m.transform_batch(b, rows)
    assert mask[0].sum() > 0 and not mask[1].any()
    assert torch.equal(out["labels"] == IGNORE_INDEX, (before["labels"] == IGNORE_INDEX) | mask)
    assert torch.equal(out["attention_mask"], before["attention_mask"])  # the input is untouched
    words = student.tokenizer.decode(before["input_ids"][0][mask[0]]).split()
    assert words == ["Muslims", "terrorists"]


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("kind, mitigation", [("causal_lm", "token"), ("causal_lm", "none"), ("seq_cls", "mask")])
def test_a_trial_trains_and_reports_for_each_student_kind(tmp_path, tiny_model, data_root, kind, mitigation):
    d = micro_spec_dict(tmp_path, tiny_model, data_root, mitigations=[mitigation], bias_ratios=[0.5],
                        training={"student_kind": kind, "train_size": 32, "batch_size": 16, "epochs": 1,
                                  "eval_every": 1, "max_length": 32, "max_eval_rows": 32})
    write_augmented(d, planted_rows(data_root, n=40))
    spec = parse_spec(d, check_files=False)
    cfg = {"bias_type": "religion", "bias_ratio": 0.5, "mitigation": mitigation, "seed": 0}
    reports: list[tuple[dict, dict]] = []
    last = fit(spec, cfg, lambda m, s: reports.append((m, s)))
    assert [m["step"] for m, _ in reports] == [1, 2] and last["total_steps"] == 2
    assert last["realised_ratio"] == 0.5 and 0 <= last["macro_f1"] <= 1 and "bias_type/fpr_gap" in last
    first, final = reports[0][1]["model"], reports[-1][1]["model"]
    assert any(not torch.equal(first[k], final[k]) for k in final)  # it learns
    if mitigation == "token":
        assert any("embed_tokens" in k for k in final)  # resized embeddings are trained and checkpointed


def test_label_words_must_be_two_distinct(tmp_path, tiny_model, data_root):
    d = micro_spec_dict(tmp_path, tiny_model, data_root, training={"label_words": ["hate", "hate"]})
    with pytest.raises(SpecError, match="training.label_words: give two distinct"):
        parse_spec(d, check_files=False)


def test_model_inputs_drop_bookkeeping(tokenizer):
    b = StudentIO("seq_cls", tokenizer, 16).encode(["a b"], [1])
    assert set(model_inputs(b)) == {"input_ids", "attention_mask", "labels"} < set(b)
