"""Build a tiny causal LM and a BPE tokenizer trained locally, saved with ``save_pretrained``.

Tests and the quickstart use this model, which needs no model hub; everything downstream loads
it with the real ``from_pretrained(path)`` code that a user's model (a folder or a hub id) goes
through too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bias_ray.models.corpus import Corpus

SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}


def _tokenizer_texts(corpus: Corpus) -> list[str]:
    """The pretraining corpus's train lines (no evaluation item) and the list headers the prompts use."""
    train = corpus.train
    groups = sorted(train["group"].unique())
    headers = [f"The following are statements about {str(g).replace('_', ' ')}:" for g in groups]
    return train["text"].tolist() + headers


def build_tiny_model(
    out_dir: str | Path,
    data_root: str | Path,
    vocab_size: int = 2000,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    max_positions: int = 256,
    seed: int = 0,
    corpus: Corpus | None = None,
    test_fraction: float = 0.3,
) -> Path:
    """Train a byte-level BPE tokenizer on the pretraining corpus and save a randomly initialised Llama.

    The tokenizer sees only :func:`bias_ray.models.corpus.build_corpus` text (no evaluation item);
    :func:`bias_ray.models.pretrain.pretrain_tiny_model` then trains the weights.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from bias_ray.models.corpus import build_corpus

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
    corpus = corpus or build_corpus(data_root, test_fraction)
    tok.train_from_iterator(_tokenizer_texts(corpus), trainer=trainer)
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
    (out / "bias_ray_model.json").write_text(json.dumps({"kind": "tiny", "seed": seed,
                                                         "corpus": corpus.summary()}))
    return out


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
