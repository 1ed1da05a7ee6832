"""Pretrain the tiny causal LM on the local real-text corpus, for a bounded budget, cached by fingerprint.

Why: a randomly initialised generator writes noise, so augmented rows carry a label but no
content, and there is no bias for a student to inherit. Pretrained on the ToxiGen train-split
statements and demonstrations (:mod:`bias_ray.models.corpus`, no evaluation item), packed as the
same few-shot lists the generation prompts use, the model learns to continue "statements about
{group}" in the stance of the examples, and the student starts from a body that has seen text.

Objective: next-token cross-entropy, ``L = -1/N sum_t log p(x_t | x_<t)`` over non-pad tokens;
held-out perplexity ``exp(L)`` on the corpus's held-out lines, at initialisation, every
``eval_every`` steps (the curve is recorded) and at the end. The last state is kept, not the
held-out best: the corpus is small (~450 lines), so held-out perplexity bottoms out after ~100
steps while the model goes on learning to continue a list of statements about the prompted
group, which is what it is for (measured: ``generator_measures`` in the generation manifest).
The folder's ``bias_ray_model.json`` records the
sources and row counts, the fingerprint (corpus + config), the steps, time and both perplexities;
a folder with the same fingerprint is reused as it is.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bias_ray.models.corpus import Corpus, build_corpus, documents

PRETRAIN_VERSION = 2  # bump when the training code changes what a config yields


@dataclass(frozen=True)
class PretrainConfig:
    """Model size and training budget; every field is part of the cache fingerprint except ``max_seconds``."""

    vocab_size: int = 2000
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    max_positions: int = 256
    max_steps: int = 300
    max_seconds: float = 170.0  # a cap for slow machines; the steps actually taken are recorded
    batch_size: int = 16
    seq_len: int = 128
    learning_rate: float = 3e-3
    warmup_steps: int = 30
    eval_every: int = 50
    threads: int = 1  # on a shared 2-core machine two threads were 7x slower a step than one
    seed: int = 0

    def fingerprint(self, corpus: Corpus) -> str:
        fields = {k: v for k, v in asdict(self).items() if k not in ("max_seconds", "threads", "eval_every")}
        blob = json.dumps({"v": PRETRAIN_VERSION, "config": fields, "corpus": corpus.fingerprint()}, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:16]


def read_info(path: str | Path) -> dict[str, Any]:
    """The model folder's ``bias_ray_model.json`` (empty for a folder bias-ray did not build)."""
    f = Path(path) / "bias_ray_model.json"
    return json.loads(f.read_text()) if f.is_file() else {}


def _encode_docs(tokenizer, docs: list[str], seq_len: int):

    enc = tokenizer([tokenizer.bos_token + d + tokenizer.eos_token for d in docs], add_special_tokens=False,
                    truncation=True, max_length=seq_len, padding=True, return_tensors="pt")
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    return enc["input_ids"], enc["attention_mask"], labels


def heldout_perplexity(model, tokenizer, docs: list[str], seq_len: int, batch_size: int = 32) -> float:
    """``exp`` of the mean next-token loss over all non-pad tokens of ``docs``."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(docs), batch_size):
            ids, mask, labels = _encode_docs(tokenizer, docs[i : i + batch_size], seq_len)
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
            target = labels[:, 1:]
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                                     ignore_index=-100, reduction="sum")
            total += float(loss)
            count += int((target != -100).sum())
    model.train()
    return math.exp(total / max(count, 1))


def pretrain_tiny_model(out_dir: str | Path, data_root: str | Path, test_fraction: float = 0.3,
                        config: PretrainConfig | None = None, log=print) -> Path:
    """Build (tokenizer + Llama) and pretrain the tiny model at ``out_dir``; reuse it when the fingerprint matches."""
    import torch

    from bias_ray.models.tiny import build_tiny_model

    config = config or PretrainConfig()
    out = Path(out_dir)
    corpus = build_corpus(data_root, test_fraction)
    fingerprint = config.fingerprint(corpus)
    if read_info(out).get("fingerprint") == fingerprint and (out / "model.safetensors").is_file():
        return out  # same corpus, same config: the cached model
    started = time.perf_counter()
    build_tiny_model(out, data_root, vocab_size=config.vocab_size, hidden_size=config.hidden_size,
                     num_layers=config.num_layers, num_heads=config.num_heads, max_positions=config.max_positions,
                     seed=config.seed, corpus=corpus)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    tokenizer.padding_side = "right"  # training: pad after the text
    model = AutoModelForCausalLM.from_pretrained(out)
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, config.threads))
    torch.manual_seed(config.seed)
    heldout_docs = documents(corpus.heldout, seed=10_000, lines_per_doc=(3, 3))
    ppl_init = heldout_perplexity(model, tokenizer, heldout_docs, config.seq_len)
    curve = [(0, round(ppl_init, 3))]
    opt = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / config.warmup_steps) * max(
        0.1, 0.5 * (1 + math.cos(math.pi * min(1.0, s / config.max_steps)))))
    pool: list[str] = []
    epoch, step, losses = 0, 0, []
    train_started = time.perf_counter()
    model.train()
    while step < config.max_steps and time.perf_counter() - train_started < config.max_seconds:
        if len(pool) < config.batch_size:
            pool += documents(corpus.train, seed=config.seed * 1000 + epoch)
            epoch += 1
        batch, pool = pool[: config.batch_size], pool[config.batch_size :]
        ids, mask, labels = _encode_docs(tokenizer, batch, config.seq_len)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        step += 1
        if step % config.eval_every == 0 or step == config.max_steps:
            ppl = heldout_perplexity(model, tokenizer, heldout_docs, config.seq_len)
            log(f"pretrain step {step}: train loss {sum(losses) / len(losses):.3f}, held-out perplexity {ppl:.1f}")
            losses = []
            curve.append((step, round(ppl, 3)))
    train_s = time.perf_counter() - train_started
    ppl_final = heldout_perplexity(model, tokenizer, heldout_docs, config.seq_len)
    model.save_pretrained(out)
    torch.set_num_threads(threads)
    info = {
        "kind": "tiny-pretrained",
        "fingerprint": fingerprint,
        "config": asdict(config),
        "corpus": corpus.summary(),
        "steps": step,
        "heldout_perplexity_curve": curve,
        "heldout_perplexity_best": min(p for _, p in curve),
        "epochs": epoch,
        "train_seconds": round(train_s, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "stopped_by": "max_steps" if step >= config.max_steps else "max_seconds",
        "heldout_docs": len(heldout_docs),
        "heldout_perplexity": round(ppl_final, 3),
        "heldout_perplexity_random_init": round(ppl_init, 3),
        "parameters": int(sum(p.numel() for p in model.parameters())),
    }
    (out / "bias_ray_model.json").write_text(json.dumps(info, indent=2))
    return out
