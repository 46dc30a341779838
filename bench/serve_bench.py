"""Bounded load test of both servers, with the in-process runtime as the baseline; prints JSON.

1. The exported solution ('count the red circles', shapes engines): its HTTP server (a real
   process on 127.0.0.1, ``--workers`` sandbox workers) under ``--clients`` concurrent clients for
   ``--seconds`` (at most ``--max-requests``), against ``Solution.predict`` called in-process by the
   same number of threads, in the same run. Overhead = server p50 / in-process p50.
2. The planner server (``visforge serve planner``, the committed causal-LM planner): completions
   under the same bounded load, against ``Engine.generate`` in-process; ``/health`` latency is
   sampled throughout.

Per phase: requests, req/s, p50/p99 ms, errors, the server's peak RSS. Loopback only; every loop
is bounded in count and time. Writes bench/results/serve_bench.json.

    .venv/bin/python bench/serve_bench.py [--clients 8] [--seconds 10] [--max-requests 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from servers import free_port, stop_process  # noqa: E402
from test_export import ENV, PROGRAM, _make_workspace  # noqa: E402  (the same task the tests export)

from builder.methods.export import export_solution  # noqa: E402


def _stats(latencies: list[float], errors: int, seconds: float) -> dict:
    lat = sorted(latencies)

    def pct(q):
        return round(1000 * lat[min(len(lat) - 1, int(q * len(lat)))], 2) if lat else None

    return {"requests": len(lat) + errors, "ok": len(lat), "errors": errors, "seconds": round(seconds, 2),
            "req_per_s": round(len(lat) / seconds, 2) if seconds else None, "p50_ms": pct(0.5), "p99_ms": pct(0.99)}


def load(call, clients: int, seconds: float, max_requests: int) -> dict:
    """``call()`` from ``clients`` threads until ``seconds`` pass or ``max_requests`` are made."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    left = [max_requests]
    end = time.monotonic() + seconds

    def worker():
        while time.monotonic() < end:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= 1
            t0 = time.perf_counter()
            try:
                ok = call()
            except Exception:  # noqa: BLE001 - a failed request is counted, not raised
                ok = False
            dt = time.perf_counter() - t0
            with lock:
                if ok:
                    latencies.append(dt)
                else:
                    errors[0] += 1

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 120)
    return _stats(latencies, errors[0], time.monotonic() - t0)


def _rss(proc: psutil.Process) -> tuple[int, int]:
    """(the process's RSS, with its children's: the sandbox workers) in bytes."""
    own = proc.memory_info().rss
    return own, own + sum(c.memory_info().rss for c in proc.children(recursive=True))


class RssSampler:
    """Peak RSS of a process (and its children: the sandbox workers) sampled every 100 ms."""

    def __init__(self, pid: int):
        self.proc = psutil.Process(pid)
        self.peak = self.own_peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                own, total = _rss(self.proc)
            except psutil.Error:
                break
            self.own_peak, self.peak = max(self.own_peak, own), max(self.peak, total)
            time.sleep(0.1)

    def now_mb(self) -> float:
        return round(self.proc.memory_info().rss / 2**20, 1)

    def stop(self) -> dict:
        self._stop.set()
        self._t.join(2)
        return {"server_peak_rss_mb": round(self.own_peak / 2**20, 1),
                "with_workers_peak_rss_mb": round(self.peak / 2**20, 1)}


def _wait_health(url: str, proc: subprocess.Popen, timeout: float = 120) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return time.monotonic() - t0
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"{url}: no /health within {timeout} s")


def _tree_rss_mb(pid: int) -> float:
    return round(_rss(psutil.Process(pid))[1] / 2**20, 1)


