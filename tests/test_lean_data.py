"""Lean shards, the streaming finalize and trials that read only what they use.

The references here are the old whole-set code paths, written out in the tests: a full read of
every shard into pandas, ``find_duplicates`` over the whole job, ``mix`` over the full frame.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from bias_ray.augmented import (
    JOB_CONSTANTS,
    ROW_DIRECTORY,
    SHARD_COLUMNS,
    augmented_rows,
    augmented_strata,
    finalize,
    iter_kept_batches,
    load_augmented,
)
from bias_ray.augmented.finalize import find_duplicates
from bias_ray.generate import pipeline
from bias_ray.generate.pipeline import _finalize, generate
from bias_ray.mix import mix
from bias_ray.spec import parse_spec
from bias_ray.train.trainable import trial_data
from tests.conftest import micro_spec_dict

BIAS_GROUPS = {"religion": ["muslim", "jewish"], "gender": ["women", "lgbtq"]}


def _spec(tmp_path: Path, data_root: Path, **overrides):
    d = micro_spec_dict(tmp_path, tmp_path / "no-model", data_root, bias_types=list(BIAS_GROUPS), **overrides)
    return parse_spec(d, check_files=False)


def _shard_frame(n: int, seed: int, dup_every: int = 7) -> pd.DataFrame:
    """Rows in the lean shard layout, in segments of one bias type as a generation job writes them."""
    rng = np.random.default_rng(seed)
    index = np.arange(n)
    bias = np.where(index < n // 2, "religion", "gender")
    group = [BIAS_GROUPS[b][i % 2] for i, b in zip(index, bias)]
    # some texts repeat (across shards too), some rows are filtered
    text = [f"statement {i % (n // dup_every) if i % 3 == 0 else i} about {g}" for i, g in zip(index, group)]
    drop = rng.choice(["", "", "", "", "too_short", "refusal"], size=n)
    return pd.DataFrame({
        "sample_id": [f"{(i * 2654435761) % 2**32:08x}{i:08x}" for i in index], "index": index, "text": text,
        "generated_tokens": rng.integers(1, 20, size=n), "drop_reason": drop,
        "label": rng.choice([0, 1], size=n, p=[0.6, 0.4]), "group": group, "bias_type": bias,
        "stance": rng.choice(["biased", "counter"], size=n), "seed_ids": "a,b", "device": "cpu",
        "engine_s": rng.random(n) / 100,
    })[SHARD_COLUMNS]


def _write_job(spec, rows: pd.DataFrame, shard_rows: int, quarantine: pd.DataFrame | None = None) -> Path:
    out = spec.augmented_dir
    (out / "shards").mkdir(parents=True)
    (out / "quarantine").mkdir()
    for k, start in enumerate(range(0, len(rows), shard_rows)):
        rows.iloc[start:start + shard_rows].to_parquet(out / "shards" / f"part-{k:06d}.parquet", index=False,
                                                       row_group_size=16)  # many row groups, as real shards
    if quarantine is not None:
        quarantine.to_parquet(out / "quarantine" / "part-q.parquet", index=False)
    return out


def _old_full_read(out: Path) -> pd.DataFrame:
    """What load_augmented did before: every shard, every column, then filter and sort."""
    rows = pd.concat([pd.read_parquet(p) for p in sorted((out / "shards").glob("part-*.parquet"))], ignore_index=True)
    dups = set(pd.read_parquet(out / "duplicates.parquet")["sample_id"])
    rows = rows[(rows["drop_reason"] == "") & ~rows["sample_id"].isin(dups)].copy()
    return rows.sort_values("index").reset_index(drop=True)


def _finished(spec, rows, shard_rows=97, quarantine=None, rows_per_pass=1_000_000, monkeypatch=None):
    out = _write_job(spec, rows, shard_rows, quarantine)
    total = len(rows) + (0 if quarantine is None else len(quarantine))
    job = {"engine": "null", "model": "m", "sampling": {"temperature": 1.0}, "template_id": "t", "template_version": 2}
    if monkeypatch is not None:
        real = finalize.stream_duplicates
        monkeypatch.setattr(finalize, "stream_duplicates",
                            lambda parts, hashes, dest: real(parts, hashes, dest, rows_per_pass=rows_per_pass))
    return out, _finalize(spec, SimpleNamespace(total=total), job, {})


@pytest.mark.parametrize("rows_per_pass", [1_000_000, 40])  # one pass, and many passes over hash ranges
def test_streaming_finalize_matches_whole_job_counts_and_duplicates(tmp_path, data_root, monkeypatch, rows_per_pass):
    spec = _spec(tmp_path, data_root)
    rows = _shard_frame(1200, seed=0)
    quarantine = pd.DataFrame({"sample_id": ["q1", "q2", "q3"], "index": [1200, 1201, 1202],
                               "reason": ["engine error: boom", "malformed response (x): y", "engine error: z"],
                               "bias_type": "religion", "group": "muslim", "stance": "biased", "generated_text": ""})
    out, manifest = _finished(spec, rows, quarantine=quarantine, rows_per_pass=rows_per_pass,
                              monkeypatch=monkeypatch)
    want_dups = find_duplicates(rows)
    got_dups = pd.read_parquet(out / "duplicates.parquet")
    assert len(want_dups) > 20 and len(got_dups) == len(want_dups)
    assert set(zip(got_dups["sample_id"], got_dups["duplicate_of"])) == set(
        zip(want_dups["sample_id"], want_dups["duplicate_of"]))
    assert (got_dups["index"].to_numpy() == rows.set_index("sample_id").loc[got_dups["sample_id"], "index"]).all()
    drops = rows.loc[rows["drop_reason"] != "", "drop_reason"].value_counts().to_dict()
    assert manifest["dropped"] == {**drops, "duplicate": len(want_dups)}
    assert manifest["rows"] == len(rows) - sum(drops.values()) - len(want_dups) == len(_old_full_read(out))
    assert manifest["generated"] == 1200 and manifest["quarantined"] == 3 and manifest["prompts"] == 1203
    assert manifest["quarantine_reasons"] == {"engine error": 2, "malformed response": 1}
    assert manifest["generated_tokens"] == int(rows["generated_tokens"].sum())
    assert manifest["engine_seconds"] == round(float(rows["engine_s"].sum()), 3) and manifest["gpu_seconds"] == 0.0
    assert manifest["shards"] == 13 and manifest["devices"] == ["cpu"]


def test_row_directory_lists_each_kept_row_once_where_it_lies(tmp_path, data_root):
    spec = _spec(tmp_path, data_root)
    rows = _shard_frame(1200, seed=4)
    out, _ = _finished(spec, rows)
    full = _old_full_read(out)
    directory = pq.read_table(out / ROW_DIRECTORY).to_pandas()
    want = full.sort_values(["bias_type", "index"]).reset_index(drop=True)
    assert len(full) < len(rows[rows["drop_reason"] == ""])  # duplicates were dropped, and are not listed
    pd.testing.assert_frame_equal(directory[["index", "bias_type", "label", "group"]],
                                  want[["index", "bias_type", "label", "group"]], check_dtype=False)
    parts = json.loads(pq.read_schema(out / ROW_DIRECTORY).metadata[b"parts"])
    for row in directory.sample(40, random_state=0).itertuples():  # each location holds its row
        group = pq.ParquetFile(out / "shards" / parts[row.part]).read_row_group(row.row_group, columns=["index"])
        assert row.index in group.column("index").to_pylist()
    assert pq.ParquetFile(out / ROW_DIRECTORY).metadata.num_row_groups >= len(BIAS_GROUPS)


def test_finalize_refuses_a_job_with_lost_or_repeated_samples(tmp_path, data_root):
    spec = _spec(tmp_path, data_root)
    rows = _shard_frame(300, seed=1)
    rows = pd.concat([rows, rows.iloc[[5]]], ignore_index=True)  # one sample committed twice, one (299) lost
    rows = rows[rows["index"] != 299]
    out = _write_job(spec, rows, 100)
    with pytest.raises(pipeline.GenerationJobError, match="1 requested samples missing and 1 repeated"):
        _finalize(spec, SimpleNamespace(total=300), {}, {})
    assert not (out / "manifest.json").exists()


def _without_directory(out: Path, keep: bool) -> None:
    """Jobs finalized before the row directory existed are read from their shards alone."""
    assert (out / ROW_DIRECTORY).is_file()
    if not keep:
        (out / ROW_DIRECTORY).unlink()


@pytest.mark.parametrize("directory", [True, False])
def test_filtered_reads_give_the_full_reads_rows(tmp_path, data_root, directory):
    spec = _spec(tmp_path, data_root)
    out, _ = _finished(spec, _shard_frame(1500, seed=2))
    _without_directory(out, directory)
    full = _old_full_read(out)
    for bias in BIAS_GROUPS:
        want = full[full["bias_type"] == bias].reset_index(drop=True)
        strata = augmented_strata(spec, bias)
        assert isinstance(strata["group"].dtype, pd.CategoricalDtype)  # a code per row, not a string
        pd.testing.assert_frame_equal(strata.astype({"group": str}), want[["index", "label", "group"]],
                                      check_dtype=False)
        picked = want["index"].to_numpy()[[4, 0, 4, len(want) - 1]]
        got = augmented_rows(spec, picked)
        assert got["index"].tolist() == picked.tolist()
        assert got["text"].tolist() == want.set_index("index").loc[picked, "text"].tolist()
    assert load_augmented(spec, "gender", ["text"])["sample_id"].tolist() == full.loc[
        full["bias_type"] == "gender", "sample_id"].tolist()
    streamed = pd.concat(iter_kept_batches(out, ["sample_id", "text"], batch_rows=64), ignore_index=True)
    assert sorted(streamed["sample_id"]) == sorted(full["sample_id"])
    everything = load_augmented(spec)  # a full read gives the per-job constants back as columns
    assert everything["sample_id"].tolist() == full["sample_id"].tolist()
    assert everything["engine"].eq("null").all() and everything["template_version"].eq(2).all()
    assert json.loads(everything["sampling"].iloc[0]) == {"temperature": 1.0}
    with pytest.raises(KeyError, match="not rows of"):
        augmented_rows(spec, [int(full["index"].max()) + 10])


@pytest.mark.parametrize("mode, ratio, size, seed, directory", [
    ("fixed_total", 0.5, 200, 0, True), ("fixed_total", 0.9, 300, 3, True), ("fixed_real", 0.25, 150, 7, True),
    ("fixed_total", 0.0, 100, 1, True), ("fixed_total", 1.0, 900, 5, True),  # 900 > kept rows: with replacement
    ("fixed_total", 0.5, 200, 0, False), ("fixed_total", 1.0, 900, 5, False),
])
def test_trial_mix_is_the_full_read_mix(tmp_path, data_root, mode, ratio, size, seed, directory):
    spec = _spec(tmp_path, data_root, training={"train_size": size, "mix_mode": mode, "max_eval_rows": 50})
    out, _ = _finished(spec, _shard_frame(1500, seed=3))
    _without_directory(out, directory)
    full = _old_full_read(out)
    from bias_ray.data.loaders import load_toxigen

    real = load_toxigen(spec.data.resolved_root, spec.data.test_fraction)
    for bias in BIAS_GROUPS:
        want = mix(real[real["split"] == "train"], full[full["bias_type"] == bias].assign(id=lambda f: f["sample_id"]),
                   ratio, size, mode, seed)
        train, _ = trial_data(spec, bias, ratio, seed)
        assert train["id"].tolist() == want["id"].tolist()
        assert train["text"].tolist() == want["text"].tolist()
        assert train["is_augmented"].tolist() == want["is_augmented"].tolist()
        assert train.loc[train["is_augmented"], "bias_type"].eq(bias).all()
    again, _ = trial_data(spec, "religion", ratio, seed)
    other, _ = trial_data(spec, "religion", ratio, seed + 1)
    assert again["id"].tolist() == trial_data(spec, "religion", ratio, seed)[0]["id"].tolist()
    assert ratio == 0.0 or again["id"].tolist() != other["id"].tolist()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_null_engine_runs_through_the_pipeline_into_lean_shards(tmp_path, data_root, ray_session):
    spec = parse_spec(micro_spec_dict(tmp_path, tmp_path / "no-model", data_root, generation={
        "engine": "null", "samples_per_bias_type": 60, "batch_size": 16, "shard_rows": 20},
        tracking={"wandb": "disabled"}), check_files=False)
    out = generate(spec, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["rows"] == manifest["generated"] == 60
    assert manifest["devices"] == ["null"] and manifest["engine"] == "null" and manifest["quarantined"] == 0
    for part in sorted((out / "shards").glob("part-*.parquet")):
        names = pq.read_schema(part).names
        assert names == SHARD_COLUMNS  # lean: no per-job constant, no second copy of the text
        assert not set(names) & {*JOB_CONSTANTS, "generated_text"}
    kept = load_augmented(spec)
    assert len(kept) == 60 and kept["text"].str.startswith(pipeline_null_text()).all()
    assert kept["engine"].eq("null").all() and kept["model"].eq(str(spec.models.generator)).all()


def pipeline_null_text() -> str:
    from bias_ray.generate.engines.null_engine import NULL_TEXT

    return NULL_TEXT


def test_trial_mix_on_an_imported_set_is_the_full_read_mix(tmp_path, data_root):
    """Imported sets have only the required columns (no stance, no seed ids): the trial still reads them."""
    from bias_ray.data.loaders import load_toxigen
    from bias_ray.generate.imported import import_augmented

    spec = _spec(tmp_path, data_root, training={"train_size": 60})
    rows = _shard_frame(400, seed=4)[["text", "label", "group", "bias_type"]].drop_duplicates("text")
    import_augmented(spec, rows)
    real = load_toxigen(spec.data.resolved_root, spec.data.test_fraction)
    full = load_augmented(spec)
    want = mix(real[real["split"] == "train"], full[full["bias_type"] == "gender"], 0.5, 60, "fixed_total", 2)
    train, _ = trial_data(spec, "gender", 0.5, 2)
    assert train["id"].tolist() == want["id"].tolist() and train["text"].tolist() == want["text"].tolist()


def test_blocks_are_regrouped_into_whole_shards_in_order():
    """The driver writes shards of shard_rows rows whatever the blocks' sizes; progress sees every block."""
    import pyarrow as pa

    sizes = [3, 5, 0, 7, 2, 9]
    blocks, start = [], 0
    for n in sizes:
        blocks.append(pa.table({"index": list(range(start, start + n))}))
        start += n
    seen = []
    shards = list(pipeline._in_shards(iter(blocks), 4, lambda b: seen.append(b.num_rows)))
    assert [s.num_rows for s in shards] == [4, 4, 4, 4, 4, 4, 2] and seen == [n for n in sizes if n]
    assert [i for s in shards for i in s.column("index").to_pylist()] == list(range(sum(sizes)))
    assert list(pipeline._in_shards(iter([]), 4, seen.append)) == []


