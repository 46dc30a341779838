"""An OpenAI-compatible HTTP server for a causal-LM planner (``visforge serve planner``).

Routes: ``GET /health``, ``GET /v1/models``, ``GET /v1/models/{id}``, ``POST /v1/completions`` (a raw
prompt) and ``POST /v1/chat/completions``. For chat requests the model's own chat template is
applied when its tokenizer has one; a model without one (the embedded causal-LM planner)
completes the last user message as raw text.

What a client can rely on (``tests/test_planner_server.py`` checks each with the official
``openai`` client against a real process):

- **Errors** are OpenAI-shaped: ``{"error": {"message", "type", "param", "code"}}``. 400 for a bad
  request (every parameter is type- and range-checked, never coerced: ``n`` an integer in
  1..64, ``max_tokens`` an integer >= 1, ``temperature`` a finite number in [0, 2], ``top_p`` in
  (0, 1], ``stop`` a string or a list of at most 4 strings, ``stream`` a boolean; unknown fields
  are refused), 404 for an unknown model or route, 405 for a wrong method, 413 for a body over
  ``max_body_bytes``, 503 with ``Retry-After`` when the generation queue is full or the server is
  shutting down.
- **Length caps**: a prompt over ``max_prompt_chars`` characters is refused before it is
  tokenized (the byte-level BPE tokenizer is super-linear on long unbroken text), then one whose
  tokens plus ``max_tokens`` exceed the model's context (``max_position_embeddings``) is refused
  with code ``context_length_exceeded``.
- **Concurrency**: tokenizing and generating run in a bounded worker pool off the event loop
  (``workers`` threads, at most ``max_queue`` requests waiting), so ``/health`` and ``/v1/models``
  answer at once whatever the load.
- **Streaming** (``stream: true``) answers in server-sent events, OpenAI's chunk format, ending
  with ``data: [DONE]``; ``stream_options.include_usage`` adds a usage chunk. The completion is
  generated first and then streamed piece by piece (one model call serves all ``n`` samples).
- **Usage** counts are real: prompt tokens and generated tokens per choice (up to the end token).
- **Shutdown**: SIGTERM or SIGINT stops generation at the next token, refuses what is queued
  (503) and exits within about a second.

Run: ``visforge serve planner --model PATH --port 8000`` or ``serve(model_path, host, port)``.
"""


import asyncio
import json
import math
import os
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

MAX_N = 64
MAX_STOP = 4
MAX_TOKENS_CAP = 4096


@dataclass(frozen=True)
class ServerLimits:
    """What one request may ask for, and how much work may wait."""

    max_prompt_chars: int | None = None  # None: derived from the model's context (see ``Engine``)
    max_body_bytes: int = 4 * 1024 * 1024
    workers: int = 1
    max_queue: int = 8
    retry_after_s: int = 1


class ApiError(Exception):
    """A request the server answers with an OpenAI-shaped error body."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        """The OpenAI-shaped error body: ``{"error": {message, type, param, code}}``."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# ---- parameters ------------------------------------------------------------------------------
_COMMON = {"model", "n", "temperature", "top_p", "max_tokens", "stop", "stream", "stream_options", "seed", "user",
           "presence_penalty", "frequency_penalty", "logit_bias", "logprobs"}
_COMPLETION_KEYS = _COMMON | {"prompt", "echo", "best_of", "suffix"}
_CHAT_KEYS = _COMMON | {"messages", "max_completion_tokens", "top_logprobs", "response_format", "metadata", "store"}
_ROLES = {"system", "developer", "user", "assistant"}


def _type_name(v: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object",
            type(None): "null"}.get(type(v), type(v).__name__)


def _bad(param: str, message: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, f"{param}: {message}", param=param, code=code)


def _integer(body: dict, key: str, lo: int, hi: int, default: int | None) -> int | None:
    v = body.get(key)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(key, f"must be an integer, got {_type_name(v)} {json.dumps(v)[:40]}", "invalid_type")
    if not lo <= v <= hi:
        raise _bad(key, f"must be between {lo} and {hi}, got {v}")
    return v


