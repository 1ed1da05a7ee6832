"""Build a tiny causal LM and a BPE tokenizer trained locally, saved with ``save_pretrained``.

Tests and the quickstart use this model, which needs no model hub; everything downstream loads
it with the real ``from_pretrained(path)`` code that a user's model (a folder or a hub id) goes
through too.
"""

from __future__ import annotations

import json
from pathlib import Path

from bias_ray.data.loaders import load_crows_pairs, load_toxigen

SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}


def _corpus(data_root: Path) -> list[str]:
    texts: list[str] = load_toxigen(data_root)["text"].tolist()
    try:
        crows = load_crows_pairs(data_root)
        texts += crows["text"].tolist() + crows["text_anti"].tolist()
    except FileNotFoundError:
        pass
    return texts


def build_tiny_model(
    out_dir: str | Path,
    data_root: str | Path,
    vocab_size: int = 2000,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    max_positions: int = 256,
    seed: int = 0,
) -> Path:
    """Train a byte-level BPE tokenizer on the real data and save a randomly initialised Llama."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(Path(data_root)), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=max_positions, **SPECIAL_TOKENS)
    tokenizer.padding_side = "left"  # decoder-only generation pads on the left
    tokenizer.save_pretrained(out)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    (out / "bias_ray_model.json").write_text(json.dumps({"kind": "tiny", "seed": seed}))
    return out


def ensure_model(path: str | Path, data_root: str | Path, build_if_missing: bool) -> Path:
    """The folder of a model reference before a run: a hub id is resolved (its config, from the cache or
    the hub: see models/hub.py); a folder is returned if it holds a model, else the tiny model is built
    there when allowed."""
    from bias_ray.models.hub import check_hub_access, source_kind

    if source_kind(str(path), build_if_missing) == "hub":
        return check_hub_access(str(path))
    path = Path(path).expanduser()
    if (path / "config.json").exists():
        return path
    if not build_if_missing:
        raise FileNotFoundError(
            f"no model at {path}: give a folder saved with save_pretrained, or run `bias-ray models tiny {path}`"
        )
    return build_tiny_model(path, data_root)



# A minimal chat format (role tags, one turn per line) for trying chat generation on the tiny model.
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def add_chat_template(folder: str | Path, template: str = TINY_CHAT_TEMPLATE) -> Path:
    """Give the tokenizer saved in ``folder`` a chat template (as an instruction-tuned model has)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = template
    tokenizer.save_pretrained(folder)
    return Path(folder)
