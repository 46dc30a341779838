"""The host side of the executor: a pool of sandboxed worker processes.

Defence in depth:
1. the AST allow-list (``validate``), checked here before a worker sees the program and again
   in the worker;
2. the worker process: an empty environment, resource limits, seccomp where libseccomp
   exists, results returned as JSON (never unpickled), a wall-clock limit enforced here by
   killing the worker's whole process group, a budget of tool calls per run. Every frame
   carries its run id (and tool calls a sequence number), host reads and writes have
   deadlines, and tool requests are checked (known tool, plain arguments, image index in
   range, integer box) before ``dispatch`` sees them: a worker out of step, or one that
   stops reading, is replaced rather than trusted;
3. OS isolation: when ``bwrap`` (bubblewrap) is installed and works, each worker runs in
   fresh namespaces with a read-only root file system and no network.

``Sandbox.run`` is thread-safe: a batch runner may call it from as many threads as it has
workers.
"""

from __future__ import annotations

import itertools
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from builder.executor.protocol import FrameError, read_frame, write_frame
from builder.executor.validate import ValidationError, validate
from builder.tools.specs import TOOL_NAMES

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
_BOOT = "import sys; sys.path.insert(0, sys.argv[1]); from builder.executor.worker import main; main()"
_MAX_COORD = 1_000_000
_MAX_ARG_DEPTH = 3  # tool arguments are texts or lists of texts; allow a little slack
_RUN_IDS = itertools.count(1)

Dispatch = Callable[[str, Any, list], Any]


@dataclass(frozen=True)
class Limits:
    """Per-run limits. ``timeout_s`` is wall-clock time including the tool calls it makes."""

    timeout_s: float = 30.0
    memory_mb: int = 512
    max_output_bytes: int = 1_000_000
    max_tool_calls: int = 500


@dataclass
class ProgramError:
    """Why a run failed: ``kind`` is syntax, validation, runtime, tool, timeout, memory, output or crash."""

    kind: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{self.kind} error: {where}{self.message}"


@dataclass
class RunResult:
    """The outcome of one run: ``value`` (plain data) when ``ok``, else ``error``."""

    ok: bool
    value: Any = None
    error: ProgramError | None = None
    stdout: str = ""
    duration_s: float = 0.0
    tool_calls: int = 0
    layers: list[str] = field(default_factory=list)