def _number(body: dict, key: str, lo: float, hi: float, default: float, lo_open: bool = False) -> float:
    v = body.get(key)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _bad(key, f"must be a number, got {_type_name(v)} {json.dumps(v)[:40]}", "invalid_type")
    if not math.isfinite(v):
        raise _bad(key, f"must be a finite number, got {v}")
    if v > hi or v < lo or (lo_open and v == lo):
        raise _bad(key, f"must be in {'(' if lo_open else '['}{lo:g}, {hi:g}], got {v:g}")
    return float(v)


def _unsupported(body: dict, key: str, allowed: tuple) -> None:
    if key in body and body[key] not in allowed:
        raise _bad(key, f"this server supports only {' or '.join(json.dumps(a) for a in allowed)}", "unsupported_value")


@dataclass
class Params:
    """A request's sampling parameters after ``parse_params`` checked them."""

    n: int
    temperature: float
    top_p: float
    max_tokens: int | None
    stop: list[str]
    stream: bool
    include_usage: bool
    seed: int | None


def parse_params(body: dict, keys: set[str]) -> Params:
    """Every sampling parameter checked for type and range; nothing is coerced.

    Raises ApiError (400) for the first unknown, malformed or unsupported parameter.
    """
    unknown = sorted(set(body) - keys)
    if unknown:
        raise ApiError(400, f"Unrecognized request argument supplied: {', '.join(unknown)}", param=unknown[0],
                       code="unknown_parameter")
    n = _integer(body, "n", 1, MAX_N, 1)
    temperature = _number(body, "temperature", 0.0, 2.0, 1.0)
    top_p = _number(body, "top_p", 0.0, 1.0, 1.0, lo_open=True)
    max_tokens = _param_max_tokens(body)
    stops = _param_stops(body)
    stream, include_usage = _param_stream(body)
    seed = _integer(body, "seed", -(2 ** 63), 2 ** 63 - 1, None)
    _check_neutral_params(body, n)
    return Params(n, temperature, top_p, max_tokens, stops, stream, include_usage, seed)


def _param_max_tokens(body: dict) -> int | None:
    """``max_tokens`` or its chat alias ``max_completion_tokens`` (not both)."""
    max_tokens = _integer(body, "max_tokens", 1, MAX_TOKENS_CAP, None)
    if "max_completion_tokens" in body:
        if max_tokens is not None and body["max_completion_tokens"] is not None:
            raise _bad("max_completion_tokens", "give max_tokens or max_completion_tokens, not both")
        max_tokens = _integer(body, "max_completion_tokens", 1, MAX_TOKENS_CAP, max_tokens)
    return max_tokens


def _param_stops(body: dict) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        stops: list[str] = []
    elif isinstance(stop, str):
        stops = [stop]
    elif isinstance(stop, list) and len(stop) <= MAX_STOP and all(isinstance(s, str) for s in stop):
        stops = list(stop)
    else:
        raise _bad("stop", f"must be a string or a list of at most {MAX_STOP} strings, got "
                           f"{_type_name(stop)} {json.dumps(stop)[:40]}", "invalid_type")
    if any(not s for s in stops):
        raise _bad("stop", "stop strings must not be empty")
    return stops


def _param_stream(body: dict) -> tuple[bool, bool]:
    """``stream`` and the ``include_usage`` of ``stream_options`` (which needs stream)."""
    stream = body.get("stream")
    if stream is None:
        stream = False
    elif not isinstance(stream, bool):
        raise _bad("stream", f"must be a boolean, got {_type_name(stream)}", "invalid_type")
    opts = body.get("stream_options")
    include_usage = False
    if opts is not None:
        if not isinstance(opts, dict) or set(opts) - {"include_usage"} or not isinstance(
                opts.get("include_usage", False), bool):
            raise _bad("stream_options", 'must be an object {"include_usage": <boolean>}', "invalid_type")
        if not stream:
            raise _bad("stream_options", "is only allowed when stream is true")
        include_usage = bool(opts.get("include_usage", False))
    return stream, include_usage


