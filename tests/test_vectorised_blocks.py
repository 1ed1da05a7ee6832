"""Block-built prompts, sample ids and post-processing equal the per-row code they replaced, byte for byte.

A resumed job rebuilds its prompts and skips the sample ids already on disk, so the vectorised
``PromptPlan.table`` must give exactly what one ``default_rng`` per row gave. The reference below
is that per-row code, frozen here; the tests compare over many indices and awkward cases (several
bias types, groups and stances, few_shot from 0 to more than a pool holds, chat on and off,
ToxiGen, CrowS-Pairs, BBQ and user-file seeds, seeds above 2**32).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bias_ray.data.loaders import load_toxigen, stable_id
from bias_ray.generate import seeded_draws
from bias_ray.generate.prompts import PROMPT_COLUMNS, PromptPlan, make_plan
from bias_ray.spec import RESOURCES, parse_spec
from tests.conftest import micro_spec_dict


def reference_sample_ids(plan: PromptPlan, indices: np.ndarray) -> list[str]:
    seg, within = plan._locate(np.asarray(indices, dtype=np.int64))
    out = []
    for s, i in zip(seg.tolist(), within.tolist()):
        _, bias, stance, _ = plan.segments[s]
        group = plan.groups[bias][i % len(plan.groups[bias])]
        out.append(stable_id(plan.fingerprint, bias, group, stance, i))
    return out


def reference_rows(plan: PromptPlan, indices: np.ndarray) -> pd.DataFrame:
    """The per-row prompt construction (one generator per prompt), as it was before blocks."""
    indices = np.asarray(indices, dtype=np.int64)
    seg, within = plan._locate(indices)
    ids = reference_sample_ids(plan, indices)
    prefix = plan.template.get("line_prefix", "- ")
    rows = []
    for index, s, i, sid in zip(indices.tolist(), seg.tolist(), within.tolist(), ids):
        _, bias, stance, _ = plan.segments[s]
        cfg = plan.template["stances"][stance]
        group = plan.groups[bias][i % len(plan.groups[bias])]
        pool_ids, pool_texts = plan.pools[(group, int(cfg["seed_label"]))]
        k = min(plan.few_shot, len(pool_ids))
        rng = np.random.default_rng([plan.seed, int(sid[:12], 16)])
        picks = rng.choice(len(pool_ids), size=k, replace=False).tolist() if k else []
        lines = [cfg["header"].format(group=group.replace("_", " "))]
        lines += [f"{prefix}{pool_texts[p]}" for p in picks]
        if plan.chat:
            ending = "\n\n" + plan.template["chat"]["instruction"].format(group=group.replace("_", " "))
        else:
            ending = "\n" + prefix.rstrip()
        rows.append({
            "sample_id": sid, "index": index, "prompt": "\n".join(lines) + ending,
            "bias_type": bias, "group": group, "stance": stance, "label": int(cfg["label"]),
            "seed_ids": ",".join(pool_ids[p] for p in picks), "template_id": str(plan.template["id"]),
            "template_version": int(plan.template["version"]),
        })
    return pd.DataFrame(rows, columns=PROMPT_COLUMNS)


def _model(tmp_path):
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text("{}")  # validation looks for a saved model; prompts never load it
    return model


def _spec(tmp_path, data_root, bias_types=("religion", "gender", "race"), **generation):
    gen = {"samples_per_bias_type": 3000, "stances": {"biased": 2, "neutral": 1, "counter": 1}, **generation}
    return parse_spec(micro_spec_dict(tmp_path, _model(tmp_path), data_root, generation=gen,
                                      bias_types=list(bias_types)))


def _indices(plan: PromptPlan, n: int, seed: int = 0) -> np.ndarray:
    """Every segment's first and last prompts, and ``n`` others in a shuffled order."""
    edges = [i for start, _, _, count in plan.segments for i in (start, start + 1, start + count - 1)]
    rng = np.random.default_rng(seed)
    return np.concatenate([np.array(edges), rng.choice(plan.total, size=min(n, plan.total), replace=False)])


