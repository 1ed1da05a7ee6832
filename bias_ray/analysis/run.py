"""``bias-ray analyze SPEC``: compare a run's augmented data with the real data, per bias type and group.

Three misalignment factors (after Li et al. 2025): values (stance toward each group, by the
stance classifier), group data (representation and its JS / KL divergence), and data distribution
(MMD and Frechet distance of MiniLM embeddings, length and vocabulary statistics). Tables (CSV)
and figures (PNG) go to ``<run_dir>/analysis/``; the report picks them up.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bias_ray.analysis.distribution import (
    frechet_distance,
    mmd_permutation_test,
    text_stats,
    vocabulary_divergence,
)
from bias_ray.analysis.group_data import js_divergence, kl_divergence, representation
from bias_ray.analysis.values import value_summary, value_table
from bias_ray.files import write_frame, write_json
from bias_ray.measures.encoder import encode


@dataclass
class Comparison:
    summary: dict[str, float]
    values: pd.DataFrame
    groups: pd.DataFrame
    stats: pd.DataFrame


MMD_ROWS = 1000  # rows per set in the MMD and its permutation test (a 2000^2 kernel, 500 permutations)


def _capped(emb: np.ndarray, rows: int = MMD_ROWS, seed: int = 0) -> np.ndarray:
    """At most ``rows`` rows, drawn without replacement (seeded): the kernel grows with the square."""
    if len(emb) <= rows:
        return emb
    return emb[np.sort(np.random.default_rng(seed).choice(len(emb), rows, replace=False))]


def compare_sets(real: pd.DataFrame, other: pd.DataFrame, groups: list[str], classifier) -> Comparison:
    """Compare ``other`` (e.g. augmented rows) with ``real`` over ``groups``; both need text and group."""
    for name, frame in (("real", real), ("other", other)):
        missing = {"text", "group"} - set(frame.columns)
        if missing:
            raise ValueError(f"the {name} set lacks columns {sorted(missing)}")
        if frame.empty:
            raise ValueError(f"the {name} set is empty; nothing to compare")
    emb_r = encode(real["text"].astype(str).tolist(), classifier.encoder)
    emb_o = encode(other["text"].astype(str).tolist(), classifier.encoder)
    p_r, p_o = classifier.proba_from_embeddings(emb_r), classifier.proba_from_embeddings(emb_o)
    values = value_table(real["group"], p_r, other["group"], p_o, groups)
    rep_r, rep_o = representation(real["group"], groups), representation(other["group"], groups)
    group_table = pd.DataFrame({"group": groups, "real_share": rep_r, "other_share": rep_o})
    stats = pd.DataFrame([{"set": "real", **text_stats(real["text"])}, {"set": "other", **text_stats(other["text"])}])
    mmd, mmd_p = mmd_permutation_test(_capped(emb_r), _capped(emb_o))
    summary = {
        **value_summary(values, p_r, p_o),
        "group_js": js_divergence(rep_o, rep_r) if np.isfinite(rep_o).all() else float("nan"),
        "group_kl": kl_divergence(rep_o, rep_r) if np.isfinite(rep_o).all() else float("nan"),
        "mmd": mmd,
        "mmd_p": mmd_p,  # permutation p-value: H0 both sets come from one distribution
        "frechet": frechet_distance(emb_r, emb_o),
        **vocabulary_divergence(real["text"], other["text"]),
        "real_rows": float(len(real)),
        "other_rows": float(len(other)),
        "real_mean_words": float(stats.loc[0, "mean_words"]),
        "other_mean_words": float(stats.loc[1, "mean_words"]),
    }
    return Comparison(summary, values, group_table, stats)


def _plot(out: Path, per_type: dict[str, Comparison]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(per_type)
    paths = []
    for kind, cols, ylabel in (("values", ("real_stance", "other_stance"), "mean P(hate) toward group"),
                               ("groups", ("real_share", "other_share"), "share of rows")):
        fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.6), squeeze=False)
        for ax, bt in zip(axes[0], names):
            table = per_type[bt].values if kind == "values" else per_type[bt].groups
            x = np.arange(len(table))
            ax.bar(x - 0.2, table[cols[0]], 0.4, label="real")
            ax.bar(x + 0.2, table[cols[1]], 0.4, label="augmented")
            ax.set_xticks(x, table["group"], rotation=30, ha="right", fontsize=8)
            ax.set_title(bt)
        axes[0][0].set_ylabel(ylabel)
        axes[0][-1].legend(fontsize=8)
        fig.suptitle("values: stance per group" if kind == "values" else "group data: representation")
        fig.tight_layout()
        path = out / f"misalignment_{kind}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    metrics = [("value_gap", "value gap"), ("group_js", "group JS (bits)"), ("mmd", "MMD^2 (MiniLM)"),
               ("frechet", "Frechet (MiniLM)"), ("unigram_js", "unigram JS (bits)")]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.2), squeeze=False)
    for ax, (key, label) in zip(axes[0], metrics):
        ax.bar(names, [per_type[b].summary[key] for b in names], color="tab:red")
        ax.set_title(label, fontsize=9)
        ax.tick_params(axis="x", rotation=30, labelsize=8)
    fig.suptitle("misalignment per bias type (augmented vs real)")
    fig.tight_layout()
    path = out / "misalignment_summary.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return paths + [path]


def analyze(spec, max_rows: int | None = 2000) -> Path:
    """Run the three analyses for every bias type of ``spec`` and write them under ``<run_dir>/analysis``; with
    ``analysis.group_probes``, also the group shares of texts from neutral prompts (:mod:`.probes`).

    ``analysis.json`` records the wall time and the rows compared, for the report's compute section.
    """
    started = time.perf_counter()
    from bias_ray.augmented import load_augmented
    from bias_ray.data.custom import load_task_data
    from bias_ray.measures.classifier import toxigen_classifier

    real_all = load_task_data(spec.data)  # the real data the generator drew its seeds from
    real_all = real_all[real_all["split"] == "train"]
    ev = spec.evaluation
    clf = toxigen_classifier(str(spec.data.resolved_root), ev.encoder, ev.classifier_epochs, ev.classifier_l2,
                             spec.data.test_fraction)
    out = spec.layout.analysis_dir
    out.mkdir(parents=True, exist_ok=True)
    per_type: dict[str, Comparison] = {}
    for bias in spec.bias_type_specs:
        real = real_all[real_all["group"].isin(bias.groups)]
        aug = load_augmented(spec, bias.name)  # that bias type's rows only, read with a pushed-down filter
        if real.empty or aug.empty:
            continue
        if max_rows:
            real = real.sample(n=min(len(real), max_rows), random_state=0)
            aug = aug.sample(n=min(len(aug), max_rows), random_state=0)
        per_type[bias.name] = compare_sets(real, aug, list(bias.groups), clf)
    if not per_type:
        raise ValueError(f"no bias type of {spec.name} has both real and augmented rows; is the generation empty?")

    def stacked(attr: str) -> pd.DataFrame:
        return pd.concat([getattr(c, attr).assign(bias_type=b) for b, c in per_type.items()], ignore_index=True)

    summary = pd.DataFrame([{"bias_type": b, **c.summary} for b, c in per_type.items()])
    if spec.analysis.group_probes:  # the paper's group data: shares that neutral prompts produce (probes.py)
        from bias_ray.analysis.probes import run_group_probes

        probe_tv = run_group_probes(spec, out)
        if probe_tv:
            summary["probe_tv"] = [probe_tv.get(spec.bias_type(b).dimension_name, np.nan) for b in summary["bias_type"]]
    write_frame(summary, out / "summary.csv")
    write_frame(stacked("values").rename(columns={"other_stance": "augmented_stance", "other_rows": "augmented_rows",
                                                  "other_share": "augmented_share"}), out / "values.csv")
    write_frame(stacked("groups").rename(columns={"other_share": "augmented_share"}), out / "groups.csv")
    write_frame(stacked("stats").replace({"set": {"other": "augmented"}}), out / "text_stats.csv")
    write_json(out / "classifier.json", {"encoder": clf.encoder, **clf.metrics})
    _plot(out, per_type)
    rows = {b: {"real": int(c.summary["real_rows"]), "augmented": int(c.summary["other_rows"])}
            for b, c in per_type.items()}
    write_json(out / "analysis.json",
               {"wall_s": round(time.perf_counter() - started, 3), "max_rows": max_rows, "rows": rows})
    return out
