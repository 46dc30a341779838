"""An OpenAI-compatible HTTP server for a ``TransformersPlanner`` (``visforge serve planner``).

Routes: ``GET /v1/models``, ``POST /v1/completions`` (raw prompt) and ``POST /v1/chat/completions``.
For chat requests the model's own chat template is applied when its tokenizer has one; a model
without one (the embedded default planner) completes the last user message as raw text. Each
request may ask for ``n`` samples with ``temperature``/``top_p``; ``max_tokens`` caps the length.
Generation is serialised by the planner's lock, so one process serves one request at a time.

Run: ``python -m builder.planner.server --model PATH --port 8000`` or ``serve(model_path, host, port)``.
"""

from __future__ import annotations

import argparse
import time
import uuid
from typing import Any

MAX_N = 64


def create_app(planner, model_name: str = "visforge-planner"):
    """A FastAPI app serving ``planner`` (a ``TransformersPlanner``)."""
    from fastapi import FastAPI, HTTPException
    from fastapi.concurrency import run_in_threadpool

    app = FastAPI(title="VisForge planner", version="1")

    def _params(body: dict[str, Any]) -> tuple[int, float, float, int | None]:
        try:
            n = int(body.get("n", 1) or 1)
            temperature = float(body.get("temperature", 1.0) if body.get("temperature") is not None else 1.0)
            top_p = float(body.get("top_p", 1.0) if body.get("top_p") is not None else 1.0)
            max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
            max_tokens = int(max_tokens) if max_tokens is not None else None
        except (TypeError, ValueError) as e:
            raise HTTPException(400, f"bad sampling parameter: {e}") from None
        if not 1 <= n <= MAX_N:
            raise HTTPException(400, f"n must be between 1 and {MAX_N}")
        if temperature < 0 or not 0 < top_p <= 1:
            raise HTTPException(400, "temperature must be >= 0 and top_p in (0, 1]")
        if max_tokens is not None and not 1 <= max_tokens <= 4096:
            raise HTTPException(400, "max_tokens must be between 1 and 4096")
        return n, temperature, top_p, max_tokens

    def _stop(texts: list[str], stop) -> list[str]:
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        out = []
        for t in texts:
            cut = min([t.find(s) for s in stops if s and s in t] or [len(t)])
            out.append(t[:cut])
        return out

    async def _generate(text: str, body: dict, raw: bool) -> list[str]:
        n, temperature, top_p, max_tokens = _params(body)
        # ``raw``: the text is final (a chat template was applied here, or none exists).
        fn = planner.complete_raw if raw else planner.complete
        texts = await run_in_threadpool(fn, [text], n, temperature, top_p, max_tokens)
        return _stop(texts[0], body.get("stop"))

    def _envelope(kind: str, choices: list[dict]) -> dict:
        return {"id": f"{kind}-{uuid.uuid4().hex[:16]}", "object": kind, "created": int(time.time()),
                "model": model_name, "choices": choices,
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "visforge"}]}

    @app.get("/health")
    def health():
        return {"ok": True}

    @app.post("/v1/completions")
    async def completions(body: dict[str, Any]):
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise HTTPException(400, "prompt must be a string")
        texts = await _generate(prompt, body, raw=True)
        return _envelope("text_completion",
                         [{"index": i, "text": t, "finish_reason": "stop", "logprobs": None} for i, t in enumerate(texts)])

    @app.post("/v1/chat/completions")
    async def chat(body: dict[str, Any]):
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role") for m in messages):
            raise HTTPException(400, "messages must be a non-empty list of {role, content} objects")
        tok = planner.tokenizer
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        else:
            users = [m["content"] for m in messages if m["role"] == "user"]
            if not users:
                raise HTTPException(400, "a model without a chat template needs a user message to complete")
            text = users[-1]
        texts = await _generate(text, body, raw=True)
        return _envelope("chat.completion", [
            {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
            for i, t in enumerate(texts)])

    return app


def serve(model_path: str | None = None, host: str = "127.0.0.1", port: int = 8000,
          model_name: str = "visforge-planner") -> None:
    """Serve the planner at ``model_path`` (the embedded default when None) until interrupted."""
    import uvicorn

    from builder.planner.default import load_default_planner

    planner = load_default_planner(model_path)
    uvicorn.run(create_app(planner, model_name), host=host, port=port, log_level="warning")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="OpenAI-compatible server for a VisForge planner.")
    ap.add_argument("--model", default=None, help="planner folder (default: the embedded default planner)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--name", default="visforge-planner")
    a = ap.parse_args(argv)
    serve(a.model, a.host, a.port, a.name)


if __name__ == "__main__":
    main()
