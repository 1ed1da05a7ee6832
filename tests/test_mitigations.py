"""Each mitigation does what its docstring says, and would fail these tests as a no-op."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from bias_ray.lexicons import find_spans, load_lexicon, swap_groups, term_pattern
from bias_ray.spec import SpecError, parse_spec
from bias_ray.train.mitigations import MITIGATIONS
from bias_ray.train.mitigations.loss import divergence
from bias_ray.train.student import IGNORE_INDEX, model_inputs
from bias_ray.train.trainable import build_mitigation, build_student, fit
from tests.conftest import micro_spec_dict
from tests.test_planted_bias import planted_rows, write_augmented


def make(tmp_path, tiny_model, data_root, mitigation, bias_type="religion", **training):
    d = micro_spec_dict(tmp_path, tiny_model, data_root, mitigations=[mitigation], bias_types=[bias_type],
                        training={"max_length": 32, **training})
    spec = parse_spec(d, check_files=False)
    config = {"bias_type": bias_type, "bias_ratio": 0.5, "mitigation": spec.mitigation_specs[0].label, "seed": 0}
    m = build_mitigation(spec, config)
    student, model = build_student(spec, m)
    return spec, m, student, model


def rows(texts_aug: list[tuple[str, bool]], label: int = 1) -> pd.DataFrame:
    return pd.DataFrame({"text": [t for t, _ in texts_aug], "is_augmented": [a for _, a in texts_aug],
                         "label": label, "group": "muslim"})


# ---------------------------------------------------------------- token

@pytest.mark.timeout(120)
def test_token_grows_vocab_prefixes_tag_per_source_and_trains_the_tags(tmp_path, tiny_model, data_root):
    from transformers import AutoTokenizer

    base_vocab = len(AutoTokenizer.from_pretrained(tiny_model))
    _, m, student, model = make(tmp_path, tiny_model, data_root, "token")
    tok = student.tokenizer
    assert len(tok) == base_vocab + 2
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    assert m.stats()["mitigation/tokens_added"] == 2

    train = m.transform_train(rows([("they pray", True), ("they pray", False)]))
    assert train["text"].tolist() == ["<aug> they pray", "<real> they pray"]
    assert m.transform_eval(rows([("they pray", False)]))["text"].tolist() == ["<real> they pray"]
    aug_id, real_id = tok.convert_tokens_to_ids(["<aug>", "<real>"])
    ids = tok(train["text"].tolist())["input_ids"]
    assert ids[0][0] == aug_id and ids[1][0] == real_id  # one id each, never split

    # only the tag rows are trained (peft trainable tokens); every other row of the matrix stays frozen
    trainable = {n: p for n, p in model.named_parameters() if "embed_tokens" in n and p.requires_grad}
    (name, delta), = trainable.items()
    assert "trainable_tokens" in name and tuple(delta.shape) == (2, model.config.hidden_size)
    embed = model.get_input_embeddings()
    probe = torch.tensor([aug_id, real_id, 5, 100])
    before = embed(probe).detach().clone()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = student.encode(train["text"].tolist(), [1, 0])
    model(**model_inputs(batch)).loss.backward()
    opt.step()
    after = embed(probe).detach()
    assert not torch.equal(before[0], after[0]) and not torch.equal(before[1], after[1])
    assert torch.equal(before[2:], after[2:])


def test_token_trains_as_many_parameters_as_none_plus_the_tag_rows(tmp_path, tiny_model, data_root):
    """The fair-comparison rule: token adds only (tags x hidden) trainable parameters to none's LoRA."""
    from bias_ray.train.trainable import trainable_parameter_count

    counts = {}
    for name in ("none", "token", "mask", {"name": "loss", "params": {"lambda": 1.0}}):
        label = name if isinstance(name, str) else name["name"]
        _, _, _, model = make(tmp_path / label, tiny_model, data_root, name)
        counts[label] = trainable_parameter_count(model)
    hidden = model.config.hidden_size
    assert counts["token"] == counts["none"] + 2 * hidden
    assert counts["mask"] == counts["loss"] == counts["none"]


