"""Benchmark an exported solution as a customer runs it; prints one JSON object.

Exports a 'count the red circles' shapes-world workspace (offline default engines), installs
the wheel into a fresh virtual environment, then measures: wheel sizes, export and install
time, cold start (server process start -> first /predict answered), and requests per second
for single and batch predictions over a bounded loop on 127.0.0.1.

    .venv/bin/python bench/export_bench.py [--requests 40] [--batch 8] [--workers 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from servers import free_port  # noqa: E402
from test_export import ENV, PROGRAM, _make_workspace  # noqa: E402  (the same task the tests export)

from builder.methods.export import export_solution  # noqa: E402


def _timed_requests(client: httpx.Client, url: str, make_files, n: int) -> float:
    """Seconds for ``n`` sequential requests (each must succeed)."""
    t0 = time.perf_counter()
    for _ in range(n):
        r = client.post(url, files=make_files())
        r.raise_for_status()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40, help="requests per timed loop")
    parser.add_argument("--batch", type=int, default=8, help="images per batch request")
    parser.add_argument("--workers", type=int, default=1, help="sandbox workers of the server")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="export-bench-") as tmp:
        tmp = Path(tmp)
        ws = _make_workspace(tmp)
        ws.accept(ws.add_program(PROGRAM).version)
        t0 = time.perf_counter()
        res = export_solution(ws)
        export_s = time.perf_counter() - t0

        env_dir = tmp / "venv"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, env=ENV)
        pip = subprocess.run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", "-c", str(res.lock_file),
                              "--find-links", str(res.wheels[1].parent), str(res.wheel)],
                             capture_output=True, text=True, env=ENV)
        if pip.returncode != 0:
            raise SystemExit(f"installing the exported wheel failed:\n{pip.stderr[-3000:]}")
        install_s = time.perf_counter() - t0

        images = [ws.resolve_image(ex.image).read_bytes() for ex in ws.load_task().examples]
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        t0 = time.perf_counter()
        proc = subprocess.Popen([str(env_dir / "bin" / res.name), "serve", "--port", str(port), "--workers",
                                 str(args.workers), "--log-level", "warning"], env=ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with httpx.Client(timeout=120) as client:
                while True:  # cold start: until the first prediction is answered
                    if proc.poll() is not None:
                        raise SystemExit(f"server exited with {proc.returncode}")
                    try:
                        r = client.post(f"{url}/predict", files={"image": ("a.png", images[0], "image/png")})
                        r.raise_for_status()
                        break
                    except httpx.TransportError:
                        time.sleep(0.05)
                cold_s = time.perf_counter() - t0
                single_s = _timed_requests(
                    client, f"{url}/predict",
                    lambda: {"image": ("a.png", images[0], "image/png")}, args.requests)
                batch_files = [("images", (f"{i}.png", images[i % len(images)], "image/png")) for i in range(args.batch)]
                n_batch = max(1, args.requests // args.batch)
                batch_s = _timed_requests(client, f"{url}/predict/batch", lambda: batch_files, n_batch)
        finally:
            proc.terminate()
            proc.wait(timeout=30)

        print(json.dumps({
            "machine": f"{platform.machine()}, {os.cpu_count()} cpus (shared)",
            "engines": res.manifest["engines"],
            "wheel_bytes": res.wheel.stat().st_size,
            "visforge_wheel_bytes": res.wheels[1].stat().st_size,
            "export_seconds": round(export_s, 2),
            "fresh_venv_install_seconds": round(install_s, 2),
            "cold_start_to_first_answer_seconds": round(cold_s, 2),
            "single": {"requests": args.requests, "requests_per_second": round(args.requests / single_s, 1),
                       "ms_per_request": round(1000 * single_s / args.requests, 1)},
            "batch": {"requests": n_batch, "images_per_request": args.batch,
                      "requests_per_second": round(n_batch / batch_s, 2),
                      "images_per_second": round(n_batch * args.batch / batch_s, 1)},
            "server_sandbox_workers": args.workers,
        }, indent=2))


if __name__ == "__main__":
    main()
