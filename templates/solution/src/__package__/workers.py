"""Where the server runs the engines: worker processes that can be stopped and whose memory is capped.

Each worker is a process with its own ``Solution`` (the engines and one sandbox worker). The
server hands a worker one request at a time (the image bytes, query and choices) and waits for
its answer until the request's deadline:

- a worker still busy at the deadline is killed with its sandbox process and replaced, so no
  engine keeps computing an answer nobody waits for (the request gets its 504);
- a worker that grows more than ``max_mb`` past its size at start while it works is killed and
  replaced (the request gets a 503); one still grown by more than half of that after a request
  is replaced, so memory goes back to the system instead of staying with an idle worker;
- a worker that dies (a crash, the kernel's OOM killer) is replaced; its request gets a 503.

Workers are forked from one fork server that has imported the engines' libraries and built
the engines (``preload``): a replacement starts in milliseconds, not seconds. Models are loaded
by each worker before it takes requests (never in the fork server: torch's thread pools do not
survive a fork), so a request never pays for loading them.

``run_job`` is the work itself (decode at the engines' working size, run the program); the
server calls it in-process when it is given a ``Solution`` (tests, embedding).
This file is copied verbatim by ``visforge export``.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import psutil

from builder.core.images import ImageError, ImageTooLarge, decode_working
from builder.core.video import VideoError, VideoReader, VideoTooLarge, is_video_path

PRELOAD = f"{__package__}.preload"  # imported once by the fork server


class JobError(Exception):
    """A request that cannot be answered: ``status`` is its HTTP status (picklable, unlike HTTPException)."""

    def __init__(self, status: int, detail: str, retry_after: int | None = None):
        super().__init__(status, detail, retry_after)
        self.status, self.detail, self.retry_after = status, detail, retry_after


@dataclass(frozen=True)
class Job:
    """One request's work: encoded inputs as ``(name, bytes)``, and the program's other inputs."""

    files: list[tuple[str, bytes]]
    max_pixels: int
    max_side: int
    query: str | None = None
    choices: list[str] | None = None
    queries: list[str] | None = None
    batch: bool = False  # one prediction per file (``/predict/batch``) instead of one for all


def is_video(name: str, data: bytes) -> bool:
    """An MP4/QuickTime upload: by its name, or by the ISO media 'ftyp' box at its start."""
    return is_video_path(name) or data[4:8] == b"ftyp"


def trim_memory() -> None:
    """Give freed heap back to the OS (glibc; a no-op elsewhere)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _decode_all(files: list[tuple[str, bytes]], job: Job, working_side: int) -> list:
    """Every image decoded and verified at the engines' working size (a phone photo costs what a
    working-size image costs); a video becomes a lazy reader whose frames the tool calls decode."""
    try:
        return [VideoReader(data, name) if is_video(name, data)
                else decode_working(data, working_side, name, max_pixels=job.max_pixels, max_side=job.max_side)
                for name, data in files]
    except (ImageTooLarge, VideoTooLarge) as e:
        raise JobError(413, str(e)) from None
    except (ImageError, VideoError) as e:
        raise JobError(400, str(e)) from None


def run_job(solution, job: Job, deadline: float) -> dict[str, Any]:
    """Decode ``job``'s inputs and run the program: a ``Prediction`` dict, or ``{"results": [...]}``
    for a batch. Bad inputs raise ``JobError`` (400/413)."""
    arrays = _decode_all(job.files, job, solution.engines.working_side())
    if not job.batch:
        return solution.predict(arrays, job.query, job.choices, deadline=deadline)
    items = [{"images": [a], "query": job.queries[i] if job.queries is not None else job.query,
              "choices": job.choices, "id": f"item{i}"} for i, a in enumerate(arrays)]
    return {"results": solution.predict_many(items, deadline=deadline)}


