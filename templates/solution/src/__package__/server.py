"""HTTP server for the solution: FastAPI app with size limits and clear JSON errors.

Endpoints: ``GET /health``, ``POST /predict`` (multipart: ``image`` file(s), optional ``query``
and ``choices`` fields), ``POST /predict/batch`` (multipart: ``images`` files, one prediction
each, optional shared ``query``/``choices`` or one ``queries`` field per image). The OpenAPI
schema is at ``/openapi.json``, interactive docs at ``/docs``.

Every error is a JSON body ``{"error": <code>, "detail": <message>}``: a corrupt image 400 (every
image is fully decoded and, for PNG, every chunk's checksum verified), an oversized request or
image 413 (a side over ``max_side`` pixels, more than ``max_pixels`` pixels, or too many bytes:
decided from the header, before any pixel is decoded), wrong content type 415, missing/empty
fields 422, a full queue 503 with ``Retry-After`` (``workers`` requests run at once, at most
``max_queue`` wait), a request past its deadline 504. Decoding, the engines and the program run
in worker processes (``workers``), never on the event loop, so ``/health`` and other requests are
answered while a slow one runs; a worker past a request's deadline is killed (its work stops),
and one past its memory cap is replaced. SIGTERM (or Ctrl+C) drains: new requests get 503 with
``Retry-After``, running ones finish (or, after their deadline, 503), then the process exits 0;
a second signal exits at once. The OpenAPI schema at ``/openapi.json`` states all of this.
This file is copied verbatim by ``visforge export``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from builder.core.images import ImageError, ImageTooLarge, check_image_size
from builder.core.video import VideoError, VideoTooLarge, probe_video

from .runtime import Solution, manifest
from .workers import EngineWorkers, InProcess, Job, JobError, is_video, trim_memory

MB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What one request may hold. Checked before any pixel is decoded."""

    max_request_bytes: int = 32 * MB
    max_image_bytes: int = 16 * MB
    max_side: int = 4096  # the longer side, in pixels
    max_pixels: int = 12_000_000  # a 4000 x 3000 photo
    max_batch: int = 64
    max_queue: int = 16  # requests waiting for a worker before the server answers 503
    request_timeout_s: float = 30.0  # each request's deadline (504 past it)
    max_video_bytes: int = 30 * MB
    max_video_seconds: float = 60.0
    max_video_frames: int = 1500
    max_video_side: int = 1280
    worker_memory_mb: float = 1024.0  # how far a worker may grow past its size at start; then replaced


class Prediction(BaseModel):
    """The program's answer for one input, or why it has none."""

    ok: bool
    value: Any = None
    error: str | None = None
    error_kind: str | None = None
    duration_ms: float
    tool_calls: int


class BatchPrediction(BaseModel):
    """One prediction per uploaded image, in upload order."""

    results: list[Prediction]


class ErrorBody(BaseModel):
    """A client or server error."""

    error: str
    detail: str


_ERROR_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
                415: "unsupported_media_type", 422: "invalid_request", 500: "internal_error",
                503: "overloaded", 504: "timeout"}
_RETRY = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Not an image, or a corrupt or truncated one."},
    413: {"model": ErrorBody, "description": "Request bytes, image bytes, image side or pixel count over the limit."},
    415: {"model": ErrorBody, "description": "Not multipart/form-data."},
    422: {"model": ErrorBody, "description": "Missing, empty, too many or inconsistent fields."},
    503: {"model": ErrorBody, "description": "Queue full, shutting down, or the request's worker was lost "
                                            "(it is replaced).", "headers": _RETRY},
    504: {"model": ErrorBody, "description": "The request passed its deadline."},
}


def _error(status: int, detail: str, code: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": code or _ERROR_CODES.get(status, "error"), "detail": detail}, status_code=status,
                        headers=headers)


class Pool:
    """The threads that hand requests to the runner (each waits for one worker's answer), with a bounded queue."""

    def __init__(self, workers: int, max_queue: int):
        self.executor = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="solution")
        self.capacity = max(1, workers) + max(0, max_queue)
        self.count = 0
        self._lock = threading.Lock()

    def submit(self, fn, *args):
        with self._lock:
            if self.count >= self.capacity:
                raise HTTPException(503, f"the server is busy ({self.count} requests running or queued); retry shortly",
                                    headers={"Retry-After": "1"})
            self.count += 1
        try:
            fut = self.executor.submit(fn, *args)
        except RuntimeError:
            with self._lock:
                self.count -= 1
            raise HTTPException(503, "the server is shutting down", headers={"Retry-After": "5"}) from None
        fut.add_done_callback(self._done)
        return fut

    def _done(self, _fut) -> None:
        with self._lock:
            self.count -= 1
            idle = self.count == 0
        if idle:  # uploads are freed by now: hand the heap back, so idle memory returns to its start
            trim_memory()

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