@pytest.mark.timeout(120)
def test_token_bias_type_tag_and_eval_tag_options(tmp_path, tiny_model, data_root):
    _, m, student, _ = make(tmp_path, tiny_model, data_root,
                            {"name": "token", "params": {"tag_bias_type": True, "eval_tag": "none"}})
    assert "<bias:religion>" in student.tokenizer.get_vocab()
    train = m.transform_train(rows([("x", True), ("x", False)]))
    assert train["text"].tolist() == ["<aug> <bias:religion> x", "<real> x"]
    assert m.transform_eval(rows([("x", False)]))["text"].tolist() == ["x"]


# ---------------------------------------------------------------- mask

MASK_TEXTS = [
    ("Muslims are terrorists, said the imam.", True),  # augmented: 3 lexicon words
    ("Muslims are terrorists, said the imam.", False),  # real: never masked
    ("Islamabad has many bombshells.", True),  # no match on word boundaries (islam, bomb)
]


def masked_words(tok, batch, mask) -> list[list[str]]:
    """The masked tokens of each row, joined into the words they spell."""
    out = []
    for i in range(mask.shape[0]):
        words, run = [], []
        for j in range(mask.shape[1]):
            if mask[i, j]:
                run.append(int(batch["input_ids"][i, j]))
            elif run:
                words.append(tok.decode(run).strip())
                run = []
        if run:
            words.append(tok.decode(run).strip())
        out.append(words)
    return out


@pytest.mark.timeout(120)
def test_mask_hits_exactly_lexicon_tokens_of_augmented_rows(tmp_path, tiny_model, data_root):
    _, m, student, _ = make(tmp_path, tiny_model, data_root, "mask")
    tok = student.tokenizer
    r = rows(MASK_TEXTS)
    batch = student.encode(r["text"].tolist())
    mask, applies = m.mask_positions(batch, r)
    assert applies.tolist() == [True, False, True]
    assert masked_words(tok, batch, mask) == [["Muslims", "terrorists", "imam"], [], []]
    # exactly the positions whose tokens spell those words, nothing else
    row0 = tok.convert_ids_to_tokens(batch["input_ids"][0].tolist())
    expected = {j for j, t in enumerate(row0) if t.lstrip("Ġ") and "Muslims terrorists imam".find(t.lstrip("Ġ")) >= 0
                and t not in ("Ġare", "Ġsaid", "Ġthe", ",", ".")}
    assert set(torch.nonzero(mask[0]).flatten().tolist()) == expected

    # sequence classifier: the masked tokens leave the attention mask, nothing else changes
    before = {k: v.clone() for k, v in batch.items()}
    out = m.transform_batch({**batch, "labels": torch.tensor([1, 1, 0])}, r)
    assert torch.equal(out["attention_mask"], before["attention_mask"].masked_fill(mask, 0))
    assert torch.equal(out["input_ids"], before["input_ids"])
    assert m.stats()["mitigation/masked_tokens"] == mask.sum().item() > 0
    assert m.stats()["mitigation/masked_rows"] == 1

    # token-level labels (causal LM, lm_loss full): the ignore index exactly on the masked tokens
    labels = batch["input_ids"].clone()
    out = m.transform_batch({**{k: v.clone() for k, v in before.items()}, "labels": labels.clone()}, r)
    assert torch.equal(out["labels"] == IGNORE_INDEX, mask)
    assert torch.equal(out["attention_mask"], before["attention_mask"])


@pytest.mark.timeout(120)
def test_mask_replace_rule_and_kinds(tmp_path, tiny_model, data_root):
    _, m, student, _ = make(tmp_path, tiny_model, data_root,
                            {"name": "mask", "params": {"kinds": ["groups"], "input_rule": "replace"}})
    tok = student.tokenizer
    r = rows(MASK_TEXTS)
    batch = student.encode(r["text"].tolist())
    mask, _ = m.mask_positions(batch, r)
    assert masked_words(tok, batch, mask) == [["Muslims", "imam"], [], []]  # attributes not masked
    ids = batch["input_ids"].clone()
    out = m.transform_batch(batch, r)
    assert torch.equal(out["input_ids"], ids.masked_fill(mask, tok.unk_token_id))


# ---------------------------------------------------------------- loss