def test_an_import_is_laid_out_like_a_generated_job(tmp_path, data_root):
    """Shards of small row groups and the row directory: trials read only the rows they draw."""
    from bias_ray.generate.imported import IMPORT_PART_PREFIX, import_augmented

    spec = _spec(tmp_path, data_root)
    rows = _shard_frame(1000, seed=5)[["text", "label", "group", "bias_type", "stance"]]
    rows = rows.drop_duplicates("text").reset_index(drop=True)  # an import's ids come from its texts
    assert 800 < len(rows) <= 1000
    out = import_augmented(spec, rows, shard_rows=400)
    parts = sorted((out / "shards").glob("part-*.parquet"))
    assert [p.name for p in parts] == [f"{IMPORT_PART_PREFIX}{k:06d}.parquet" for k in range(3)]
    assert pq.ParquetFile(parts[0]).metadata.num_row_groups > 0
    directory = pq.read_table(out / ROW_DIRECTORY).to_pandas()
    want = rows.assign(index=range(len(rows))).sort_values(["bias_type", "index"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(directory[["index", "bias_type", "label", "group"]],
                                  want[["index", "bias_type", "label", "group"]], check_dtype=False)
    for bias in ("religion", "gender"):
        strata = augmented_strata(spec, bias)
        assert strata["index"].tolist() == want.loc[want["bias_type"] == bias, "index"].tolist()
        drawn = strata["index"].to_numpy()[::-7]  # any order, across shards
        assert augmented_rows(spec, drawn)["text"].tolist() == rows["text"].iloc[drawn].tolist()
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["status"], manifest["rows"], manifest["shards"]) == ("complete", len(rows), 3)


def test_an_import_cut_short_is_redone_and_a_generation_job_is_left_alone(tmp_path, data_root):
    from bias_ray.generate.imported import import_augmented

    spec = _spec(tmp_path, data_root)
    rows = _shard_frame(500, seed=6)[["text", "label", "group", "bias_type"]].drop_duplicates("text").iloc[:300]
    assert len(rows) == 300
    out = import_augmented(spec, rows, shard_rows=50)
    (out / "manifest.json").unlink()  # killed before its last step: six shards and a directory, no manifest
    import_augmented(spec, rows.iloc[:120], shard_rows=100)  # the rerun starts over: nothing of the first is left
    assert len(list((out / "shards").glob("part-*.parquet"))) == 2 and len(load_augmented(spec)) == 120
    with pytest.raises(FileExistsError, match=r"already holds augmented data \(an import\)"):
        import_augmented(spec, rows)
    other = _spec(tmp_path / "gen", data_root)
    (other.augmented_dir / "shards").mkdir(parents=True)
    rows.head(3).assign(index=range(3)).to_parquet(other.augmented_dir / "shards" / "part-x-000000.parquet")
    with pytest.raises(FileExistsError, match="unfinished generation job"):
        import_augmented(other, rows)
    assert (other.augmented_dir / "shards" / "part-x-000000.parquet").exists()


def test_an_import_names_rows_without_a_text_or_label(tmp_path, data_root):
    from bias_ray.generate.imported import import_augmented

    rows = _shard_frame(20, seed=7)[["text", "label", "group", "bias_type"]].astype({"label": object})
    rows.loc[[3, 11], "label"] = None
    named = r"rows \[3, 11\] \(rows \[3, 11\] of the frame; counting from 0\) lack a text, label"
    with pytest.raises(ValueError, match=named):
        import_augmented(_spec(tmp_path, data_root), rows)
    with pytest.raises(ValueError, match="no augmented rows"):
        import_augmented(_spec(tmp_path, data_root), rows.iloc[:0])