def _check_neutral_params(body: dict, n: int) -> None:
    """OpenAI parameters this server accepts only at their neutral value (so a client is not misled)."""
    if "user" in body and not isinstance(body["user"], str | None):
        raise _bad("user", "must be a string", "invalid_type")
    for key in ("presence_penalty", "frequency_penalty"):
        if _number(body, key, -2.0, 2.0, 0.0) != 0.0:
            raise _bad(key, "only 0 is supported by this server", "unsupported_value")
    if body.get("logit_bias") not in (None, {}):
        raise _bad("logit_bias", "is not supported by this server", "unsupported_value")
    _unsupported(body, "logprobs", (None, False, 0))
    _unsupported(body, "echo", (None, False))
    _unsupported(body, "suffix", (None, ""))
    _unsupported(body, "top_logprobs", (None, 0))
    _unsupported(body, "store", (None, False))
    if "best_of" in body and body["best_of"] is not None and _integer(body, "best_of", 1, MAX_N, None) != n:
        raise _bad("best_of", "only best_of equal to n is supported", "unsupported_value")
    if body.get("response_format") not in (None, {"type": "text"}):
        raise _bad("response_format", 'only {"type": "text"} is supported', "unsupported_value")
    if body.get("metadata") is not None and not isinstance(body["metadata"], dict):
        raise _bad("metadata", "must be an object", "invalid_type")


def chat_messages(messages: Any) -> list[dict[str, str]]:
    """The text the model completes for a chat request (its chat template, or the last user turn)."""
    if not isinstance(messages, list) or not messages:
        raise _bad("messages", "must be a non-empty array of {role, content} objects", "invalid_type")
    plain = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            raise _bad(f"messages[{i}]", f"must be an object with a role in {sorted(_ROLES)}", "invalid_type")
        content = m.get("content")
        if isinstance(content, list):  # content parts: text only
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise _bad(f"messages[{i}].content", "only text content parts are supported", "unsupported_value")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise _bad(f"messages[{i}].content", f"must be a string, got {_type_name(content)}", "invalid_type")
        plain.append({"role": "system" if m["role"] == "developer" else m["role"], "content": content})
    return plain


