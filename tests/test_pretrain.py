"""The tiny model's pretraining corpus holds no evaluation item; pretraining is recorded and cached."""

from __future__ import annotations

import json

import pytest

from bias_ray.data.loaders import load_toxigen
from bias_ray.models.corpus import EvalFilter, build_corpus, evaluation_items, normalise


@pytest.fixture(scope="module")
def corpus(data_root):
    return build_corpus(data_root, test_fraction=0.3)


def test_no_evaluation_item_in_the_corpus(corpus, data_root):
    """Brute force, independent of EvalFilter: no line equals, contains or lies inside an eval item."""
    items = evaluation_items(data_root, 0.3)
    assert items["toxigen_test"] and items["hatecheck"] and items["crows_pairs"] and items["bbq"]
    lines = [f" {normalise(t)} " for t in corpus.rows["text"]]
    all_lines = "\n".join(lines)
    for bench, texts in items.items():
        padded = [f" {normalise(t)} " for t in texts if normalise(t)]
        all_items = "\n".join(padded)
        for line in lines:
            assert line not in all_items, (bench, line)  # equal to, or inside, an item
        for item in padded:
            assert item not in all_lines, (bench, item)  # an item inside a line


def test_pretraining_split_is_the_trials_train_split(corpus, data_root):
    trials = load_toxigen(data_root, 0.3)
    train_texts = set(trials.loc[trials["split"] == "train", "text"])
    test_texts = set(trials.loc[trials["split"] == "test", "text"])
    from_toxigen = corpus.rows.loc[corpus.rows["source"] == "toxigen_train", "text"]
    assert len(from_toxigen) > 300 and set(from_toxigen) <= train_texts
    assert not set(corpus.rows["text"]) & test_texts
    # a demonstration that is a held-out statement is dropped, not kept under another source
    assert corpus.excluded.get("toxigen_demonstrations", 0) > 0


def test_filter_catches_equal_contained_and_containing_lines():
    f = EvalFilter(["I hate women.", "Muslims are people who pray five times a day and go to work"])
    lines = ["i HATE   women", "honestly, I hate women!", "are people who pray five", "women are great",
             "I hate womenfolk"]
    assert f.overlaps(lines) == [True, True, True, False, False]


def test_corpus_follows_the_test_fraction(data_root):
    """Another spec's split gives another corpus: its held-out statements are excluded instead."""
    other = build_corpus(data_root, test_fraction=0.5)
    trials = load_toxigen(data_root, 0.5)
    assert not set(other.rows["text"]) & set(trials.loc[trials["split"] == "test", "text"])


@pytest.mark.slow
def test_pretraining_lowers_heldout_perplexity_and_is_cached(tmp_path, data_root):
    from bias_ray.models import PretrainConfig, ensure_model, pretrain_tiny_model

    config = PretrainConfig(hidden_size=32, num_layers=1, vocab_size=600, max_steps=40, eval_every=20,
                            batch_size=8, seq_len=64, learning_rate=1e-2)
    out = pretrain_tiny_model(tmp_path / "m", data_root, 0.3, config, log=lambda *_: None)
    info = json.loads((out / "bias_ray_model.json").read_text())
    assert info["kind"] == "tiny-pretrained" and info["steps"] == 40
    assert info["heldout_perplexity"] < 0.5 * info["heldout_perplexity_random_init"]
    assert info["corpus"]["sources"]["toxigen_train"]["train"] > 300
    assert info["corpus"]["fingerprint"] and info["fingerprint"]
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert ensure_model(out, data_root, True, pretrain=True, config=config) == out  # same fingerprint: reused
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp
    changed = PretrainConfig(**{**config.__dict__, "max_steps": 20})
    ensure_model(out, data_root, True, pretrain=True, config=changed)  # another config: retrained
    assert json.loads((out / "bias_ray_model.json").read_text())["steps"] == 20
