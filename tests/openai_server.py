"""A tiny OpenAI-compatible completions (and chat-completions) server for tests: FastAPI + uvicorn on 127.0.0.1 only.

It serves a local model with transformers, checks the bearer key when one is set, and can
answer every n-th request (by the request's seed) with a malformed body so tests can see
quarantine at work.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path


def make_app(model_path: Path, api_key: str | None = None, malformed_every: int = 0):
    import torch
    from fastapi import FastAPI, Header, HTTPException
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_path).eval()
    lock = threading.Lock()
    app = FastAPI()
    app.state.requests = 0
    app.state.auth_headers = set()

    @app.post("/v1/completions")
    def completions(body: dict, authorization: str | None = Header(default=None)) -> dict:
        app.state.requests += 1
        app.state.auth_headers.add(authorization)
        if api_key is not None and authorization != f"Bearer {api_key}":
            raise HTTPException(status_code=401, detail="bad api key")
        seed = int(body.get("seed", 0))
        if malformed_every and seed % malformed_every == 0:
            return {"id": "cmpl-broken", "object": "text_completion", "choices": []}
        enc = tokenizer([body["prompt"]], return_tensors="pt", truncation=True, max_length=192)
        temperature = float(body.get("temperature", 1.0))
        with lock, torch.inference_mode():
            torch.manual_seed(seed)
            out = model.generate(**enc, max_new_tokens=int(body.get("max_tokens", 16)), do_sample=temperature > 0,
                                 temperature=temperature if temperature > 0 else None,
                                 top_p=float(body.get("top_p", 1.0)) if temperature > 0 else None,
                                 pad_token_id=tokenizer.pad_token_id)
        new = out[0, enc["input_ids"].shape[1]:]
        return {"id": "cmpl-test", "object": "text_completion", "model": body.get("model"),
                "choices": [{"index": 0, "text": tokenizer.decode(new, skip_special_tokens=True),
                             "finish_reason": "length"}],
                "usage": {"prompt_tokens": int(enc["input_ids"].shape[1]), "completion_tokens": int(len(new))}}

    @app.post("/v1/chat/completions")
    def chat_completions(body: dict, authorization: str | None = Header(default=None)) -> dict:
        """The chat route: the messages rendered by the tokenizer's chat template, then as a completion."""
        app.state.chat_requests = getattr(app.state, "chat_requests", 0) + 1
        if not tokenizer.chat_template:
            raise HTTPException(status_code=400, detail="this model has no chat template")
        prompt = tokenizer.apply_chat_template(body["messages"], tokenize=False, add_generation_prompt=True)
        app.state.last_chat_prompt = prompt
        reply = completions({**body, "prompt": prompt}, authorization)
        choices = [{"index": 0, "message": {"role": "assistant", "content": c["text"]}, "finish_reason": "length"}
                   for c in reply["choices"]]
        return {**reply, "object": "chat.completion", "choices": choices}

    return app


@contextlib.contextmanager
def serve(model_path: Path, api_key: str | None = None, malformed_every: int = 0) -> Iterator[tuple[str, object]]:
    """Run the server in a thread; yields (base URL ``http://127.0.0.1:PORT/v1``, the app)."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = make_app(model_path, api_key, malformed_every)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("the test completions server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/v1", app
    finally:
        server.should_exit = True
        thread.join(timeout=10)
