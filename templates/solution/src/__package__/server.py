"""HTTP server for the solution: FastAPI app with size limits and clear JSON errors.

Endpoints: ``GET /health``, ``POST /predict`` (multipart: ``image`` file(s), optional ``query``
and ``choices`` fields), ``POST /predict/batch`` (multipart: ``images`` files, one prediction
each, optional shared ``query``/``choices`` or one ``queries`` field per image). The OpenAPI
schema is at ``/openapi.json``, interactive docs at ``/docs``.

Every client error is a 4xx JSON body ``{"error": <code>, "detail": <message>}``: corrupt image
400, oversized request or image 413, wrong content type 415, missing/empty fields 422.
This file is copied verbatim by ``visforge export``.
"""

from __future__ import annotations

import io
import json
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from PIL import Image
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from builder.core.images import ImageError, decode_image

from .runtime import Solution, manifest

MB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What one request may hold. Checked before any pixel is decoded."""

    max_request_bytes: int = 32 * MB
    max_image_bytes: int = 16 * MB
    max_pixels: int = 25_000_000  # 5000 x 5000
    max_batch: int = 64


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
                415: "unsupported_media_type", 422: "invalid_request", 500: "internal_error"}
_ERRORS = {code: {"model": ErrorBody} for code in (400, 413, 415, 422)}


def _error(status: int, detail: str, code: str | None = None) -> JSONResponse:
    return JSONResponse({"error": code or _ERROR_CODES.get(status, "error"), "detail": detail}, status_code=status)


class _BodyTooLarge(HTTPException):
    pass


class RequestGuard:
    """ASGI middleware: refuses non-multipart uploads (415) and bodies over the limit (413).

    It runs before FastAPI parses the form, so a huge upload is refused from its
    Content-Length without being read, and a chunked one is cut off as soon as it passes the
    limit (FastAPI would otherwise report a body it cannot parse as a generic 400).
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].startswith("/predict"):
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


def _check_pixels(data: bytes, name: str, limits: Limits) -> None:
    """413 for images whose header declares too many pixels (read without decoding them)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
    except Image.DecompressionBombError:
        raise HTTPException(413, f"{name}: image is too large (decompression bomb guard)") from None
    except Exception:
        return  # not readable at all: decode_image gives the precise 400 message
    if w * h > limits.max_pixels:
        raise HTTPException(413, f"{name}: {w}x{h} pixels is over the {limits.max_pixels}-pixel limit")


async def _read_image(upload: UploadFile, limits: Limits):
    name = upload.filename or "image"
    data = await upload.read(limits.max_image_bytes + 1)
    if len(data) > limits.max_image_bytes:
        raise HTTPException(413, f"{name}: over the {limits.max_image_bytes}-byte image limit")
    _check_pixels(data, name, limits)
    try:
        return decode_image(data, name, max_pixels=limits.max_pixels)
    except ImageError as e:
        raise HTTPException(400, str(e)) from None


def _clean_choices(choices: list[str] | None) -> list[str] | None:
    """Choices from repeated form fields, or one field holding a JSON list."""
    if not choices:
        return None
    if len(choices) == 1 and choices[0].lstrip().startswith("["):
        try:
            parsed = json.loads(choices[0])
        except json.JSONDecodeError:
            raise HTTPException(422, "choices: not a valid JSON list") from None
        if not isinstance(parsed, list) or not all(isinstance(c, str) for c in parsed):
            raise HTTPException(422, "choices: a JSON list must hold strings only")
        return parsed or None
    return choices


def create_app(solution: Solution | None = None, limits: Limits | None = None, workers: int = 1,
               cache_dir: str | None = None) -> FastAPI:
    """The FastAPI app; builds a ``Solution`` at startup unless one is given."""
    limits = limits or Limits()
    info = manifest()
    state: dict[str, Solution] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        own = solution is None
        state["solution"] = solution if solution is not None else Solution(workers=workers, cache_dir=cache_dir)
        try:
            yield
        finally:
            if own:
                state["solution"].close()

    app = FastAPI(
        title=info["name"],
        version=info["version"],
        description=f"{info['description']}\n\nOutput: {info['output']} (program {info['program_version']}).",
        lifespan=lifespan,
    )
    app.add_middleware(RequestGuard, max_bytes=limits.max_request_bytes)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail))

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

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness and what is being served."""
        return {"status": "ok", **{k: info[k] for k in ("name", "version", "program_version", "output")}}

    @app.post("/predict", response_model=Prediction, responses=_ERRORS)
    async def predict(
        image: Annotated[list[UploadFile], File(description="The image (several for multi-image solutions).")],
        query: Annotated[str | None, Form(description="The question; defaults to the task's own.")] = None,
        choices: Annotated[list[str] | None, Form(description="Candidate texts (repeat the field, or a JSON list).")] = None,
    ):
        """Run the solution on one input. A program failure is 500 with the same body as a success."""
        if len(image) > limits.max_batch:
            raise HTTPException(413, f"at most {limits.max_batch} images per request")
        if not state["solution"].multi_image and len(image) != 1:
            raise HTTPException(422, f"image: this solution takes exactly one image, got {len(image)}")
        arrays = [await _read_image(f, limits) for f in image]
        result = await run_in_threadpool(state["solution"].predict, arrays, query, _clean_choices(choices))
        return JSONResponse(result, status_code=200 if result["ok"] else 500)

    @app.post("/predict/batch", response_model=BatchPrediction, responses=_ERRORS)
    async def predict_batch(
        images: Annotated[list[UploadFile], File(description="One image per prediction.")],
        query: Annotated[str | None, Form(description="The question for every image; defaults to the task's own.")] = None,
        queries: Annotated[list[str] | None, Form(description="One question per image (instead of query).")] = None,
        choices: Annotated[list[str] | None, Form(description="Candidate texts for every image.")] = None,
    ):
        """Run the solution on each image; a failing image is ``ok: false`` in its own result."""
        if not images:
            raise HTTPException(422, "images: the batch is empty")
        if len(images) > limits.max_batch:
            raise HTTPException(413, f"at most {limits.max_batch} images per batch, got {len(images)}")
        if state["solution"].multi_image:
            raise HTTPException(422, "this solution takes several images per input: use /predict")
        if queries is not None and len(queries) != len(images):
            raise HTTPException(422, f"queries: {len(queries)} given for {len(images)} images")
        arrays = [await _read_image(f, limits) for f in images]
        shared = _clean_choices(choices)
        items = [
            {"images": [a], "query": queries[i] if queries is not None else query, "choices": shared, "id": f"item{i}"}
            for i, a in enumerate(arrays)
        ]
        return {"results": await run_in_threadpool(state["solution"].predict_many, items)}

    return app


def serve(host: str = "127.0.0.1", port: int = 8000, workers: int = 1, limits: Limits | None = None,
          cache_dir: str | None = None, log_level: str = "info") -> None:
    """Serve the solution with uvicorn (one process; ``workers`` sandbox processes)."""
    import uvicorn

    app = create_app(limits=limits, workers=workers, cache_dir=cache_dir)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
