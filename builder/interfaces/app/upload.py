"""Uploads over HTTP: the ``/upload`` route served beside the app, and the file picker using it.

Panel's ``FileInput`` sends a file base64-encoded over the Bokeh websocket, whose messages are
capped (about 20 MB): a larger file closed the browser session silently. Here the browser checks
each file's size, POSTs the files to ``/upload`` (multipart), and the route checks, decodes and
stages them under ``<workspace>/.uploads/`` (``UPLOADS_DIR``) under content-hash names; only
those names (tokens) travel over the websocket. The Task card turns tokens back into files with
``staged_file``, which accepts nothing but a bare token, so a client never names a path.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import panel as pn
import param
import tornado.web
from bokeh.server.views.auth_request_handler import AuthRequestHandler
from tornado.httputil import parse_body_arguments
from tornado.ioloop import IOLoop

from builder import UPLOADS_DIR, UserError, stage_image

MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # per file
MAX_REQUEST_BYTES = 100 * 1024 * 1024  # per request (several files); the picker sends one file a request
DISCARD_BYTES = 1024**3  # a larger request is read (and dropped) up to this, so its client still gets the 413
STALE_UPLOAD_S = 24 * 3600  # staged files older than this are removed by the next upload
_TOKEN = re.compile(r"^[0-9a-f]{16}\.[a-z0-9]{1,5}$")  # what ``stage_image`` names a file


def staging_dir(workspace_dir: str | Path) -> Path:
    """The folder uploads are staged in (inside the workspace folder; allowed before a task exists)."""
    return Path(workspace_dir) / UPLOADS_DIR


def safe_name(name: str) -> str:
    """A client's file name reduced to a plain name for messages (no folders, odd characters replaced)."""
    base = re.split(r"[\\/]", str(name or ""))[-1]
    base = re.sub(r"[^\w. ()+-]", "_", base, flags=re.ASCII).strip()[:120]
    return base if base.strip(".") else "upload"


def staged_file(workspace_dir: str | Path, token: str) -> Path:
    """The staged upload a token names; anything but a bare staged name is refused."""
    if not isinstance(token, str) or not _TOKEN.match(token):
        raise ValueError(f"{str(token)[:60]!r} is not a reference to an uploaded file; choose the file again")
    path = staging_dir(workspace_dir) / token
    if not path.is_file():
        raise FileNotFoundError(f"the uploaded file {token} is no longer staged; choose the file again")
    return path


def stage_uploads(workspace_dir: str | Path, files: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
    """Decode and stage each (name, bytes) in the workspace's staging folder; returns {name, token, bytes}
    for each. A file that is not a usable image raises ``UserError`` naming it."""
    folder = staging_dir(workspace_dir)
    _remove_stale(folder)
    return [{"name": name, "token": stage_image(data, name, staging=folder).name, "bytes": len(data)}
            for name, data in files]


def _remove_stale(folder: Path) -> None:
    if not folder.is_dir():
        return
    cutoff = time.time() - STALE_UPLOAD_S
    for p in folder.iterdir():
        try:
            if p.is_file() and _TOKEN.match(p.name) and p.stat().st_mtime < cutoff:
                p.unlink()
        except FileNotFoundError:  # removed by another upload meanwhile
            pass


@tornado.web.stream_request_body
class UploadHandler(AuthRequestHandler):
    """``POST /upload`` (multipart/form-data, one or several files): stages images and answers
    ``{"files": [{"name", "token", "bytes"}]}``; errors are JSON ``{"error": ...}`` naming the file:
    413 over the size limit (``file`` and ``limit`` given too), 400 not an image, 403 another site,
    401 when the server asks users to sign in (its auth provider, as for the page) and none did."""

    def initialize(self, workspace_dir: str | Path, max_bytes: int = MAX_UPLOAD_BYTES,
                   max_request_bytes: int = MAX_REQUEST_BYTES, origins: tuple[str, ...] = ()) -> None:
        """The workspace whose staging folder uploads go to, the limits and the allowed origins."""
        self.workspace_dir = Path(workspace_dir)
        self.max_bytes = max_bytes
        self.max_request_bytes = max_request_bytes
        self.origins = set(origins)
        self._chunks: list[bytes] = []

    def check_xsrf_cookie(self) -> None:
        """Cross-site posts are refused by their Origin in ``prepare`` instead (the page sends no XSRF token)."""

    async def prepare(self) -> None:
        """Refuse early, before the body is read: sign-in, other sites, no or too large Content-Length."""
        await super().prepare()  # the server's auth provider, as for the page
        if self.request.method != "POST":
            return
        if not self.current_user:
            return self._answer(401, {"error": "sign in to the app first"})
        origin = self.request.headers.get("Origin")
        if origin and urlsplit(origin).netloc not in self.origins:
            return self._answer(403, {"error": f"uploads from {origin} are not accepted"})
        length = self.request.headers.get("Content-Length", "")
        if not length.isdigit():
            return self._answer(411, {"error": "send the files as multipart/form-data with a Content-Length"})
        n = int(length)
        if n > self.max_request_bytes:
            # Tornado would cut a body over its limit without an answer: read it (and drop it) instead.
            self.request.connection.set_max_body_size(min(n, DISCARD_BYTES))
            return self._answer(413, {"error": f"this upload of {n} bytes is over the {self.max_request_bytes}-byte "
                                               f"limit of one request (each file at most {self.max_bytes} bytes)",
                                      "limit": self.max_bytes})
        self.request.connection.set_max_body_size(self.max_request_bytes)

    def data_received(self, chunk: bytes) -> None:
        """Collect the streamed body (``stream_request_body``), unless the answer is already sent."""
        if not self._finished:
            self._chunks.append(chunk)

    async def post(self) -> None:
        """Check each file's size, then decode and stage the files; answer with their tokens."""
        args: dict[str, list[bytes]] = {}
        parts: dict[str, list[Any]] = {}
        parse_body_arguments(self.request.headers.get("Content-Type", ""), b"".join(self._chunks), args, parts,
                             self.request.headers)
        self._chunks = []
        files = [(safe_name(f.filename), f.body) for field in parts.values() for f in field]
        if not files:
            return self._answer(400, {"error": "no files in the upload (send multipart/form-data file fields)"})
        for name, data in files:
            if len(data) > self.max_bytes:
                return self._answer(413, {"error": f"{name}: {len(data)} bytes is over the {self.max_bytes}-byte "
                                                   "upload limit", "file": name, "limit": self.max_bytes})
        try:  # decoding takes a while: off the server's event loop, so other sessions stay responsive
            staged = await IOLoop.current().run_in_executor(None, stage_uploads, self.workspace_dir, files)
        except (UserError, ValueError) as e:
            return self._answer(400, {"error": str(e)})
        except OSError as e:
            return self._answer(500, {"error": f"the upload could not be saved: {e}"})
        self._answer(200, {"files": staged})

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(body))


