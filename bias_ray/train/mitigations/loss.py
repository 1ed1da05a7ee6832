"""Loss-based mitigation: an extra term with weight lambda that penalises dependence on group identity.

Formula, for a batch B with task loss ``L_task = mean_i CE(f(x_i), y_i)``::

    L = L_task + lambda * (1/|S|) * sum_{i in S} D(p(.|x_i), q_i)

- ``reference: counterfactual`` (default): ``q_i = p(.|x~_i)`` where ``x~_i`` is ``x_i`` with every
  group identity term swapped for the same-index term of the next group of the trial's bias type
  (lexicon file, word boundaries, see :func:`swap_groups`); ``S`` = rows of B (augmented only with
  ``apply_to: augmented``) holding at least one group term. Gradients flow through both outputs.
- ``reference: base``: ``q_i = p_0(.|x_i)`` of the frozen base model (LoRA adapters disabled, no
  gradient); ``S`` = the augmented rows of B (all rows with ``apply_to: all``).

``p`` is the softmax over the labels (the classifier's logits, or a causal LM's next-token
logits of the label words). ``divergence`` D:
``kl``: sum_c p_c log(p_c / q_c); ``js``: KL(p||m)/2 + KL(q||m)/2 with m = (p+q)/2;
``l2``: sum_c (p_c - q_c)^2. An empty S adds nothing.

``lambda = 0`` adds nothing to the loss or the gradients: the term is still computed for the
log, under ``no_grad`` and in a forked RNG, so training is bit-identical to ``none``.
Stats: ``divergence`` (mean over steps so far), ``extra_loss`` (lambda x last D), ``rows`` (|S| summed).

``kind: mean_alignment`` (the paper's loss-based mitigation): the distance between the mean
last-layer representations of the real rows R and the augmented rows A of the batch::

    L = L_task + lambda * (1/H) || (1/|R|) sum_{i in R} phi(x_i) - (1/|A|) sum_{j in A} phi(x_j) ||^2

``phi(x)`` is the mean of the model's last hidden layer over the row's non-padding tokens, and ``H`` its
width: the squared gap is averaged over the hidden dimensions, so one ``lambda`` means the same for a
135M and an 8B model (summed, SmolLM2-135M's gap was ~220 against a task loss of ~3).
A (micro-)batch without rows of both kinds adds nothing (so ratio 0 trains exactly as ``none``),
and the same parameters as ``none`` are trained. ``divergence``, ``reference`` and ``apply_to``
belong to ``kind: divergence``. Stats: ``alignment`` (mean over steps so far), ``extra_loss``,
``rows`` (|R| + |A| summed over the batches that had both).
"""

from __future__ import annotations

from typing import Any, Literal

import pandas as pd
from pydantic import ConfigDict, Field, model_validator

from bias_ray.lexicons import LexiconSource, load_lexicon, swap_groups, term_pattern
from bias_ray.registry import MITIGATIONS
from bias_ray.train.collective import LOCAL, Collective
from bias_ray.train.mitigations.base import Mitigation, NoParams, TrialContext
from bias_ray.train.student import model_inputs


class LossParams(NoParams):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    kind: Literal["divergence", "mean_alignment"] = Field(
        default="divergence", description="divergence: outputs vs a reference; mean_alignment: real vs augmented "
        "mean representations")
    lam: float = Field(default=1.0, ge=0, alias="lambda", description="weight of the extra term")
    divergence: Literal["kl", "js", "l2"] = Field(default="js", description="D between output distributions")
    reference: Literal["counterfactual", "base"] = Field(
        default="counterfactual", description="compare with the group-swapped sample or the frozen base model"
    )
    apply_to: Literal["augmented", "all"] = Field(default="augmented", description="rows the term covers")
    lexicon: LexiconSource = None

    @model_validator(mode="after")
    def _kind_fields(self) -> LossParams:
        if self.kind == "mean_alignment":
            stray = [f for f in ("divergence", "reference", "apply_to", "lexicon") if f in self.model_fields_set]
            if stray:
                raise ValueError(f"{', '.join(stray)} belong to kind divergence; kind mean_alignment takes lambda")
        return self