def _photos(png: bytes, size: tuple[int, int], n: int) -> list[bytes]:
    """``n`` JPEGs of the task's scene at a photo's size: the scene centred on a canvas of the
    photo's aspect (so circles stay circles), enlarged; each differs in one corner pixel block so
    no request is answered from the tool cache."""
    import io

    from PIL import Image

    scene = Image.open(io.BytesIO(png)).convert("RGB")
    side = scene.height
    canvas_w = max(side, round(side * size[0] / size[1]))
    out = []
    for i in range(n):
        canvas = Image.new("RGB", (canvas_w, side), (215, 215, 215))
        canvas.paste(scene, ((canvas_w - scene.width) // 2, 0))
        canvas.putpixel((0, 0), (215 - i % 40, 215, 215))
        buf = io.BytesIO()
        canvas.resize(size, Image.Resampling.BICUBIC).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def bench_photos(url: str, pid: int, png: bytes, side: int, a) -> dict:
    """Real-photo cases beside a working-size image, in the same server: p50 latency (sequential),
    the process tree's peak memory under ``--clients`` concurrent clients, and after idling."""
    n = a.photo_requests + a.clients * a.photo_requests
    wide = round(side * 4 / 3)
    cases = {f"working_size_{wide}x{side}_jpeg": _photos(png, (wide, side), n),
             "photo_2000x1500_jpeg": _photos(png, (2000, 1500), n),
             "photo_12mp_jpeg": _photos(png, (4000, 3000), n)}
    start = _tree_rss_mb(pid)
    out: dict = {"start_tree_rss_mb": start}
    client = httpx.Client(timeout=120, limits=httpx.Limits(max_connections=a.clients))
    for name, photos in cases.items():
        lat, values = [], set()
        for data in photos[: a.photo_requests]:
            t0 = time.perf_counter()
            r = client.post(f"{url}/predict", files={"image": ("p.jpg", data, "image/jpeg")})
            lat.append(time.perf_counter() - t0)
            values.add(json.dumps(r.json().get("value")) if r.status_code == 200 else f"HTTP {r.status_code}")
        rss = RssSampler(pid)
        left = iter(photos[a.photo_requests:])

        def one(left=left, first=photos[0]) -> bool:
            data = next(left, first)
            return client.post(f"{url}/predict", files={"image": ("p.jpg", data, "image/jpeg")}).status_code == 200

        burst = load(one, a.clients, a.photo_seconds, a.clients * a.photo_requests)
        peak = rss.stop()["with_workers_peak_rss_mb"]
        time.sleep(a.idle_seconds)
        out[name] = {"bytes": len(photos[0]), "p50_ms": round(1000 * sorted(lat)[len(lat) // 2], 1),
                     "answers": sorted(values), "burst": burst, "peak_tree_rss_mb": peak,
                     "peak_growth_mb": round(peak - start, 1), "idle_tree_rss_mb": _tree_rss_mb(pid)}
    client.close()
    base = out[f"working_size_{wide}x{side}_jpeg"]["p50_ms"]
    for name in ("photo_2000x1500_jpeg", "photo_12mp_jpeg"):
        out[name]["p50_ratio_to_working_size"] = round(out[name]["p50_ms"] / base, 2)
    out["idle_back_within_pct_of_start"] = round(100 * (out["photo_12mp_jpeg"]["idle_tree_rss_mb"] - start) / start, 1)
    return out


def _tree_cpu_percent(pid: int, seconds: float) -> float:
    """CPU use of a process and its descendants over ``seconds`` (100 = one core busy): each process
    alive at the end counts from the start (or from its birth); one killed in between is left out."""
    def snapshot() -> dict:
        out = {}
        for p in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
            try:
                t = p.cpu_times()
                out[(p.pid, p.create_time())] = t.user + t.system
            except psutil.Error:
                pass
        return out

    before = snapshot()
    time.sleep(seconds)
    after = snapshot()
    return round(100 * sum(t - before.get(key, 0.0) for key, t in after.items()) / seconds, 1)


def bench_deadline(src: Path, env: dict, tmp: Path, png: bytes, a) -> dict:
    """A server whose deadline is shorter than a 12 MP photo's work: when is a late request
    answered (504, relative to the deadline), and is the CPU idle again within a second?"""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "red_circles", "serve", "--port", str(port), "--workers", "1",
                             "--timeout", str(a.deadline), "--log-level", "warning"],
                            env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    late, cpu_after = [], []
    codes: dict[int, int] = {}
    try:
        _wait_health(url, proc)
        for data in _photos(png, (4000, 3000), a.deadline_requests):
            t0 = time.perf_counter()
            r = httpx.post(f"{url}/predict", files={"image": ("p.jpg", data, "image/jpeg")}, timeout=60)
            took = time.perf_counter() - t0
            codes[r.status_code] = codes.get(r.status_code, 0) + 1
            if r.status_code == 504:
                late.append(round(took - a.deadline, 3))
                cpu_after.append((_tree_cpu_percent(proc.pid, 1.0), _tree_cpu_percent(proc.pid, 0.5)))
    finally:
        stop_process(proc)
    return {"deadline_s": a.deadline, "codes": codes, "answered_after_deadline_s_max": max(late, default=None),
            "cpu_percent_in_the_second_after_a_504_max": max((c for c, _ in cpu_after), default=None),
            "cpu_percent_1_to_1.5_s_after_a_504_max": max((c for _, c in cpu_after), default=None)}


def bench_solution(tmp: Path, a) -> dict:
    ws = _make_workspace(tmp / "task")
    ws.accept(ws.add_program(PROGRAM).version)
    project = export_solution(ws, tmp / "solution", build=False, verify=False).project_dir
    src = project / "src"
    image = next((ws.root / "images").glob("*.png")).read_bytes()
    env = {**ENV, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "red_circles", "serve", "--port", str(port), "--workers",
                             str(a.workers), "--max-queue", str(4 * a.clients), "--log-level", "warning"],
                            env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out: dict = {"workers": a.workers}
    try:
        out["start_s"] = round(_wait_health(url, proc), 2)
        rss = RssSampler(proc.pid)
        client = httpx.Client(timeout=60, limits=httpx.Limits(max_connections=a.clients))
        files = {"image": ("a.png", image, "image/png")}
        client.post(f"{url}/predict", files=files).raise_for_status()  # warm the sandbox workers
        out["idle_rss_mb"] = rss.now_mb()
        out["http"] = load(lambda: client.post(f"{url}/predict", files=files).status_code == 200,
                           a.clients, a.seconds, a.max_requests)
        out["http"].update(rss.stop())
        out["rss_after_mb"] = rss.now_mb()
        client.close()
        side = int(httpx.get(f"{url}/health", timeout=5).json().get("working_side", 1280))
        out["photos"] = bench_photos(url, proc.pid, image, side, a)
    finally:
        stop_process(proc)
    out["deadline"] = bench_deadline(src, env, tmp, image, a)
    # The baseline: the same runtime called in-process (decode + predict), same threads, same run.
    sys.path.insert(0, str(src))
    from red_circles.runtime import Solution

    from builder.core.images import decode_image

    with Solution(workers=a.workers) as sol:
        sol.predict([decode_image(image)])
        out["in_process"] = load(lambda: sol.predict([decode_image(image)])["ok"], a.clients, a.seconds,
                                 a.max_requests)
    h, b = out["http"], out["in_process"]
    if h["p50_ms"] and b["p50_ms"]:
        out["overhead_p50_ratio"] = round(h["p50_ms"] / b["p50_ms"], 2)
        out["throughput_ratio"] = round(h["req_per_s"] / b["req_per_s"], 2)
    return out


def bench_planner(a) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**ENV, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "builder.interfaces.cli", "serve", "planner", "--port", str(port),
                             "--max-queue", str(4 * a.clients)], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    body = {"model": "visforge-planner", "prompt": "query: How many red circles are there?\n", "max_tokens": 16,
            "temperature": 0}
    out: dict = {}
    try:
        out["start_s"] = round(_wait_health(url, proc), 2)
        rss = RssSampler(proc.pid)
        client = httpx.Client(timeout=60, limits=httpx.Limits(max_connections=a.clients + 1))
        client.post(f"{url}/v1/completions", json=body).raise_for_status()
        out["idle_rss_mb"] = rss.now_mb()
        health: list[float] = []
        stop = threading.Event()

        def poll():
            with httpx.Client(timeout=5) as h:
                while not stop.is_set():
                    t0 = time.perf_counter()
                    try:
                        h.get(f"{url}/health")
                        health.append(time.perf_counter() - t0)
                    except httpx.HTTPError:
                        health.append(float("inf"))
                    time.sleep(0.05)

        poller = threading.Thread(target=poll)
        poller.start()
        out["http"] = load(lambda: client.post(f"{url}/v1/completions", json=body).status_code == 200,
                           a.clients, a.seconds, a.max_requests)
        # a 1 MB prompt under load: refused before tokenizing
        t0 = time.perf_counter()
        big = client.post(f"{url}/v1/completions", json={**body, "prompt": "a" * 1_000_000})
        out["megabyte_prompt"] = {"status": big.status_code, "ms": round(1000 * (time.perf_counter() - t0), 1)}
        stop.set()
        poller.join()
        out["http"].update(rss.stop())
        hs = sorted(health)
        out["health_under_load"] = {"samples": len(hs), "p50_ms": round(1000 * hs[len(hs) // 2], 2),
                                    "max_ms": round(1000 * hs[-1], 2)}
        client.close()
    finally:
        stop_process(proc)
    from builder.planner.causal import load_causal_planner
    from builder.planner.server import Engine, Params

    engine = Engine(load_causal_planner())
    p = Params(n=1, temperature=0.0, top_p=1.0, max_tokens=16, stop=[], stream=False, include_usage=False, seed=None)
    out["in_process"] = load(lambda: bool(engine.generate(body["prompt"], p, "prompt")), a.clients, a.seconds,
                             a.max_requests)
    engine.shutdown()
    h, b = out["http"], out["in_process"]
    if h["p50_ms"] and b["p50_ms"]:
        out["overhead_p50_ratio"] = round(h["p50_ms"] / b["p50_ms"], 2)
        out["throughput_ratio"] = round(h["req_per_s"] / b["req_per_s"], 2)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--max-requests", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2, help="the solution server's sandbox workers")
    ap.add_argument("--photo-requests", type=int, default=5, help="sequential requests per photo case")
    ap.add_argument("--photo-seconds", type=float, default=10.0, help="concurrent burst per photo case")
    ap.add_argument("--idle-seconds", type=float, default=5.0, help="idle time before the after-idle memory")
    ap.add_argument("--skip-planner", action="store_true")
    ap.add_argument("--deadline", type=float, default=0.05, help="the deadline server's --timeout (s)")
    ap.add_argument("--deadline-requests", type=int, default=6)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "serve_bench.json"))
    a = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result = {"command": "python bench/serve_bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "load_avg_1m": round(os.getloadavg()[0], 2)},
              "clients": a.clients, "seconds": a.seconds, "max_requests": a.max_requests}
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        result["solution"] = bench_solution(Path(tmp), a)
    if not a.skip_planner:
        result["planner"] = bench_planner(a)
    text = json.dumps(result, indent=1)
    print(text)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