def _warm(engines) -> None:
    """Load every engine's model now (engines load them lazily, on first use)."""
    for kind in ("detector", "vqa", "captioner", "matcher", "ocr"):
        engine = getattr(engines, kind, None)
        if engine is None:
            continue
        if hasattr(type(engine), "model"):  # the shapes engines: a property that loads the net
            _ = engine.model
        elif callable(getattr(engine, "_load", None)):  # the Hugging Face and OCR backends
            engine._load()


def _worker_main(conn, cache_dir: str | None, timeout_s: float, threads: int) -> None:
    """A worker's life: build the solution from the fork server's engines, answer jobs until told to stop."""
    import importlib

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when workers stop (Ctrl+C drains)
    if "torch" in sys.modules and not os.environ.get("OMP_NUM_THREADS"):
        sys.modules["torch"].set_num_threads(threads)  # the workers share the cores, not each take them all
    from .runtime import Solution

    engines = importlib.import_module(PRELOAD).engines()
    solution = Solution(workers=1, cache_dir=cache_dir, timeout_s=timeout_s, engines=engines)
    try:
        _warm(engines)
        _ = solution.sandbox.layers  # starts the sandbox worker now, not on the first request
        conn.send(("ready", solution.engines.working_side()))
        while True:
            try:
                message = conn.recv()
            except EOFError:  # the server is gone
                return
            if message is None:
                return
            job, deadline = message
            try:
                reply: tuple = ("ok", run_job(solution, job, deadline))
            except JobError as e:
                reply = ("error", e.status, e.detail)
            except Exception as e:  # noqa: BLE001 - reported to the request, the worker carries on
                reply = ("error", 500, f"{type(e).__name__}: {e}")
            conn.send(reply)
            del message, job, reply  # the decoded images go with the job (no gc.collect: 0.3 s here)
            trim_memory()  # hand their heap back
    finally:
        solution.close()


class _Worker:
    """One worker process, seen from the server."""

    def __init__(self, ctx, cache_dir: str | None, timeout_s: float, threads: int):
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(child, cache_dir, timeout_s, threads), daemon=True,
                                   name="solution-worker")
        self.process.start()
        child.close()
        self.ps = psutil.Process(self.process.pid)
        self.base_mb = 0.0

    def wait_ready(self, timeout: float) -> int:
        """The worker's working side, once it has loaded its engines."""
        if not self.conn.poll(timeout):
            raise RuntimeError(f"an engine worker did not start within {timeout:g} s")
        try:
            what, side = self.conn.recv()
        except EOFError:
            raise RuntimeError(f"an engine worker exited while starting (exit code {self.process.exitcode})") from None
        self.base_mb = self.rss_mb()
        return side

    def rss_mb(self) -> float:
        """The worker's resident memory (cheap to read: checked every 0.1 s while it works)."""
        try:
            return self.ps.memory_info().rss / 2**20
        except psutil.Error:
            return 0.0

    def grown_mb(self) -> float:
        """How much the worker has grown since it was ready."""
        return self.rss_mb() - self.base_mb

    def kill(self) -> None:
        """Kill the worker and its sandbox processes now."""
        try:
            children = self.ps.children(recursive=True)
        except psutil.Error:
            children = []
        for p in [self.ps, *children]:
            try:
                p.kill()
            except psutil.Error:
                pass
        self.process.join(5)
        self.conn.close()

    def stop(self) -> None:
        """Ask an idle worker to finish; kill it if it does not within two seconds."""
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.process.join(2)
        if self.process.is_alive():
            self.kill()
        else:
            self.conn.close()


