"""Chat prompts for instruction-tuned generators (``generation.chat``).

With chat on, a row's ``prompt`` is the *user turn*: the template's header, the few-shot seed
statements as a list, then the template's ``chat.instruction`` (e.g. "write one more"). The
messages are ``[system (generation.system_prompt, optional), user]`` and the model's chat
template adds the assistant's turn, whose reply continues the list. Each engine sends the same
messages its own way: the transformers engine renders them with ``tokenizer.apply_chat_template``,
vLLM with Ray Data LLM's chat-template stage, the http engine through ``/chat/completions``.
"""

from __future__ import annotations

from typing import Any


class ChatTemplateMissing(ValueError):
    """The generator's tokenizer has no chat template but ``generation.chat`` is on."""


def chat_messages(user_turn: str, system_prompt: str | None = None) -> list[dict[str, str]]:
    """The OpenAI-style messages of one prompt."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*messages, {"role": "user", "content": str(user_turn)}]


def require_chat_template(tokenizer: Any, model: str) -> None:
    """Fail with the fix when ``tokenizer`` cannot render a chat."""
    if not getattr(tokenizer, "chat_template", None):
        raise ChatTemplateMissing(
            f"generation.chat is on but the tokenizer of {model} has no chat template; use an instruction-tuned "
            "model (its tokenizer_config.json or chat_template.jinja holds one), set tokenizer.chat_template and "
            "save_pretrained, or set generation.chat: false for plain few-shot continuation"
        )


def render_chat(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The text the model reads: the messages in its chat format, ending where the assistant's reply starts."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def check_generator_chat_template(model: str) -> None:
    """On the driver, before any work: the generator's tokenizer has a chat template.

    Loads only the tokenizer, from local files (a folder or the hub cache); when it is not here
    (a hub id that only the GPU nodes will download) the engine's own stage checks it there.
    """
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model, local_files_only=True)
    except (OSError, ValueError):
        return
    require_chat_template(tokenizer, model)