def mean_representation_gap(hidden: Any, attention_mask: Any, augmented: Any,
                            collective: Collective = LOCAL) -> Any | None:
    """``||mean_R phi - mean_A phi||^2 / H`` for last-layer states ``hidden [B, T, H]`` (None without both kinds).

    ``phi(x_i) = sum_t m_it h_it / sum_t m_it`` with ``m`` the attention mask; ``augmented [B]`` boolean.
    On several workers the means run over the micro-batch's rows on all of them: ``mean_R phi =
    (sum_w sum_{i in R_w} phi_i) / sum_w |R_w|``, the sums all-reduced; the value is the same on every worker
    and its gradient flows through this worker's rows.
    """
    m = attention_mask.unsqueeze(-1).to(hidden.dtype)
    phi = (hidden * m).sum(1) / m.sum(1).clamp(min=1)
    if collective.is_local:
        if not bool(augmented.any()) or bool(augmented.all()):
            return None
        gap = phi[~augmented].mean(0) - phi[augmented].mean(0)
        return (gap.float() ** 2).mean()
    import torch

    sums = torch.stack([phi[~augmented].sum(0), phi[augmented].sum(0)]).float()  # [2, H]
    counts = torch.stack([(~augmented).sum(), augmented.sum()]).float()
    total = collective.all_sum(torch.cat([sums.detach().reshape(-1), counts]))
    global_counts = total[-2:]
    if bool((global_counts == 0).any()):
        return None
    global_sums = sums + (total[:-2].view_as(sums) - sums.detach())  # the value of all, the gradient of ours
    means = global_sums / global_counts[:, None]
    return ((means[0] - means[1]) ** 2).mean()


def worker_share(value: Any, collective: Collective) -> Any:
    """A step-wide ``value`` that every worker computed alike, as this worker's share: ``value / W`` in value
    (the shares sum to the value) and the full gradient through this worker's rows (the workers' gradients sum
    to the value's gradient). One worker: ``value`` itself."""
    if collective.is_local:
        return value
    return value.detach() / collective.world_size + (value - value.detach())


def divergence(p: Any, q: Any, kind: str) -> Any:
    """Per-row D(p, q) for probability rows ``p``, ``q`` of shape ``[N, C]``."""
    import torch

    eps = torch.finfo(p.dtype).tiny
    if kind == "kl":
        return (p * (torch.log(p + eps) - torch.log(q + eps))).sum(-1)
    if kind == "js":
        m = (p + q) / 2
        return 0.5 * divergence(p, m, "kl") + 0.5 * divergence(q, m, "kl")
    if kind == "l2":
        return ((p - q) ** 2).sum(-1)
    raise ValueError(f"unknown divergence {kind!r}; allowed: kl, js, l2")