@lru_cache(maxsize=1)
def bwrap_command() -> list[str] | None:
    """The bubblewrap prefix if bwrap is installed and can create namespaces here, else None."""
    exe = shutil.which("bwrap")
    if exe is None:
        return None
    cmd = [exe, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    # An empty /tmp would hide a checkout or virtual environment that lives under /tmp (CI
    # clones often do): bind those back, read-only.
    needed = {sys.prefix, os.path.dirname(os.path.realpath(sys.executable)), _PACKAGE_ROOT}
    for path in sorted(p for p in needed if os.path.realpath(p).startswith("/tmp/")):
        cmd += ["--ro-bind", path, path]
    cmd += ["--unshare-all", "--die-with-parent", "--new-session", "--"]
    try:
        ok = subprocess.run([*cmd, sys.executable, "-c", "pass"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return cmd if ok else None


@lru_cache(maxsize=512)
def _check(source: str, entry: str) -> ValidationError | None:
    try:
        validate(source, entry)
    except ValidationError as e:
        return e
    return None


class _Worker:
    def __init__(self, memory_mb: int, use_bwrap: bool, use_seccomp: bool = True):
        prefix = (bwrap_command() or []) if use_bwrap else []
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-I", "-c", _BOOT, _PACKAGE_ROOT, str(memory_mb), str(int(use_seccomp))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},  # no inherited secrets
            start_new_session=True,  # its own process group, killed as a whole
            close_fds=True,
            cwd="/",  # not the host's working folder
        )
        assert self.proc.stdout is not None and self.proc.stdin is not None  # both are PIPEs
        self.out_fd = self.proc.stdout.fileno()
        self.in_fd = self.proc.stdin.fileno()
        # Writes to the worker honour deadlines: a worker that stops reading cannot block us.
        os.set_blocking(self.in_fd, False)
        try:
            hello = read_frame(self.out_fd, time.monotonic() + 30)
            if hello.get("op") != "ready":
                raise FrameError("worker did not start")
        except BaseException:
            self.kill()  # never leave a half-started process behind
            raise
        self.layers = list(hello.get("layers", [])) + (["bwrap"] if prefix else [])

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is None:
                continue
            try:
                stream.close()
            except OSError:
                pass
        self.proc.wait()


class Sandbox:
    """A pool of worker processes that run untrusted programs under limits."""

    def __init__(self, workers: int = 1, limits: Limits | None = None, isolation: str = "auto"):
        """Prepare ``workers`` worker slots (each starts on first use).

        ``isolation``: "auto" uses every layer this machine offers (bwrap namespaces when bwrap
        works, seccomp when pyseccomp imports, always rlimits); "bwrap" insists on bwrap;
        "process" skips bwrap; "minimal" skips bwrap and seccomp (rlimits only: for tests and
        for measuring what the outer layers cost). ``layers`` reports what is really active.
        """
        if workers < 1:
            raise ValueError("a sandbox needs at least one worker")
        if isolation not in ("auto", "bwrap", "process", "minimal"):
            raise ValueError("isolation must be 'auto', 'bwrap', 'process' or 'minimal'")
        if isolation == "bwrap" and bwrap_command() is None:
            raise RuntimeError("bubblewrap isolation requested but bwrap is missing or cannot create namespaces")
        self.limits = limits or Limits()
        self.use_bwrap = isolation == "bwrap" or (isolation == "auto" and bwrap_command() is not None)
        self.use_seccomp = isolation != "minimal"
        self.size = workers
        self._idle: queue.Queue[_Worker | None] = queue.Queue()
        for _ in range(workers):
            self._idle.put(None)  # a slot; the worker starts on first use
        self._closed = False
        self._lock = threading.Lock()
        self._live: set[_Worker] = set()
        # Workers die with the *thread* that started them (bwrap --die-with-parent and the
        # worker's own PR_SET_PDEATHSIG follow the parent thread), so one long-lived thread
        # starts them all; callers' threads may come and go.
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandbox-spawner")

    # ---- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop every worker."""
        self._closed = True
        with self._lock:
            live, self._live = list(self._live), set()
        for w in live:
            w.kill()
        self._spawner.shutdown(wait=False)

    def _spawn(self) -> _Worker:
        w = self._spawner.submit(_Worker, self.limits.memory_mb, self.use_bwrap, self.use_seccomp).result()
        with self._lock:
            self._live.add(w)
        return w

    def _discard(self, w: _Worker) -> None:
        w.kill()
        with self._lock:
            self._live.discard(w)

    @property
    def layers(self) -> list[str]:
        """The isolation layers a worker runs under (starts one if none is running yet)."""
        result = self.run("def execute(image):\n    return 0\n", image_sizes=[(1, 1)], dispatch=_no_tools)
        return ["ast"] + result.layers

    # ---- running ----------------------------------------------------------------------------
    def run(
        self,
        source: str,
        image_sizes: list[tuple[int, int]],
        dispatch: Dispatch,
        multi_image: bool = False,
        query: str | None = None,
        choices: list[str] | None = None,
        entry: str = "execute",
        limits: Limits | None = None,
        videos: list | None = None,
    ) -> RunResult:
        """Run ``source``'s ``entry`` on patches of the given image sizes; tool calls go to ``dispatch``.

        ``videos`` gives [frame count, fps] for each input that is a video (None for images):
        the program receives a ``VideoSegment`` for it."""
        if self._closed:
            raise RuntimeError("the sandbox is closed")
        t0 = time.perf_counter()
        limits = limits or self.limits
        problem = _check(source, entry)
        if problem is not None:
            return RunResult(False, error=ProgramError(problem.kind, problem.message, problem.line),
                             duration_s=time.perf_counter() - t0)
        if not image_sizes:
            return RunResult(False, error=ProgramError("validation", "the example has no image"))
        run_id = next(_RUN_IDS)
        request = {
            "op": "run", "run": run_id, "source": source, "entry": entry, "multi": bool(multi_image),
            "images": [[int(w), int(h)] for w, h in image_sizes], "query": query,
            "choices": list(choices) if choices is not None else None,
            "videos": [None if v is None else [int(v[0]), float(v[1])] for v in videos] if videos else None,
            "max_output_bytes": limits.max_output_bytes,
        }
        worker = self._idle.get()
        healthy = False
        try:
            if worker is None:
                worker = self._spawn()
            result, healthy = self._serve(worker, request, dispatch, limits, len(image_sizes))
        except (OSError, FrameError) as e:
            result = RunResult(False, error=ProgramError("crash", f"the worker process failed: {e}"))
        finally:
            if worker is not None and not healthy:
                self._discard(worker)
                worker = None
            self._idle.put(worker)
        result.duration_s = time.perf_counter() - t0
        return result

    def _serve(self, w: _Worker, request: dict, dispatch: Dispatch, limits: Limits,
               n_images: int) -> tuple[RunResult, bool]:
        deadline = time.monotonic() + limits.timeout_s
        calls = 0
        run_id = request["run"]
        timeout = RunResult(False, error=ProgramError(
            "timeout", f"the program did not finish within {limits.timeout_s:g} s"))
        try:
            write_frame(w.in_fd, request, deadline)
        except TimeoutError:
            return timeout, False
        while True:
            try:
                msg = read_frame(w.out_fd, deadline, max_bytes=limits.max_output_bytes + 64_000)
            except TimeoutError:
                timeout.tool_calls = calls
                return timeout, False
            except FrameError as e:
                try:  # it closed its end: give it a moment to be reaped so we can say why
                    code = w.proc.wait(timeout=0.5)
                except subprocess.TimeoutExpired:
                    code = None
                if code is not None and code < 0:
                    why = f"the worker was killed by signal {-code}"
                    kind = "memory" if -code in (signal.SIGKILL, signal.SIGSEGV) else "crash"
                    return RunResult(False, error=ProgramError(kind, why), tool_calls=calls), False
                return RunResult(False, error=ProgramError("output", str(e)), tool_calls=calls), False
            op = msg.get("op")
            # Every frame names its run (and calls their sequence number): a worker out of step
            # with this run must not answer for it, nor serve another one.
            in_step = msg.get("run") == run_id and (op != "call" or msg.get("seq") == calls + 1)
            if op not in ("done", "call") or not in_step:
                return RunResult(False, error=ProgramError(
                    "crash", f"the worker sent an unexpected {op!r} message"), tool_calls=calls), False
            if op == "done":
                return self._finish(w, msg, calls)
            calls += 1
            if calls > limits.max_tool_calls:
                reply = {"ok": False, "error": f"more than {limits.max_tool_calls} tool calls in one run"}
            else:
                reply = _dispatch(dispatch, msg, n_images)
            reply["seq"] = calls
            try:
                try:
                    write_frame(w.in_fd, reply, deadline)
                except (TypeError, ValueError, RecursionError) as e:  # a tool answered with non-plain data
                    bad = {"ok": False, "seq": calls, "error": f"{msg.get('tool')}: unusable tool result ({e})"}
                    write_frame(w.in_fd, bad, deadline)
            except BrokenPipeError:
                pass  # the worker stopped reading (it retires after a broken call): read its last frame
            except TimeoutError:
                timeout.tool_calls = calls
                return timeout, False

    @staticmethod
    def _finish(w: _Worker, msg: dict, calls: int) -> tuple[RunResult, bool]:
        err = msg.get("error")
        error = None
        if err is not None:
            if not isinstance(err, dict):
                return RunResult(False, error=ProgramError("crash", "the worker sent a malformed error")), False
            line = err.get("line")
            error = ProgramError(str(err.get("kind")), str(err.get("message")),
                                 line if isinstance(line, int) and not isinstance(line, bool) else None)
        # A worker that hit its memory limit may be in a bad state, and one whose tool
        # connection broke asks to retire: replace both.
        healthy = not msg.get("retire") and (error is None or error.kind != "memory")
        return RunResult(bool(msg.get("ok")) and error is None, msg.get("value"), error, str(msg.get("stdout", "")),
                         tool_calls=calls, layers=w.layers), healthy


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _valid_ref(ref: Any, n_images: int) -> bool:
    if isinstance(ref, dict) and "video" in ref:  # a video segment: input index and frame range
        return (set(ref) == {"video", "start", "stop", "step"} and all(_is_int(ref[k]) for k in ref)
                and 0 <= ref["video"] < n_images and 0 <= ref["start"] < ref["stop"] <= 10**7 and ref["step"] >= 1)
    if isinstance(ref, dict) and "frame" in ref and not (_is_int(ref["frame"]) and 0 <= ref["frame"] <= 10**7):
        return False
    return (
        isinstance(ref, dict)
        and isinstance(ref.get("image"), int)
        and not isinstance(ref.get("image"), bool)
        and 0 <= ref["image"] < n_images
        and isinstance(ref.get("box"), list)
        and len(ref["box"]) == 4
        and all(isinstance(c, int) and not isinstance(c, bool) and abs(c) <= _MAX_COORD for c in ref["box"])
    )


def _plain_args(value: Any, depth: int = 0) -> bool:
    """Tool arguments are shallow lists of texts and numbers (the API sends nothing else)."""
    if isinstance(value, list):
        return depth < _MAX_ARG_DEPTH and all(_plain_args(v, depth + 1) for v in value)
    return value is None or isinstance(value, (str, int, float))


def _dispatch(dispatch: Dispatch, msg: dict, n_images: int) -> dict:
    """Check a worker's tool request, then run it through ``dispatch``; always a reply dict."""
    tool, ref, args = msg.get("tool"), msg.get("ref"), msg.get("args")
    if tool not in TOOL_NAMES:
        return {"ok": False, "error": f"unknown tool {str(tool)[:40]!r}"}
    if not isinstance(args, list) or not _plain_args(args):
        return {"ok": False, "error": f"{tool}: invalid arguments"}
    refs = ref if isinstance(ref, list) else [ref]
    if not refs or not all(_valid_ref(r, n_images) for r in refs):
        return {"ok": False, "error": f"{tool}: invalid image patch reference"}
    try:
        return {"ok": True, "value": dispatch(tool, ref, args)}
    except Exception as e:  # the message goes back to the program as a tool error
        return {"ok": False, "error": f"{tool}: {e}"}


def _no_tools(tool, ref, args):
    raise RuntimeError("no tools in this run")