def _assert_same(plan: PromptPlan, indices: np.ndarray) -> None:
    got, want = plan.rows(indices), reference_rows(plan, indices)
    pd.testing.assert_frame_equal(got, want, check_dtype=True)
    assert plan.sample_ids(indices) == want["sample_id"].tolist()
    # a block split anywhere gives the same rows as one block
    halves = pd.concat([plan.rows(indices[: len(indices) // 3]), plan.rows(indices[len(indices) // 3:])],
                       ignore_index=True)
    pd.testing.assert_frame_equal(halves, want)


@pytest.fixture(scope="module")
def seeds(data_root):
    rows = load_toxigen(data_root)
    return rows[rows["split"] == "train"]


@pytest.mark.parametrize(("few_shot", "chat", "seed"), [(3, False, 0), (0, False, 1), (1, True, 2), (8, False, 3),
                                                        (20, True, 2**32 + 17)])
def test_block_prompts_equal_the_per_row_reference(tmp_path, data_root, seeds, few_shot, chat, seed):
    extra = {"chat": True, "system_prompt": "be brief"} if chat else {}
    spec = _spec(tmp_path, data_root, few_shot=few_shot, seed=seed, **extra)
    plan = make_plan(spec, seeds)
    sizes = {len(ids) for ids, _ in plan.pools.values()}
    if few_shot == 20:  # more seeds than some pools hold: k = the pool's size there, and picks are a permutation
        assert min(sizes) < 20 < max(sizes)
    _assert_same(plan, _indices(plan, 3000, seed=few_shot))


def test_block_prompts_of_other_seed_sources_and_templates(tmp_path, data_root):
    crows = _spec(tmp_path, data_root, template=str(RESOURCES / "prompts" / "crows_pairs_statements.yaml"),
                  stances={"biased": 1, "counter": 1}, bias_types=("religion", "gender"))
    plan = make_plan(crows)
    _assert_same(plan, _indices(plan, 1500))
    bbq = _spec(tmp_path, data_root, template=str(RESOURCES / "prompts" / "bbq_stories.yaml"),
                stances={"biased": 1, "counter": 1}, bias_types=("religion",), few_shot=2)
    plan = make_plan(bbq)
    _assert_same(plan, _indices(plan, 1500))


def test_block_prompts_of_a_users_data_file_with_a_custom_template(tmp_path, data_root):
    groups = ["women", "men", "non_binary"]
    rows = pd.DataFrame({
        "id": [f"mine-{i}" for i in range(600)],
        "text": [f"statement {i} about {groups[i % 3]} \u00e9\u4e2d" for i in range(600)],  # non-ASCII survives
        "label": [i % 2 for i in range(600)], "group": [groups[i % 3] for i in range(600)],
        "split": ["test" if i % 7 == 0 else "train" for i in range(600)],
    })
    rows.to_parquet(tmp_path / "mine.parquet", index=False)
    template = tmp_path / "t.yaml"
    template.write_text(
        "id: mine\nversion: 3\nline_prefix: '* '\nchat: {instruction: 'One more about {group}.'}\n"
        "stances:\n  biased: {seed_label: 1, label: 1, header: 'About {group}:'}\n"
        "  counter: {seed_label: 0, label: 0, header: 'Fair lines on {group}'}\n")
    spec = parse_spec({
        **micro_spec_dict(tmp_path, _model(tmp_path), data_root),
        "data": {"root": str(data_root), "task": "file", "path": str(tmp_path / "mine.parquet")},
        "bias_types": [{"name": "gender", "groups": groups}],
        "generation": {"samples_per_bias_type": 5000, "few_shot": 4, "template": str(template),
                       "stances": {"biased": 3, "counter": 2}, "seed": 99},
    })
    plan = make_plan(spec)
    assert plan.template["id"] == "mine"
    _assert_same(plan, _indices(plan, 4000))
    # the whole job in index order, as a fresh run builds it
    _assert_same(plan, np.arange(plan.total))


def test_empty_block(tmp_path, data_root, seeds):
    plan = make_plan(_spec(tmp_path, data_root), seeds)
    empty = plan.table(np.zeros(0, dtype=np.int64))
    assert empty.num_rows == 0 and empty.column_names == PROMPT_COLUMNS
    assert plan.sample_ids(np.zeros(0, dtype=np.int64)) == []


def test_seeded_draws_equal_numpys_generators():
    rng = np.random.default_rng(5)
    n = 4000
    keys = rng.integers(0, 2**48, n, dtype=np.uint64)
    keys[:50] = rng.integers(0, 2**32, 50, dtype=np.uint64)  # one-word keys
    sizes = rng.integers(1, 12_000, n)
    sizes[:40] = [1, 2, 3] + [20_000] * 37  # numpy shuffles a tail of arange(n) for the large draws
    k = np.minimum(rng.integers(0, 10, n), sizes)
    k[3:40] = 500  # 500 > 20,000 // 50: the tail-shuffle case
    for seed in (0, 2**31 + 3, 2**40 + 1, 2**80):  # 2**80: three entropy words, per-row generators
        got = seeded_draws.choose(seed, keys, sizes, k)
        for row in range(n):
            want = np.random.default_rng([seed, int(keys[row])]).choice(int(sizes[row]), size=int(k[row]),
                                                                        replace=False).tolist() if k[row] else []
            assert got[row, : k[row]].tolist() == want, (seed, row)
            assert (got[row, k[row]:] == -1).all()
    assert seeded_draws._vector_path_matches_numpy()
    with pytest.raises(ValueError, match="k must lie"):
        seeded_draws.choose(0, keys[:1], np.array([2]), np.array([3]))


# ---------------------------------------------------------------- post-processing on whole columns
TRICKY_TEXTS = [
    "", " ", "\n", "  - women are fine\nnext line", "-- -x", "- \u3000 spaced \u2003", "\x1c\x1fhidden ws\x1e",
    "line one\r\nline two", "\tI cannot do that", "I CANNOT do that", "As an AI, no", "\u0130 cannot do it",
    "ok \u212a", "a.b and (x| and \\ and [i] * and x", "axb", "a.b",
    "caf\u00e9 is fine", "\u4e2d\u6587 statement here", "x" * 25, "abcd", "abcde", "-", "- - -",
    " \n\n real text after blank lines", "trailing dash -", "\x85next-line char\x85", "\u00a0nbsp\u00a0",
    None,
]


def test_column_cleaning_and_filters_equal_the_per_row_functions():
    import pyarrow as pa

    from bias_ray.generate.quality import PY_WHITESPACE, clean_generation, clean_generations, drop_reason, drop_reasons
    from bias_ray.spec import QualitySpec

    assert set(PY_WHITESPACE) == {chr(c) for c in range(0x110000) if chr(c).isspace()}
    texts = pa.array(TRICKY_TEXTS, pa.string())
    cleaned = clean_generations(texts).to_pylist()
    assert cleaned == [clean_generation(t if t is not None else "") for t in TRICKY_TEXTS]
    for quality in (QualitySpec(min_chars=5, max_chars=20), QualitySpec(),
                    QualitySpec(min_chars=0, max_chars=3, refusal_patterns=["\u0130", "K", "\u212a", "FINE"]),
                    QualitySpec(refusal_patterns=[]),
                    QualitySpec(refusal_patterns=["a.b", "(x|", "\\", "\n", "[i] *"]),
                    QualitySpec(refusal_patterns=[""])):
        for column in (cleaned, [t if t is not None else "" for t in TRICKY_TEXTS]):
            got = drop_reasons(pa.array(column, pa.string()), quality).to_pylist()
            assert got == [drop_reason(t, quality) for t in column], quality


def test_filters_on_an_array_whose_offsets_do_not_start_at_zero():
    """A slice of a pandas string column arrives with offsets into a larger buffer (pyarrow 26's
    ascii_lower returned an invalid array for such input: refusals missed, or a crash)."""
    import numpy as np
    import pyarrow as pa

    from bias_ray.generate.quality import drop_reason, drop_reasons
    from bias_ray.spec import QualitySpec

    texts = ["a fine statement", "I'M SORRY, I cannot do that", "ok text here", "As An AI model"] * 50
    data = ("PREFIX" * 100 + "".join(texts)).encode()
    starts = np.cumsum([600] + [len(t) for t in texts]).astype(np.int32)  # offsets begin at 600, not 0
    shifted = pa.StringArray.from_buffers(len(texts), pa.py_buffer(starts.tobytes()), pa.py_buffer(data))
    shifted.validate(full=True)
    assert shifted.to_pylist() == texts
    quality = QualitySpec()
    assert drop_reasons(shifted, quality).to_pylist() == [drop_reason(t, quality) for t in texts]


def test_postprocess_on_arrow_batches(tmp_path):
    import pyarrow as pa

    from bias_ray.augmented import SHARD_COLUMNS
    from bias_ray.generate.pipeline import _postprocess
    from bias_ray.generate.quality import clean_generation, drop_reason
    from bias_ray.spec import QualitySpec

    n = len(TRICKY_TEXTS)
    errors = ["" if i % 4 else "timeout" for i in range(n)]
    batch = pa.table({
        "sample_id": [f"s{i}" for i in range(n)], "index": pa.array(range(n), pa.int32()),
        "prompt": ["p"] * n, "bias_type": ["religion"] * n, "group": ["muslim"] * n, "stance": ["biased"] * n,
        "label": [1] * n, "seed_ids": ["a,b"] * n, "generated_text": TRICKY_TEXTS,
        "generated_tokens": pa.array([None if i == 2 else float(i) for i in range(n)]),
        "engine_error": pa.array([None if i == 1 else e for i, e in enumerate(errors)], pa.string()),
        "__inference_error__": pa.array(["boom" if i == 5 else None for i in range(n)], pa.string()),
    })
    quality = QualitySpec(min_chars=5, max_chars=20)
    out = _postprocess(batch, "transformers", quality)
    assert out.column_names == [*SHARD_COLUMNS, "engine_error", "generated_text"]
    rows = out.to_pylist()
    for i, row in enumerate(rows):
        raw = TRICKY_TEXTS[i] if TRICKY_TEXTS[i] is not None else ""
        error = "engine error: boom" if i == 5 else ("" if i == 1 else errors[i])
        assert row["text"] == clean_generation(raw)
        assert row["drop_reason"] == drop_reason(clean_generation(raw), quality)
        assert row["engine_error"] == error
        assert row["generated_text"] == (raw if error else "")  # the raw output only where it explains a failure
        assert row["generated_tokens"] == (0 if i == 2 else i) and row["index"] == i
        assert row["device"] == "transformers" and row["engine_s"] == 0.0 and row["label"] == 1
    assert out.schema.field("text").type == pa.large_string() and out.schema.field("index").type == pa.int64()