def upload_route(workspace_dir: str | Path, origins: list[str], path: str = "/upload") -> tuple[str, type, dict]:
    """The ``extra_patterns`` entry for ``pn.serve`` that serves ``UploadHandler`` at ``path``."""
    return (path, UploadHandler, {"workspace_dir": Path(workspace_dir), "origins": tuple(origins)})


class UploadPicker(pn.reactive.ReactiveHTML):
    """A multiple-file ``<input type=file>`` that uploads over HTTP (``/upload``), not the websocket.

    In the browser: a file over ``max_bytes`` is refused right there, naming it (nothing is sent);
    the others are POSTed one by one and their references set ``staged`` ({name, token, bytes}
    each). ``uploading`` is true meanwhile; ``error`` holds the last problem (also shown under the
    input). ``clear()`` empties the picker.
    """

    staged = param.List(default=[], doc="The staged uploads: {name, token, bytes} each.")
    uploading = param.Boolean(default=False, doc="Files are being sent.")
    error = param.String(default="", doc="The last upload's problem, naming the file.")
    max_bytes = param.Integer(default=MAX_UPLOAD_BYTES, doc="Per-file limit, checked in the browser first.")
    url = param.String(default="/upload", doc="The upload route.")

    _template = """<div id="box" class="vf-upload">
<input id="picker" type="file" multiple accept="image/*" onchange="${script('pick')}"></input>
<div id="note" class="vf-upload-note" style="font-size:13px; margin-top:4px"></div></div>"""

    _scripts = {
        "pick": """
const files = Array.from(picker.files);
const mb = (n) => (n / 1048576).toFixed(1) + ' MB';
const fail = (text) => { note.style.color = '#b00020'; note.textContent = text; data.error = '';
                         data.error = text; data.uploading = false; picker.value = ''; };
if (!files.length) return;
data.uploading = true;  // first: the emptied list below must not clear the picker
data.staged = [];  // a new choice replaces the previous one, also when it fails
const over = files.filter((f) => f.size > data.max_bytes);
if (over.length) {
  fail(over.map((f) => `${f.name}: ${f.size} bytes (${mb(f.size)}) is over the ${data.max_bytes}-byte ` +
                       `upload limit (${mb(data.max_bytes)})`).join('; ') + '. Nothing was uploaded.');
  return;
}
note.style.color = '';
(async () => {
  const staged = [];
  for (const [i, f] of files.entries()) {
    note.textContent = `Uploading ${f.name} (${i + 1}/${files.length}, ${mb(f.size)}) ...`;
    const form = new FormData();
    form.append('files', f, f.name);
    let reply = null, body = {};
    try {
      reply = await fetch(data.url, {method: 'POST', body: form, credentials: 'same-origin'});
      body = await reply.json();
    } catch (e) {
      return fail(`${f.name}: the upload failed (${reply ? 'HTTP ' + reply.status : e}). Nothing was added.`);
    }
    if (!reply.ok || !Array.isArray(body.files)) {
      return fail(body.error || `${f.name}: the upload failed (HTTP ${reply.status})`);
    }
    staged.push(...body.files);
  }
  note.textContent = `Uploaded ${staged.map((s) => s.name + ' (' + mb(s.bytes) + ')').join(', ')}: ` +
                     'press Add uploaded examples.';
  data.error = '';
  data.staged = staged;
  data.uploading = false;
})();
""",
        "staged": """if (!data.staged.length && !data.uploading) { picker.value = ''; note.textContent = ''; }""",
    }

    def clear(self) -> None:
        """Forget the staged files and empty the picker."""
        self.staged = []
        self.error = ""