# ---- the engine ------------------------------------------------------------------------------
class Engine:
    """Tokenizes and generates with a ``TransformersPlanner``'s model in a bounded worker pool."""

    def __init__(self, planner, limits: ServerLimits | None = None):
        self.planner = planner
        self.limits = limits or ServerLimits()
        self.tokenizer = planner.tokenizer
        cfg = planner.model.config
        self.n_ctx = int(getattr(cfg, "max_position_embeddings", None) or 2048)
        # Checked before tokenizing: the byte-level BPE is super-linear on unbroken text (the
        # committed planner: 512 characters of one letter 0.4 s, 1,024 characters 2.6 s). Two
        # characters per context position leaves room for the prompts the planner is trained on
        # (about 2.3 characters per token) and bounds the worst tokenization to a fraction of a second.
        self.max_prompt_chars = self.limits.max_prompt_chars or min(2 * self.n_ctx, 32_768)
        self.pool = ThreadPoolExecutor(max_workers=max(1, self.limits.workers), thread_name_prefix="planner-gen")
        self.capacity = max(1, self.limits.workers) + max(0, self.limits.max_queue)
        self._count = 0
        self._count_lock = threading.Lock()
        self.stopping = threading.Event()
        self._gen_lock = getattr(planner, "_lock", None) or threading.Lock()

    # -- admission
    def submit(self, fn, *args):
        """Run ``fn`` in the pool, or 503 when ``capacity`` requests are already running or waiting."""
        if self.stopping.is_set():
            raise self._shutting_down()
        with self._count_lock:
            if self._count >= self.capacity:
                raise ApiError(503, f"the server is busy ({self._count} requests running or queued); retry shortly",
                               type="server_error", code="overloaded",
                               headers={"Retry-After": str(self.limits.retry_after_s)})
            self._count += 1
        try:
            fut = self.pool.submit(fn, *args)
        except RuntimeError:  # the pool was shut down
            with self._count_lock:
                self._count -= 1
            raise self._shutting_down() from None
        fut.add_done_callback(self._done)
        return asyncio.wrap_future(fut)

    def _done(self, _fut) -> None:
        with self._count_lock:
            self._count -= 1

    @staticmethod
    def _shutting_down() -> ApiError:
        return ApiError(503, "the server is shutting down", type="server_error", code="shutting_down",
                        headers={"Retry-After": "5"})

    def shutdown(self) -> None:
        """Stop generation at the next token and drop what is queued."""
        self.stopping.set()
        self.pool.shutdown(wait=False, cancel_futures=True)

    # -- work (in a pool thread)
    def check_chars(self, text: str, param: str) -> None:
        """Refuse a prompt over ``max_prompt_chars`` (400, context_length_exceeded) before it is
        tokenized: tokenizing unbroken text is super-linear.
        """
        if len(text) > self.max_prompt_chars:
            raise ApiError(400, f"{param}: {len(text)} characters is over this server's limit of "
                                f"{self.max_prompt_chars} (the model's context is {self.n_ctx} tokens)",
                           param=param, code="context_length_exceeded")

    def generate(self, text: str, p: Params, param: str) -> tuple[int, list[tuple[str, int, str]]]:
        """``(prompt tokens, [(text, completion tokens, finish reason)] * n)``."""
        import torch

        if self.stopping.is_set():
            raise self._shutting_down()
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        n_prompt = len(ids)
        room = self.n_ctx - n_prompt
        if n_prompt == 0:
            raise _bad(param, "the prompt is empty after tokenization")
        if room < 1 or (p.max_tokens is not None and p.max_tokens > room):
            raise ApiError(400, f"This model's maximum context length is {self.n_ctx} tokens. However, you requested "
                                f"{n_prompt + (p.max_tokens or 1)} tokens ({n_prompt} in the prompt, "
                                f"{p.max_tokens or 1} for the completion). Please reduce the prompt or max_tokens.",
                           param=param if room < 1 else "max_tokens", code="context_length_exceeded")
        budget = p.max_tokens if p.max_tokens is not None else min(self.planner.max_new_tokens, room)
        sample = p.temperature > 0
        tok = self.tokenizer
        eos, pad = tok.eos_token_id, tok.pad_token_id
        stopping = self.stopping

        from transformers import StoppingCriteria, StoppingCriteriaList

        class _OnShutdown(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), stopping.is_set(), dtype=torch.bool)

        kwargs = {"max_new_tokens": budget, "do_sample": sample, "pad_token_id": pad, "eos_token_id": eos,
                  "stopping_criteria": StoppingCriteriaList([_OnShutdown()])}
        if sample:
            kwargs.update(temperature=p.temperature, top_p=p.top_p, top_k=0, num_return_sequences=p.n)
        input_ids = torch.tensor([ids], dtype=torch.long)
        with self._gen_lock, torch.no_grad():
            if p.seed is not None:
                torch.manual_seed(p.seed)
            elif getattr(self.planner, "seed", None) is not None:
                torch.manual_seed(self.planner.seed)
            gen = self.planner.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **kwargs)
        if stopping.is_set():
            raise self._shutting_down()
        out = []
        ends = {t for t in (eos, pad) if t is not None}
        for row in gen[:, n_prompt:].tolist():
            count = next((i for i, t in enumerate(row) if t in ends), None)
            finish = "stop" if count is not None else "length"
            count = len(row) if count is None else count
            text_out = tok.decode(row[:count], skip_special_tokens=True)
            cut = min([text_out.find(s) for s in p.stop if s in text_out] or [-1])
            if cut >= 0:
                text_out, finish = text_out[:cut], "stop"
            out.append((text_out, count, finish))
        if not sample:
            out = out[:1] * p.n
        return n_prompt, out


