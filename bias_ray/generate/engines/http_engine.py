"""The http engine: any OpenAI-compatible ``/v1/completions`` endpoint (``/v1/chat/completions`` with chat).

Default client: Ray Data LLM's documented ``HttpRequestProcessorConfig`` + ``build_processor``
(needs ``aiohttp``); it retries 429/5xx/timeouts but fails the batch once retries run out, and
the job then resumes from its committed shards on rerun. ``http_client: httpx`` is a plain
``map_batches`` client that retries per row and quarantines a row that still fails, so the
job goes on. With ``generation.chat`` each prompt is sent as chat messages (generate/chat.py) to
the chat-completions route, and the server applies the model's chat template. The API key comes
only from the environment variable named by ``generation.api_key_env``; it is sent as a header
and never logged or written.
"""

from __future__ import annotations

import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bias_ray.generate.chat import chat_messages
from bias_ray.generate.engines.base import sample_seed
from bias_ray.registry import ENGINES

RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}


def completions_url(endpoint: str, chat: bool = False) -> str:
    """``http://host:8000/v1`` -> ``.../v1/completions`` (``.../v1/chat/completions`` with chat); a full URL is kept."""
    endpoint = endpoint.rstrip("/")
    if endpoint.endswith("/completions"):
        return endpoint
    return endpoint + ("/chat/completions" if chat else "/completions")


class HttpParams(BaseModel):
    """The http engine's settings (``generation.options``, or the top of ``generation`` as before)."""

    model_config = ConfigDict(extra="forbid")
    endpoint: str | None = Field(default=None, description="OpenAI-compatible base URL, e.g. http://host:8000/v1.")
    api_key_env: str | None = Field(default=None, description="Env var holding the endpoint's API key.")
    http_client: Literal["ray_llm", "httpx"] = "ray_llm"
    max_retries: int = Field(default=3, ge=0)
    request_timeout_s: float = Field(default=60.0, gt=0)
    qps: float | None = Field(default=None, gt=0, description="ray_llm: requests per second at most.")
    parallel_requests: int = Field(default=8, gt=0, description="httpx: requests in flight per actor.")

    @field_validator("api_key_env")
    @classmethod
    def _names_a_variable(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):
            raise ValueError(f"api_key_env must name an environment variable (got {v!r}), not hold the key itself")
        return v


def api_key(spec) -> str | None:
    """The key from the env var the spec names; an unset variable is an error naming it (not a value)."""
    name = spec.generation.settings.api_key_env
    if not name:
        return None
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"generation.api_key_env names {name!r} but that environment variable is unset or empty; "
                           f"export {name}=... before running (the key is never read from the spec)")
    return value


def payload_settings(spec) -> dict[str, Any]:
    g = spec.generation
    return {"model": str(spec.models.generator), "max_tokens": g.max_new_tokens, "temperature": g.temperature,
            "top_p": g.top_p}


def make_payload(prompt: str, sample_id: str, settings: dict[str, Any], chat: bool = False,
                 system_prompt: str | None = None) -> dict[str, Any]:
    """One (chat) completions request; the per-sample seed makes a sampled reply reproducible where honoured."""
    if chat:
        return {**settings, "messages": chat_messages(prompt, system_prompt), "seed": sample_seed(sample_id)}
    return {**settings, "prompt": str(prompt), "seed": sample_seed(sample_id)}


def parse_completion(response: Any) -> tuple[str, int, str]:
    """``(text, generated tokens, error)`` from a completions or chat reply; error is "" when well formed."""
    try:
        choice = response["choices"][0]
        text = choice["message"]["content"] if "message" in choice else choice["text"]
        if not isinstance(text, str):
            raise TypeError(f"choices[0] text is {type(text).__name__}")
    except (KeyError, IndexError, TypeError) as err:
        shown = str(response)[:200]
        return "", 0, f"malformed response ({type(err).__name__}: {err}): {shown}"
    usage = response.get("usage") or {}
    tokens = usage.get("completion_tokens")
    return text, int(tokens) if isinstance(tokens, int) else len(text.split()), ""


class _Preprocess:
    def __init__(self, settings: dict[str, Any], chat: bool = False, system_prompt: str | None = None) -> None:
        self.settings, self.chat, self.system_prompt = settings, chat, system_prompt

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        return {"payload": make_payload(row["prompt"], row["sample_id"], self.settings, self.chat, self.system_prompt)}


def _postprocess(row: dict[str, Any]) -> dict[str, Any]:
    text, tokens, error = parse_completion(row.get("http_response"))
    out = {k: v for k, v in row.items() if k not in ("payload", "http_response")}
    out.update(generated_text=text, generated_tokens=tokens, engine_error=error, engine_s=0.0, device="http")
    return out