@MITIGATIONS.register("loss")
class LossMitigation(Mitigation):
    name = "loss"
    Params = LossParams
    params: LossParams
    summed_stats = ("rows",)  # each worker counts its own rows; the running means are of step-wide values

    @classmethod
    def same_as_none_without_augmented_rows(cls, params: LossParams) -> bool:
        # mean_alignment needs real and augmented rows in a batch; divergence covers only augmented rows
        return params.kind == "mean_alignment" or params.apply_to == "augmented"

    def setup(self, ctx: TrialContext) -> None:
        super().setup(ctx)
        if self.params.kind == "mean_alignment":
            self._stats.update(alignment=0.0, extra_loss=0.0, rows=0.0, steps=0.0)
            return
        if self.params.reference == "counterfactual":
            self.lexicon = load_lexicon(ctx.lexicon_key, self.params.lexicon)
            self.pattern = term_pattern(self.lexicon.terms(("groups",), ctx.groups))
            if len([g for g in ctx.groups if g in self.lexicon.groups]) < 2:
                raise ValueError(
                    f"mitigation 'loss': counterfactual swaps need at least two groups of bias type {ctx.bias_type!r} "
                    f"in the lexicon (groups {ctx.groups}, lexicon has {sorted(self.lexicon.groups)})"
                )
        self._stats.update(divergence=0.0, extra_loss=0.0, rows=0.0, steps=0.0)

    def _rows(self, rows: pd.DataFrame) -> list[int]:
        if self.params.apply_to == "augmented":
            return [i for i, a in enumerate(rows["is_augmented"].astype(bool)) if a]
        return list(range(len(rows)))

    def counterfactuals(self, rows: pd.DataFrame) -> tuple[list[int], list[str]]:
        """Positions in the batch of the rows in S and their group-swapped texts."""
        keep, texts = [], []
        for i in self._rows(rows):
            swapped, n = swap_groups(str(rows["text"].iloc[i]), self.lexicon, self.ctx.groups, self.pattern)
            if n:
                keep.append(i)
                texts.append(swapped)
        return keep, texts

    def term(self, model: Any, batch: dict[str, Any], outputs: Any, rows: pd.DataFrame) -> tuple[Any, float] | None:
        """``(this worker's share, the value)`` of the mean divergence over S, or None when S is empty.

        One worker: both are ``mean_{i in S} D_i``. Several: the mean runs over S on all workers, ``sum_w
        sum_{i in S_w} D_i / sum_w |S_w|``; this worker's share is its own rows' part of that sum (the shares sum
        to the value, their gradients to its gradient).
        """
        import torch

        collective = self.ctx.collective
        if self.params.reference == "counterfactual":
            keep, texts = self.counterfactuals(rows)
        else:
            keep, texts = self._rows(rows), []
        values = None
        if keep:
            if self.params.reference == "counterfactual":
                cf = self.student.encode(texts)
                other = self.student.class_logits(model(**model_inputs(cf)).logits, cf)
            else:
                with torch.no_grad(), model.disable_adapter():
                    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                other = self.student.class_logits(logits, batch)[keep]
            p = torch.softmax(self.student.class_logits(outputs.logits, batch)[keep], -1)
            q = torch.softmax(other, -1)
            self._add("rows", len(keep))
            values = divergence(p, q, self.params.divergence)
        elif collective.every_worker_forwards:
            values = self._idle_forward(model, batch, rows)
        if collective.is_local:
            if values is None:
                return None
            mean = values.mean()
            return mean, float(mean.detach())
        local = values.sum() if values is not None else torch.zeros((), device=batch["input_ids"].device)
        count, total = collective.all_sum(torch.stack([torch.tensor(float(len(keep)), device=local.device),
                                                       local.detach().float()])).tolist()
        if not count:
            return None
        return local / count, total / count

    def _idle_forward(self, model: Any, batch: dict[str, Any], rows: pd.DataFrame) -> Any:
        """On a sharded student (FSDP) a worker whose rows have no counterfactual still runs the reference
        forward that the others run, on its first row, since theirs all-gather weights from it; the result
        counts zero times (an empty ``values``, still in the graph, so the backward pairs up too)."""
        import torch

        if self.params.reference == "counterfactual":
            stand_in = self.student.encode([str(rows["text"].iloc[0])])
            logits = model(**model_inputs(stand_in)).logits
        else:
            with torch.no_grad(), model.disable_adapter():
                logits = model(input_ids=batch["input_ids"][:1], attention_mask=batch["attention_mask"][:1]).logits
        return logits.reshape(-1)[:0].float()

    def forward_kwargs(self) -> dict[str, Any]:
        return {"output_hidden_states": True} if self.params.kind == "mean_alignment" else {}

    def _alignment_loss(self, batch: dict[str, Any], outputs: Any, rows: pd.DataFrame) -> Any | None:
        import torch

        augmented = torch.tensor(rows["is_augmented"].astype(bool).tolist(), device=batch["input_ids"].device)
        value = mean_representation_gap(outputs.hidden_states[-1], batch["attention_mask"], augmented,
                                        self.ctx.collective)
        if value is None:
            return None
        d = float(value.detach())
        steps = self._stats["steps"] + 1
        self._stats.update(alignment=self._stats["alignment"] + (d - self._stats["alignment"]) / steps,
                           extra_loss=self.params.lam * d, steps=steps, rows=self._stats["rows"] + len(rows))
        return self.params.lam * worker_share(value, self.ctx.collective) if self.params.lam else None

    def extra_loss(self, model: Any, batch: dict[str, Any], outputs: Any, rows: pd.DataFrame) -> Any | None:
        import torch

        if self.params.kind == "mean_alignment":
            return self._alignment_loss(batch, outputs, rows)
        lam = self.params.lam
        if lam == 0:  # log only: no graph, and the RNG stream (dropout) is left as `none` would see it
            cuda = [batch["input_ids"].device] if batch["input_ids"].is_cuda else []
            with torch.no_grad(), torch.random.fork_rng(devices=cuda):
                found = self.term(model, batch, outputs, rows)
        else:
            found = self.term(model, batch, outputs, rows)
        value, d = found if found is not None else (None, 0.0)
        steps = self._stats["steps"] + 1
        self._stats.update(
            divergence=self._stats["divergence"] + (d - self._stats["divergence"]) / steps,
            extra_loss=lam * d,
            steps=steps,
        )
        if lam == 0 or value is None:
            return None
        return lam * value