class EngineWorkers:
    """``n`` worker processes, each answering one request at a time (see the module docstring)."""

    def __init__(self, n: int, cache_dir: str | None = None, timeout_s: float = 30.0, max_mb: float = 1024,
                 start_timeout_s: float = 600.0):
        self.ctx = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload([PRELOAD])
        self.cache_dir, self.timeout_s, self.max_mb = cache_dir, timeout_s, float(max_mb)
        self.start_timeout_s = start_timeout_s
        self.threads = max(1, (os.cpu_count() or 1) // max(1, n))  # torch threads per worker
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._lock = threading.Lock()
        self._live: set[_Worker] = set()
        self._closed = False
        started = [self._spawn() for _ in range(max(1, n))]
        sides = [w.wait_ready(start_timeout_s) for w in started]
        self.working_side = sides[0]
        for w in started:
            self._idle.put(w)

    def _spawn(self) -> _Worker:
        w = _Worker(self.ctx, self.cache_dir, self.timeout_s, self.threads)
        with self._lock:
            self._live.add(w)
        return w

    def _replace(self, old: _Worker | None) -> None:
        """Retire ``old`` (killed, or stopped when idle) and start a worker in its place, in the background."""
        if old is not None:
            with self._lock:
                self._live.discard(old)

        def start():
            if self._closed:
                return
            w = self._spawn()
            try:
                w.wait_ready(self.start_timeout_s)
            except RuntimeError:
                w.kill()
                with self._lock:
                    self._live.discard(w)
                if not self._closed:
                    time.sleep(1)
                    self._replace(None)  # try again: the server keeps its number of workers
                return
            self._idle.put(w)

        threading.Thread(target=start, name="solution-worker-start", daemon=True).start()

    def run(self, job: Job, deadline: float) -> dict[str, Any]:
        """``job``'s answer from the next free worker; ``TimeoutError`` past ``deadline`` (the worker
        is killed), ``JobError`` for bad inputs (400/413) and for a worker lost on the way (503)."""
        while True:
            try:
                w = self._idle.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError from None
            if w.process.is_alive():
                break
            w.kill()  # died while idle (the OOM killer, say): replaced, and the next one is taken
            self._replace(w)
        try:
            try:
                w.conn.send((job, deadline))
            except OSError:
                raise JobError(503, "the worker for this request stopped; it was replaced, retry",
                               retry_after=1) from None
            reply = self._wait(w, deadline)
        except BaseException:
            w.kill()
            self._replace(w)
            raise
        if w.grown_mb() > self.max_mb / 2:
            threading.Thread(target=w.stop, daemon=True).start()
            self._replace(w)
        else:
            self._idle.put(w)
        if reply[0] == "error":
            raise JobError(reply[1], reply[2])
        return reply[1]

    def _wait(self, w: _Worker, deadline: float) -> tuple:
        checks = 0
        while not w.conn.poll(min(0.05, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                raise TimeoutError
            if not w.process.is_alive():
                raise JobError(503, f"the worker running this request stopped (exit code {w.process.exitcode}); "
                                    "it was replaced, retry", retry_after=1)
            checks += 1
            if checks % 2 == 0 and w.grown_mb() > self.max_mb:  # every 0.1 s
                raise JobError(503, f"the request grew its worker by more than {self.max_mb:g} MB (the cap); "
                                    "the worker was replaced", retry_after=1)
        try:
            return w.conn.recv()
        except EOFError:
            raise JobError(503, "the worker running this request stopped; it was replaced, retry",
                           retry_after=1) from None

    def close(self) -> None:
        """Stop every worker (busy ones are killed)."""
        self._closed = True
        with self._lock:
            rest, self._live = list(self._live), set()
        idle = []
        while True:
            try:
                idle.append(self._idle.get_nowait())
            except queue.Empty:
                break
        for w in idle:  # all asked at once, then waited for
            try:
                w.conn.send(None)
            except OSError:
                pass
        end = time.monotonic() + 2
        for w in rest:
            w.process.join(max(0.0, end - time.monotonic()) if w in idle else 0)
            if w.process.is_alive():
                w.kill()


class InProcess:
    """The same interface over a ``Solution`` in this process (no stopping, no memory cap)."""

    def __init__(self, solution):
        self.solution = solution
        self.working_side = solution.engines.working_side()

    def run(self, job: Job, deadline: float) -> dict[str, Any]:
        """``job``'s answer, computed in the calling thread."""
        try:
            return run_job(self.solution, job, deadline)
        finally:
            trim_memory()

    def close(self) -> None:
        """Nothing to stop: the caller owns the solution."""