# ---- the app ---------------------------------------------------------------------------------
def create_app(planner, model_name: str = "visforge-planner", limits: ServerLimits | None = None, engine=None):
    """A FastAPI app serving ``planner`` (a ``TransformersPlanner``); ``app.state.engine`` does the work."""
    from fastapi import FastAPI

    engine = engine or Engine(planner, limits)
    app = FastAPI(title="VisForge planner", version="1")
    app.state.engine = engine
    _add_error_handlers(app)
    _add_model_routes(app, engine, model_name, created=int(time.time()))
    _add_completion_routes(app, engine, model_name)
    return app


def _error_response(err: ApiError):
    from fastapi.responses import JSONResponse

    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


def _add_error_handlers(app) -> None:
    """Every error, ours or the framework's, as an OpenAI-style JSON error body."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return _error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        err = ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", code=code,
                       headers=dict(exc.headers or {}))
        return _error_response(err)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        return _error_response(ApiError(400, str(exc.errors())[:500], code="invalid_request"))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        return _error_response(ApiError(500, f"{type(exc).__name__}: {exc}", type="server_error",
                                        code="internal_error"))


def _no_constants(name):
    raise ValueError(f"{name} is not valid JSON")


async def _read_body(request, engine, model_name: str) -> dict:
    """The request's JSON object, read within the byte cap, naming this server's model."""
    length = request.headers.get("content-length")
    cap = engine.limits.max_body_bytes
    if length is not None and (not length.isdigit() or int(length) > cap):
        raise ApiError(413, f"the request body is over this server's {cap}-byte limit", code="request_too_large")
    chunks, seen = [], 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > cap:
            raise ApiError(413, f"the request body is over this server's {cap}-byte limit", code="request_too_large")
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks), parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, f"the request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {_type_name(body)}", code="invalid_json")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("model", "a model name (string) is required", "invalid_type" if model is not None else
                   "missing_required_parameter")
    if model != model_name:
        raise ApiError(404, f"The model '{model[:100]}' does not exist; this server serves '{model_name}'",
                       param="model", code="model_not_found")
    return body


def _usage(n_prompt: int, outs) -> dict:
    done = sum(c for _, c, _ in outs)
    return {"prompt_tokens": n_prompt, "completion_tokens": done, "total_tokens": n_prompt + done}


def _pieces(text: str) -> list[str]:
    """``text`` in small pieces (words with their leading space), so streaming clients see several deltas."""
    pieces, start = [], 0
    for i in range(1, len(text)):
        if text[i] in " \n" and text[i - 1] not in " \n":
            pieces.append(text[start:i])
            start = i
    pieces.append(text[start:])
    return [p for p in pieces if p]


def _stream(kind: str, rid: str, model_name: str, n_prompt: int, outs, include_usage: bool):
    """Server-sent events in the OpenAI chunk format, ending with ``[DONE]``."""
    from fastapi.responses import StreamingResponse

    chunk_kind = "chat.completion.chunk" if kind == "chat" else "text_completion"

    def event(choices, usage=None) -> str:
        data = {"id": rid, "object": chunk_kind, "created": int(time.time()), "model": model_name,
                "choices": choices}
        if include_usage:
            data["usage"] = usage
        return f"data: {json.dumps(data)}\n\n"

    def gen():
        for i, (text, _, finish) in enumerate(outs):
            if kind == "chat":
                yield event([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
                for piece in _pieces(text):
                    yield event([{"index": i, "delta": {"content": piece}, "finish_reason": None}])
                yield event([{"index": i, "delta": {}, "finish_reason": finish}])
            else:
                for piece in _pieces(text):
                    yield event([{"index": i, "text": piece, "finish_reason": None, "logprobs": None}])
                yield event([{"index": i, "text": "", "finish_reason": finish, "logprobs": None}])
        if include_usage:
            yield event([], _usage(n_prompt, outs))
        yield "data: [DONE]\n\n"

    return StreamingResponse(gen(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _generate(engine, model_name: str, kind: str, text: str, p: Params, param: str):
    """Run the generation in the engine's queue; a completion object or a stream of chunks."""
    try:
        n_prompt, outs = await engine.submit(engine.generate, text, p, param)
    except asyncio.CancelledError:
        if engine.stopping.is_set():  # queued work dropped by a shutdown: a JSON 503, not a bare 500
            raise engine._shutting_down() from None
        raise  # the client went away
    rid = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"
    if p.stream:
        return _stream(kind, rid, model_name, n_prompt, outs, p.include_usage)
    if kind == "chat":
        choices = [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": f,
                    "logprobs": None} for i, (t, _, f) in enumerate(outs)]
    else:
        choices = [{"index": i, "text": t, "finish_reason": f, "logprobs": None} for i, (t, _, f) in enumerate(outs)]
    return {"id": rid, "object": "chat.completion" if kind == "chat" else "text_completion",
            "created": int(time.time()), "model": model_name, "choices": choices, "usage": _usage(n_prompt, outs)}