class _BodyTooLarge(HTTPException):
    pass


class Drain:
    """A graceful stop: once ``start``ed, new requests are refused (503 with ``Retry-After``) while
    the ``active`` ones finish; past ``grace_s`` the ones still running are answered 503 too."""

    def __init__(self, grace_s: float):
        self.grace_s = grace_s
        self.started_at: float | None = None
        self.active = 0
        self.aborted = asyncio.Event()

    def start(self) -> None:
        """Begin draining (from a signal handler: only sets a time)."""
        if self.started_at is None:
            self.started_at = time.monotonic()

    @property
    def draining(self) -> bool:
        """Whether a drain has begun."""
        return self.started_at is not None

    def overdue(self) -> bool:
        """Whether running requests have had their grace time."""
        return self.started_at is not None and time.monotonic() > self.started_at + self.grace_s


class RequestGuard:
    """ASGI middleware: refuses non-multipart uploads (415) and bodies over the limit (413), and
    every request while the server drains (503); counts the requests it lets through.

    It runs before FastAPI parses the form, so a huge upload is refused from its
    Content-Length without being read, and a chunked one is cut off as soon as it passes the
    limit (FastAPI would otherwise report a body it cannot parse as a generic 400).
    """

    def __init__(self, app, max_bytes: int, drain: Drain):
        self.app = app
        self.max_bytes = max_bytes
        self.drain = drain

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.drain.draining:
            await self._drain(receive)
            return await _error(503, "the server is shutting down; retry shortly (or on another instance)",
                                "shutting_down", {"Retry-After": "5", "Connection": "close"})(scope, receive, send)
        self.drain.active += 1
        try:
            return await self._guarded(scope, receive, send)
        finally:
            self.drain.active -= 1

    async def _guarded(self, scope, receive, send):
        if scope["method"] != "POST" or not scope["path"].startswith("/predict"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._drain(receive)
            return await _error(413, f"request body is over the {self.max_bytes}-byte limit")(scope, receive, send)
        empty = length == "0"
        if ctype != "multipart/form-data" and not (empty and not ctype):
            # An empty body with no type reaches FastAPI, which reports the missing fields (422).
            await self._drain(receive)
            return await _error(
                415, f"send images as multipart/form-data, not {ctype or 'a body without a content type'}"
            )(scope, receive, send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _BodyTooLarge(413, f"request body is over the {self.max_bytes}-byte limit")
            return message

        await self.app(scope, limited_receive, send)

    async def _drain(self, receive, cap: int = 256 * MB) -> None:
        # Read (and drop) what the client is still sending so it gets to read our answer
        # instead of a reset connection; a client sending more than ``cap`` is just cut off.
        seen = 0
        while seen <= cap:
            message = await receive()
            if message["type"] != "http.request":
                return
            seen += len(message.get("body", b""))
            if not message.get("more_body"):
                return


async def _read_image(upload: UploadFile | str, limits: Limits, field: str) -> tuple[str, bytes]:
    """The upload's bytes (a file, or base64 text in a plain form field), refused (413) when over the
    byte, side or pixel limit: header only. An empty field is 422, as for any missing field."""
    if isinstance(upload, str):
        name = f"{field} (base64 text)"
        if len(upload) > limits.max_image_bytes * 4 // 3 + 4:
            raise HTTPException(413, f"{name}: over the {limits.max_image_bytes}-byte image limit")
        try:
            data = base64.b64decode(upload.strip(), validate=True)
        except ValueError:
            raise HTTPException(400, f"{name}: a text field must hold the image's base64 text") from None
    else:
        name = upload.filename or field
        data = await upload.read(limits.max_image_bytes + 1)
    if not data:
        raise HTTPException(422, f"{field}: {name} is empty")
    if len(data) > limits.max_image_bytes:
        raise HTTPException(413, f"{name}: over the {limits.max_image_bytes}-byte image limit")
    data = _unbase64(data)
    if is_video(name, data):
        if len(data) > limits.max_video_bytes:
            raise HTTPException(413, f"{name}: over the {limits.max_video_bytes}-byte video limit")
        try:  # the container's header only: size, frame count and duration
            probe_video(data, name, max_duration=limits.max_video_seconds, max_side=limits.max_video_side,
                        max_frames=limits.max_video_frames, max_bytes=limits.max_video_bytes)
        except VideoTooLarge as e:
            raise HTTPException(413, str(e)) from None
        except VideoError as e:
            raise HTTPException(400, str(e)) from None
        return name, data
    try:
        check_image_size(data, name, limits.max_pixels, limits.max_side)
    except ImageTooLarge as e:
        raise HTTPException(413, str(e)) from None
    except ImageError as e:
        raise HTTPException(400, str(e)) from None
    return name, data


_B64_STARTS = (b"iVBORw0KGgo", b"/9j/", b"R0lGOD", b"UklGR", b"Qk")  # PNG, JPEG, GIF, WebP, BMP


def _unbase64(data: bytes) -> bytes:
    """An image sent as its base64 text (as JSON-minded clients and schema tools do) is decoded."""
    text = data.strip()
    if text.startswith(_B64_STARTS) and len(text) % 4 == 0:
        try:
            return base64.b64decode(text, validate=True)
        except ValueError:
            return data
    return data


def _clean_choices(choices: list[str] | None) -> list[str] | None:
    """Choices from repeated form fields, or one field holding a JSON list."""
    if not choices:
        return None
    if len(choices) == 1 and choices[0].lstrip()[:1] in ("[", "{"):
        try:
            parsed = json.loads(choices[0])
        except json.JSONDecodeError:
            raise HTTPException(422, "choices: not a valid JSON list") from None
        if not isinstance(parsed, list) or not all(isinstance(c, str) for c in parsed):
            raise HTTPException(422, "choices: repeat the field, or send one JSON list of strings")
        if not parsed:
            return None
        choices = parsed
    if any(not c.strip() for c in choices):
        raise HTTPException(422, "choices: every choice must be non-empty text")
    return choices


def _example_png() -> bytes:
    """A valid 8x8 PNG, the schema's example image."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


def create_app(solution: Solution | None = None, limits: Limits | None = None, workers: int = 2,
               cache_dir: str | None = None) -> FastAPI:
    """The FastAPI app. At startup it starts ``workers`` engine worker processes (``workers.EngineWorkers``);
    given a ``solution``, it runs that one in this process instead (no stopping, no memory cap).
    ``app.state.drain`` is its graceful stop (``serve`` starts it on SIGTERM)."""
    limits = limits or Limits()
    info = manifest()
    state: dict[str, Any] = {}
    n_workers = max(1, solution.workers if solution is not None else workers)
    multi_image = bool(info.get("multi_image"))
    # Every running request ends by its deadline (the worker is killed there), so a drain waits that long.
    drain = Drain(grace_s=limits.request_timeout_s + 1.0)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state["pool"] = Pool(n_workers, limits.max_queue)
        state["runner"] = InProcess(solution) if solution is not None else await asyncio.to_thread(
            EngineWorkers, n_workers, cache_dir, limits.request_timeout_s, limits.worker_memory_mb)
        try:
            yield
        finally:
            state["pool"].close()
            state["runner"].close()

    app = FastAPI(
        title=info["name"],
        version=info["version"],
        description=f"{info['description']}\n\nOutput: {info['output']} (program {info['program_version']}).\n\n"
                    f"Limits: {limits.max_side} pixels a side, {limits.max_pixels} pixels, "
                    f"{limits.max_image_bytes} bytes an image, {limits.max_request_bytes} bytes a request, "
                    f"{limits.max_batch} images a batch; {limits.request_timeout_s:g} s a request.",
        lifespan=lifespan,
    )
    app.add_middleware(RequestGuard, max_bytes=limits.max_request_bytes, drain=drain)
    app.state.drain = drain

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query"))
            problems.append(f"{loc or 'request'}: {err.get('msg', 'invalid')}")
        return _error(422, "; ".join(problems) or "invalid request")

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        return _error(500, f"{type(exc).__name__}: {exc}")

    async def _in_pool(job: Job, deadline: float):
        """Run ``job`` on a worker (503 when the queue is full); 504 at the deadline, 503 when a
        drain runs out of time.

        The work itself stops at the deadline too: the worker still busy with it is killed (the
        in-process runner stops the program's sandbox run and its tool calls instead).
        """
        timeout = HTTPException(504, f"the request did not finish within {limits.request_timeout_s:g} s")
        fut = asyncio.wrap_future(state["pool"].submit(state["runner"].run, job, deadline))
        aborted = asyncio.ensure_future(drain.aborted.wait())
        try:
            done, _ = await asyncio.wait({fut, aborted}, timeout=max(0.0, deadline - time.monotonic()),
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            aborted.cancel()
        if fut not in done:
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # nobody waits for it now
            if aborted in done:
                raise HTTPException(503, "the server is shutting down", headers={"Retry-After": "5"})
            raise timeout
        try:
            return fut.result()
        except TimeoutError:
            raise timeout from None
        except JobError as e:
            raise HTTPException(e.status, e.detail, headers={"Retry-After": str(e.retry_after)}
                                if e.retry_after else None) from None

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness and what is being served."""
        return {"status": "ok", **{k: info[k] for k in ("name", "version", "program_version", "output")},
                "working_side": state["runner"].working_side}

    predict_responses = {**_ERRORS, 500: {"model": Prediction | ErrorBody,
                                          "description": "The program failed on this input (a Prediction with "
                                                         "ok: false), or an internal error."}}

    @app.post("/predict", response_model=Prediction, responses=predict_responses)
    async def predict(
        image: Annotated[list[UploadFile | str], File(
            description="The image (several for multi-image solutions): a file, or its base64 text.")],
        query: Annotated[str | None, Form(description="The question; defaults to the task's own.")] = None,
        choices: Annotated[list[str] | None, Form(description="Candidate texts (repeat the field, or a JSON list).")] = None,
    ):
        """Run the solution on one input. A program failure is 500 with the same body as a success."""
        if len(image) > limits.max_batch:
            raise HTTPException(422, f"image: at most {limits.max_batch} images per request")
        if not multi_image and len(image) != 1:
            raise HTTPException(422, f"image: this solution takes exactly one image, got {len(image)}")
        deadline = time.monotonic() + limits.request_timeout_s
        files = [await _read_image(f, limits, "image") for f in image]
        job = Job(files, limits.max_pixels, limits.max_side, query=query, choices=_clean_choices(choices))
        result = await _in_pool(job, deadline)
        if result["error_kind"] == "timeout":  # the program ran out of the request's time
            raise HTTPException(504, f"the request did not finish within {limits.request_timeout_s:g} s")
        return JSONResponse(result, status_code=200 if result["ok"] else 500)

    @app.post("/predict/batch", response_model=BatchPrediction, responses=_ERRORS)
    async def predict_batch(
        images: Annotated[list[UploadFile | str], File(description="One image per prediction: files or base64 text.")],
        query: Annotated[str | None, Form(description="The question for every image; defaults to the task's own.")] = None,
        queries: Annotated[list[str] | None, Form(description="One question per image (instead of query).")] = None,
        choices: Annotated[list[str] | None, Form(description="Candidate texts for every image.")] = None,
    ):
        """Run the solution on each image; a failing image is ``ok: false`` in its own result."""
        if not images:
            raise HTTPException(422, "images: the batch is empty")
        if len(images) > limits.max_batch:
            raise HTTPException(422, f"images: at most {limits.max_batch} images per batch, got {len(images)}")
        if multi_image:
            raise HTTPException(422, "this solution takes several images per input: use /predict")
        if queries is not None and len(queries) != len(images):
            raise HTTPException(422, f"queries: {len(queries)} given for {len(images)} images")
        deadline = time.monotonic() + limits.request_timeout_s
        files = [await _read_image(f, limits, "images") for f in images]
        job = Job(files, limits.max_pixels, limits.max_side, query=query, choices=_clean_choices(choices),
                  queries=queries, batch=True)
        return await _in_pool(job, deadline)

    example = base64.b64encode(_example_png()).decode()

    def openapi() -> dict[str, Any]:
        # The generated schema, made exact where FastAPI cannot say it: how many files each field
        # takes, a valid example image, and the Allow header on 405.
        if app.openapi_schema:
            return app.openapi_schema
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for comp in schema.get("components", {}).get("schemas", {}).values():
            props = comp.get("properties", {})
            for field, most in (("image", limits.max_batch if multi_image else 1), ("images", limits.max_batch)):
                if field in props and props[field].get("type") == "array":
                    props[field].update(minItems=1, maxItems=most)
                    props[field]["items"].update(
                        examples=[example], description="An image file (PNG, JPEG, ...) or its base64 text.")
                    props[field]["examples"] = [[example]]
            for field in ("queries", "choices"):
                if field in props:
                    props[field].setdefault("examples", [["How many red objects are there?"]])
        app.openapi_schema = schema
        return schema

    app.openapi = openapi
    return app


def serve(host: str = "127.0.0.1", port: int = 8000, workers: int = 2, limits: Limits | None = None,
          cache_dir: str | None = None, log_level: str = "info") -> None:
    """Serve the solution with uvicorn (one process, ``workers`` engine worker processes) until
    SIGTERM or Ctrl+C, which drain it (see the module docstring)."""
    import uvicorn

    app = create_app(limits=limits, workers=workers, cache_dir=cache_dir)

    class DrainingServer(uvicorn.Server):
        """uvicorn, but a stop signal drains the app before uvicorn's own shutdown starts."""

        def handle_exit(self, sig, frame) -> None:
            if app.state.drain.draining:  # a second signal: stop without waiting
                self.should_exit = True
            app.state.drain.start()  # the process then exits 0, not by the signal

        async def on_tick(self, counter: int) -> bool:
            drain = app.state.drain
            if drain.draining and not self.should_exit:
                if drain.active == 0:
                    self.should_exit = True
                elif drain.overdue():
                    drain.aborted.set()  # the ones still running answer 503; the next ticks see them gone
                    if time.monotonic() > drain.started_at + drain.grace_s + 2:
                        self.should_exit = True
            return await super().on_tick(counter)

    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=2)
    DrainingServer(config).run()