def test_counterfactual_swap_on_word_boundaries():
    lex = load_lexicon("religion")
    pattern = term_pattern(lex.terms(("groups",)))
    assert swap_groups("Muslims pray in a mosque", lex, ["muslim", "jewish"], pattern) == (
        "Jews pray in a synagogue", 2)
    assert swap_groups("the jewish rabbi", lex, ["muslim", "jewish"], pattern) == ("the muslim imam", 2)
    assert swap_groups("Islamabad", lex, ["muslim", "jewish"], pattern) == ("Islamabad", 0)
    assert find_spans("trans women and trans", term_pattern(load_lexicon("gender").terms(("groups",)))) == [
        (0, 11), (16, 21)]  # longest term first


def test_divergences():
    p = torch.tensor([[0.9, 0.1], [0.5, 0.5]])
    q = torch.tensor([[0.2, 0.8], [0.5, 0.5]])
    for kind in ("kl", "js", "l2"):
        d = divergence(p, q, kind)
        assert d[0] > 0 and d[1].abs() < 1e-7, kind
    assert torch.allclose(divergence(p, q, "l2")[0], torch.tensor(0.98))
    assert divergence(p, q, "js")[0] <= torch.log(torch.tensor(2.0))


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "params, training",
    [
        ({"lambda": 1.0, "divergence": "kl"}, {}),
        ({"lambda": 0.5, "reference": "base"}, {}),
        ({"lambda": 1.0, "divergence": "l2"}, {"student_kind": "causal_lm"}),
    ],
)
def test_loss_term_is_positive_and_reaches_lora(tmp_path, tiny_model, data_root, params, training):
    _, m, student, model = make(tmp_path, tiny_model, data_root, {"name": "loss", "params": params}, **training)
    r = rows([("Muslims are kind people", True), ("the jewish rabbi spoke", True), ("no group here", False)])
    batch = student.encode(r["text"].tolist(), [1, 0, 1])
    # one task step first: at init LoRA B = 0, so the adapted model *is* the base model (base D = 0)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model(**model_inputs(batch)).loss.backward()
    opt.step()
    model.zero_grad()
    outputs = model(**model_inputs(batch))
    extra = m.extra_loss(model, batch, outputs, r)
    assert extra is not None and extra.item() > 0
    assert m.stats()["mitigation/rows"] == 2  # the real row is not in S
    extra.backward()
    lora = {n: p.grad for n, p in model.named_parameters() if "lora_" in n}
    assert lora and any(g is not None and g.abs().sum() > 0 for g in lora.values())


@pytest.mark.timeout(120)
def test_loss_lambda_zero_logs_but_adds_nothing(tmp_path, tiny_model, data_root):
    _, m, student, model = make(tmp_path, tiny_model, data_root, {"name": "loss", "params": {"lambda": 0}})
    r = rows([("Muslims are kind people", True)])
    batch = student.encode(r["text"].tolist())
    assert m.extra_loss(model, batch, model(**model_inputs(batch)), r) is None
    assert m.stats()["mitigation/divergence"] > 0 and m.stats()["mitigation/extra_loss"] == 0


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_loss_lambda_zero_reproduces_none_bit_for_bit(tmp_path, tiny_model, data_root):
    """Same seed, same data: every trained weight and every metric of loss(lambda=0) equals none's."""
    runs = {}
    for name, m in (("none", "none"), ("loss0", {"name": "loss", "params": {"lambda": 0.0}})):
        d = micro_spec_dict(tmp_path / name, tiny_model, data_root, mitigations=[m], bias_ratios=[0.5],
                            training={"train_size": 48, "batch_size": 16, "epochs": 1, "eval_every": 3,
                                      "max_length": 32, "lora_dropout": 0.1, "max_eval_rows": 32})
        write_augmented(d, planted_rows(data_root, n=60))
        spec = parse_spec(d, check_files=False)
        cfg = {"bias_type": "religion", "bias_ratio": 0.5, "mitigation": spec.mitigation_specs[0].label, "seed": 3}
        states: list[dict] = []
        metrics = fit(spec, cfg, lambda mt, s, states=states: states.append(s))
        runs[name] = (metrics, states[-1])
    (m0, s0), (m1, s1) = runs["none"], runs["loss0"]
    assert m1["mitigation/divergence"] > 0  # the term was computed, for the log
    assert s0["model"].keys() == s1["model"].keys()
    for k in s0["model"]:
        assert torch.equal(s0["model"][k], s1["model"][k]), k
    assert m0["train_loss"] == m1["train_loss"] and m0["macro_f1"] == m1["macro_f1"]
    assert {k for k in m0 if not k.startswith("mitigation/")} <= m1.keys()