class HttpxCompletionClient:
    """``map_batches`` callable: a batch's requests run in parallel threads, each retried with backoff."""

    def __init__(self, url: str, headers: dict[str, str], settings: dict[str, Any], max_retries: int,
                 timeout_s: float, parallel: int, chat: bool = False, system_prompt: str | None = None) -> None:
        import httpx

        self._client = httpx.Client(timeout=timeout_s, headers=headers)
        self._pool = ThreadPoolExecutor(max_workers=parallel)
        self.url, self.settings, self.max_retries = url, settings, max_retries
        self.chat, self.system_prompt = chat, system_prompt

    def __repr__(self) -> str:  # never show the headers (they hold the key)
        return f"HttpxCompletionClient({self.url})"

    def _one(self, prompt: str, sample_id: str) -> tuple[str, int, str, float]:
        import httpx

        started, error = time.perf_counter(), ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(min(8.0, 0.25 * 2 ** (attempt - 1)))
            try:
                resp = self._client.post(self.url, json=make_payload(prompt, sample_id, self.settings, self.chat,
                                                                     self.system_prompt))
            except httpx.HTTPError as err:
                error = f"engine error: {type(err).__name__}: {err}"
                continue
            if resp.status_code in RETRYABLE_STATUS:
                error = f"engine error: HTTP {resp.status_code}"
                continue
            if resp.status_code != 200:
                return "", 0, f"engine error: HTTP {resp.status_code}: {resp.text[:200]}", time.perf_counter() - started
            try:
                body = resp.json()
            except ValueError:
                return "", 0, f"malformed response (not JSON): {resp.text[:200]}", time.perf_counter() - started
            text, tokens, error = parse_completion(body)
            return text, tokens, error, time.perf_counter() - started
        return "", 0, f"{error} after {self.max_retries} retries", time.perf_counter() - started

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = list(self._pool.map(self._one, [str(p) for p in batch["prompt"]],
                                      [str(s) for s in batch["sample_id"]]))
        batch["generated_text"] = np.array([r[0] for r in results], dtype=object)
        batch["generated_tokens"] = np.array([r[1] for r in results], dtype=np.int64)
        batch["engine_error"] = np.array([r[2] for r in results], dtype=object)
        batch["engine_s"] = np.array([r[3] for r in results], dtype=np.float64)
        batch["device"] = np.array(["http"] * len(results), dtype=object)
        return batch


def ray_llm_config(spec, key: str | None):
    """The documented ``ray.data.llm.HttpRequestProcessorConfig`` for a spec."""
    try:
        from ray.data.llm import HttpRequestProcessorConfig
    except ImportError as err:
        raise ImportError(f"generation.http_client ray_llm needs Ray Data LLM's HTTP stage ({err}); "
                          "`pip install aiohttp`, or set generation.http_client: httpx") from None
    g, own = spec.generation, spec.generation.settings
    return HttpRequestProcessorConfig(
        url=completions_url(own.endpoint, g.chat), headers={"Authorization": f"Bearer {key}"} if key else {},
        concurrency=g.concurrency or 1, batch_size=g.batch_size, max_retries=own.max_retries,
        qps=own.qps,
    )


@ENGINES.register("http")
class HttpEngine:
    """Completions from an OpenAI-compatible server, through Ray Data LLM or the httpx client."""

    serves_model_by_name = True  # models.generator is the served model's name, not local weights
    Params = HttpParams

    @staticmethod
    def check_settings(generation) -> str | None:
        """What the spec's generation section lacks for this engine (None: nothing)."""
        if not generation.settings.endpoint:
            return ("engine http needs generation.endpoint, the base URL of an OpenAI-compatible server "
                    "(e.g. http://127.0.0.1:8000/v1)")
        return None

    def apply(self, ds, spec):
        g, own = spec.generation, spec.generation.settings
        key = api_key(spec)
        settings = payload_settings(spec)
        if own.http_client == "ray_llm":
            from ray.data.llm import build_processor

            processor = build_processor(ray_llm_config(spec, key),
                                        preprocess=_Preprocess(settings, g.chat, g.system_prompt),
                                        postprocess=_postprocess)
            return processor(ds)
        from ray.data import ActorPoolStrategy

        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return ds.map_batches(
            HttpxCompletionClient,
            fn_constructor_kwargs={"url": completions_url(own.endpoint, g.chat), "headers": headers,
                                   "settings": settings, "max_retries": own.max_retries,
                                   "timeout_s": own.request_timeout_s, "parallel": own.parallel_requests,
                                   "chat": g.chat,
                                   "system_prompt": g.system_prompt},
            batch_size=g.batch_size,
            compute=ActorPoolStrategy(size=g.concurrency or 1),
            num_cpus=0.5,
        )