def _add_model_routes(app, engine, model_name: str, created: int) -> None:
    """``/health``, ``/v1/models`` and ``/v1/models/{id}``."""

    def model_card() -> dict:
        return {"id": model_name, "object": "model", "created": created, "owned_by": "visforge",
                "context_length": engine.n_ctx, "max_prompt_chars": engine.max_prompt_chars}

    @app.get("/health")
    async def health():
        return {"ok": True, "model": model_name, "queued": engine._count, "capacity": engine.capacity}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str):
        if model_id != model_name:
            raise ApiError(404, f"The model '{model_id[:100]}' does not exist", param="model", code="model_not_found")
        return model_card()


def _chat_text(engine, messages: list[dict]) -> str:
    """The prompt for chat ``messages``: the model's chat template, or the last user message."""
    tok = engine.tokenizer
    if getattr(tok, "chat_template", None):
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        engine.check_chars(text, "messages")
        return text
    users = [m["content"] for m in messages if m["role"] == "user"]
    if not users:
        raise _bad("messages", "a model without a chat template needs a user message to complete")
    return users[-1]


def _add_completion_routes(app, engine, model_name: str) -> None:
    """``/v1/completions`` and ``/v1/chat/completions``."""
    from fastapi import Request

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await _read_body(request, engine, model_name)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise _bad("prompt", "must be a string (or an array holding one string)", "invalid_type")
        engine.check_chars(prompt, "prompt")
        p = parse_params(body, _COMPLETION_KEYS)
        return await _generate(engine, model_name, "completion", prompt, p, "prompt")

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await _read_body(request, engine, model_name)
        messages = chat_messages(body.get("messages"))
        engine.check_chars("".join(m["content"] for m in messages), "messages")
        p = parse_params(body, _CHAT_KEYS)
        return await _generate(engine, model_name, "chat", _chat_text(engine, messages), p, "messages")


def serve(model_path: str | None = None, host: str = "127.0.0.1", port: int = 8000,
          model_name: str = "visforge-planner", limits: ServerLimits | None = None) -> None:
    """Serve the causal-LM planner at ``model_path`` (the embedded one when None) until SIGTERM/SIGINT."""
    import uvicorn

    from builder.planner.causal import load_causal_planner

    planner = load_causal_planner(model_path)
    engine = Engine(planner, limits)
    app = create_app(planner, model_name, engine=engine)

    class _Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            engine.shutdown()  # generation stops at its next token; queued work gets 503
            super().handle_exit(sig, frame)

    server = _Server(uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=1,
                                    timeout_keep_alive=5))
    server.run()
    engine.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # A worker thread still inside a tokenizer call would hold up the interpreter's exit.
    os._exit(0)