# ---------------------------------------------------------------- spec

@pytest.mark.parametrize(
    "mitigation, message",
    [
        ({"name": "loss", "params": {"lambda": -1}}, "greater than or equal to 0"),
        ({"name": "loss", "params": {"lamda": 1}}, "lamda: unknown parameter"),
        ({"name": "loss", "params": {"divergence": "wasserstein"}}, "divergence"),
        ({"name": "mask", "params": {"lexicon": "no/such/lexicon"}}, "no such file or folder"),
        ({"name": "mask", "params": {"kinds": ["verbs"]}}, "kinds"),
        ({"name": "token", "params": {"real_tag": "<t>", "augmented_tag": "<t>"}}, "must differ"),
        ({"name": "none", "params": {"x": 1}}, "x: unknown parameter"),
    ],
)
def test_bad_mitigation_params_fail_with_a_clear_error(tmp_path, tiny_model, data_root, mitigation, message):
    d = micro_spec_dict(tmp_path, tiny_model, data_root, mitigations=[mitigation])
    with pytest.raises(SpecError, match=message) as err:
        parse_spec(d, check_files=False)
    assert "mitigations.0" in str(err.value) and "Allowed" in str(err.value)


def test_lexicon_paths_become_absolute_and_missing_lexicons_are_explained(tmp_path, tiny_model, data_root,
                                                                        monkeypatch):
    (tmp_path / "lex").mkdir()
    (tmp_path / "lex" / "religion.yaml").write_text("groups: {muslim: [mosque], jewish: [synagogue]}\n")
    monkeypatch.chdir(tmp_path)
    d = micro_spec_dict(tmp_path, tiny_model, data_root, mitigations=[{"name": "mask", "params": {"lexicon": "lex"}}])
    spec = parse_spec(d, check_files=False)
    assert spec.mitigation_specs[0].params["lexicon"] == str(tmp_path / "lex")
    m = MITIGATIONS.get("mask")(**spec.mitigation_specs[0].params)
    from bias_ray.train.mitigations import TrialContext

    m.setup(TrialContext(bias_type="religion", groups=["muslim", "jewish"]))
    assert m.stats()["mitigation/lexicon_terms"] == 2
    with pytest.raises(FileNotFoundError, match="no lexicon for bias type 'race'"):
        m.setup(TrialContext(bias_type="race", groups=["black"]))


def test_every_builtin_bias_type_has_a_lexicon_for_its_groups():
    from bias_ray.spec import bias_type_catalog

    for name, entry in bias_type_catalog().items():
        lex = load_lexicon(name)
        assert set(entry["groups"]) <= set(lex.groups), name
        assert lex.attributes, name


@pytest.mark.slow
def test_token_matches_none_at_ratio_zero_within_seed_noise(tmp_path, tiny_model, data_root):
    """No augmented row: the tags carry no information, so token may differ from none by seed noise only.

    Noise: two standard errors of the difference of means over 3 seeds each (plus 0.02 for ties).
    (With the whole embedding matrix trained, the old token beat none 0.794 vs 0.657 at quickstart scale.)
    """
    d = micro_spec_dict(tmp_path, tiny_model, data_root, mitigations=["none", "token"],
                        training={"train_size": 96, "epochs": 2, "eval_every": 100, "max_eval_rows": 120,
                                  "learning_rate": 0.003, "max_length": 48})
    write_augmented(d, planted_rows(data_root, n=40))
    spec = parse_spec(d, check_files=False)
    scores: dict[str, list[float]] = {"none": [], "token": []}
    for name in scores:
        for seed in range(3):
            cfg = {"bias_type": "religion", "bias_ratio": 0.0, "mitigation": name, "seed": seed}
            scores[name].append(fit(spec, cfg, lambda *_: None)["macro_f1"])
    a, b = np.array(scores["none"]), np.array(scores["token"])
    se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    print(f"macro-F1 at ratio 0: none {scores['none']}, token {scores['token']}")
    assert abs(a.mean() - b.mean()) <= 2 * se + 0.02, scores
