"""Export: a shapes-world workspace exported, built, installed in a fresh venv and served.

The expensive part (export, fresh venv, install, server start) happens once per module; the
tests then talk to the installed package the way a customer would: its CLI, its HTTP server
on a localhost port, and its own generated acceptance tests.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from servers import free_port, stop_process

from builder.core.taskcard import TaskCard
from builder.core.workspace import Workspace
from builder.domains.shapes.world import render_scene, sample_scene
from builder.methods.export import ExportError, engines_used, export_solution, pin_profile

PROGRAM = 'def execute(image):\n    return image.count("red circle")\n'
SEEDS = (5, 14, 30, 37)  # counts 0, 1, 1, 1
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def _make_workspace(root: Path) -> Workspace:
    """A 'count the red circles' task over rendered shapes scenes (ground truth from the scene)."""
    images = root / "src"
    images.mkdir(parents=True)
    examples = []
    for seed in SEEDS:
        scene = sample_scene(seed, n_objects=(4, 7))
        render_scene(scene).save(images / f"s{seed}.png")
        n = sum(o.color == "red" and o.shape == "circle" for o in scene.objects)
        examples.append({"id": f"s{seed}", "image": f"s{seed}.png", "query": "How many red circles are there?",
                         "expected": n})
    card = TaskCard.model_validate({"name": "red-circles", "description": "Count the red circles.",
                                    "output": "count", "examples": examples})
    return Workspace.init(root / "ws", card, images_from=images)


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=ENV, **kw)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Workspace:
    ws = _make_workspace(tmp_path_factory.mktemp("export"))
    ws.accept(ws.add_program(PROGRAM).version)
    return ws


@pytest.fixture(scope="module")
def exported(workspace):
    return export_solution(workspace)


@pytest.fixture(scope="module")
def venv(exported, tmp_path_factory) -> Path:
    """A fresh virtual environment with the exported wheel (and pytest) installed."""
    env_dir = tmp_path_factory.mktemp("venv") / "env"
    proc = _run([sys.executable, "-m", "venv", env_dir])
    assert proc.returncode == 0, proc.stderr
    pip = [env_dir / "bin" / "python", "-m", "pip", "install", "-q"]
    proc = _run([*pip, "-c", exported.lock_file, "--find-links", exported.wheels[1].parent, exported.wheel,
                 "pytest", "httpx"], timeout=600)  # the test extra, as the exported README installs it
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return env_dir


def _start_server(venv: Path, exported, *args: str, log_name: str = "server.log") -> tuple[subprocess.Popen, str]:
    """The installed solution's HTTP server as a real process on a free localhost port, once it answers /health."""
    port = free_port()
    log = venv.parent / log_name
    with open(log, "w") as out:
        proc = subprocess.Popen([str(venv / "bin" / exported.name), "serve", "--port", str(port), *args],
                                stdout=out, stderr=subprocess.STDOUT, env=ENV)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            stop_process(proc)
            raise AssertionError("server did not start within 120 s")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def server(venv, exported):
    """The installed solution's HTTP server as a real process on a free localhost port."""
    proc, url = _start_server(venv, exported, "--max-request-mb", "2", "--max-pixels", "4000000",
                              "--log-level", "warning")
    try:
        yield url
    finally:
        stop_process(proc)


def _examples(workspace):
    card = workspace.load_task()
    return [(workspace.resolve_image(ex.image), ex.expected) for ex in card.examples]


# ---- cheap checks ----------------------------------------------------------------------------
def test_engines_used_reads_tool_calls_from_the_ast():
    assert engines_used(PROGRAM) == {"detector"}
    src = "def execute(image, query):\n    p = image.find('x')[0]\n    return best_text_match(p, [query]), p.verify('q')\n"
    assert engines_used(src) == {"detector", "matcher", "vqa"}
    with pytest.raises(ExportError, match="does not parse"):
        engines_used("def execute(image:\n")


def test_pin_profile_requires_pinned_hub_models(tmp_path):
    with pytest.raises(ExportError, match="not pinned"):
        pin_profile({"vqa": {"backend": "hf", "model": "org/not-cached-model"}}, {"vqa"})
    rev = "a" * 40
    pinned, files, extras = pin_profile({"vqa": {"backend": "hf", "model": "org/m", "revision": rev}}, {"vqa"})
    assert pinned == {"vqa": {"backend": "hf", "model": "org/m", "revision": rev}} and extras == {"ml"}
    local = tmp_path / "my-model"
    local.mkdir()
    pinned, files, _ = pin_profile({"vqa": {"backend": "hf", "model": str(local)}}, {"vqa"})
    assert pinned["vqa"]["model"] == "asset:models/vqa-model/my-model" and files == {"models/vqa-model/my-model": local}
    assert pin_profile({"vqa": {"backend": "shapes"}}, {"vqa"})[2] == {"ml"}  # a torch network
    with pytest.raises(ExportError, match="configures none"):
        pin_profile({}, {"detector"})


def test_export_needs_an_accepted_program(tmp_path):
    ws = _make_workspace(tmp_path)
    ws.add_program(PROGRAM)
    with pytest.raises(ExportError, match="no accepted program"):
        export_solution(ws)


# ---- the exported project --------------------------------------------------------------------
def test_a_project_only_export_gives_the_install_command_it_can_run(tmp_path):
    """No wheel built, no wheelhouse/: the command installs the project folder, finding the
    pinned VisForge build in wheels/ (no ``--find-links wheelhouse``), and the README says so."""
    ws = _make_workspace(tmp_path)
    ws.accept(ws.add_program(PROGRAM).version)
    res = export_solution(ws, tmp_path / "out", build=False, verify=False)
    assert res.wheel is None and not (res.project_dir / "wheelhouse").exists()
    assert res.install_commands == ["pip install --find-links wheels -c requirements.lock ."]
    assert list((res.project_dir / "wheels").glob("visforge-*.whl"))
    readme = (res.project_dir / "README.md").read_text()
    assert ".venv/bin/pip install --find-links wheels -c requirements.lock ." in readme
    assert "without building its wheel (no `wheelhouse/`)" in readme


def test_export_layout(exported, workspace):
    root = exported.project_dir
    assert root == workspace.root / "exports" / "red-circles-1.0.1"
    pkg = root / "src" / "red_circles"
    assert (pkg / "assets" / "program.py").read_text() == PROGRAM
    manifest = json.loads((pkg / "assets" / "manifest.json").read_text())
    assert manifest["engines"] == {"detector": {"backend": "shapes"}}  # only what the program calls
    assert manifest["examples"] == {"n": len(SEEDS), "verified": True, "passed": len(SEEDS)}
    assert manifest["default_query"] == "How many red circles are there?"
    pyproject = (root / "pyproject.toml").read_text()
    assert f'"visforge=={manifest["visforge"]}"' in pyproject and '"fastapi==' in pyproject
    assert "+src." in manifest["visforge"]  # the pin names this exact source build
    lock = (root / "requirements.lock").read_text()
    assert "numpy==" in lock and "uvicorn==" in lock
    assert exported.wheel.is_file() and exported.wheel.name == "red_circles-1.0.1-py3-none-any.whl"
    assert [w.name.split("-")[0] for w in exported.wheels] == ["red_circles", "visforge"]
    assert exported.install_commands[0] == "pip install --find-links wheelhouse -c requirements.lock red-circles"
    assert not list(root.rglob("*.egg-info")) and not (root / "build").exists()
    with pytest.raises(ExportError, match="already exists"):
        export_solution(workspace, build=False, verify=False)


# ---- the installed package -------------------------------------------------------------------
def test_server_answers_single_and_batch(server, workspace):
    examples = _examples(workspace)
    health = httpx.get(f"{server}/health").json()
    assert health["status"] == "ok" and health["program_version"] == 1
    for path, expected in examples:
        r = httpx.post(f"{server}/predict", files={"image": (path.name, path.read_bytes(), "image/png")}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["ok"] and r.json()["value"] == expected
    files = [("images", (p.name, p.read_bytes(), "image/png")) for p, _ in examples]
    r = httpx.post(f"{server}/predict/batch", files=files, timeout=120)
    assert r.status_code == 200, r.text
    assert [res["value"] for res in r.json()["results"]] == [e for _, e in examples]
    schema = httpx.get(f"{server}/openapi.json").json()
    assert {"/health", "/predict", "/predict/batch"} <= set(schema["paths"])


def test_server_refuses_bad_requests_and_keeps_serving(server, workspace):
    path, expected = _examples(workspace)[0]
    good = path.read_bytes()

    def post(endpoint, **kw):
        r = httpx.post(f"{server}{endpoint}", timeout=60, **kw)
        body = r.json()
        assert set(body) == {"error", "detail"} and body["detail"], body
        return r.status_code, body

    status, body = post("/predict", files={"image": ("bad.png", good[: len(good) // 2], "image/png")})
    assert status == 400 and "bad.png" in body["detail"]
    status, body = post("/predict", files={"image": ("x.png", b"not an image at all", "image/png")})
    assert status == 400 and "not a recognised image" in body["detail"]
    status, body = post("/predict", files={"image": ("big.png", os.urandom(3 * 1024 * 1024), "image/png")})
    assert status == 413 and "limit" in body["detail"]
    status, body = post("/predict", files={"image": ("wide.png", _png(np.zeros((1000, 5000, 3), np.uint8)), "image/png")})
    assert status == 413 and "pixel" in body["detail"]
    status, body = post("/predict", content=good, headers={"content-type": "image/png"})
    assert status == 415
    status, body = post("/predict/batch", json={"images": []})
    assert status == 415
    status, body = post("/predict/batch")  # no body at all
    assert status == 422 and "images" in body["detail"]
    status, body = post("/predict/batch", content=b"--xx--\r\n", headers={"content-type": "multipart/form-data; boundary=xx"})
    assert status == 422 and "images" in body["detail"]
    status, body = post("/predict/batch", files=[("images", ("a.png", good, "image/png"))], data={"queries": ["a", "b"]})
    assert status == 422 and "queries" in body["detail"]
    # Still serving after all of that.
    r = httpx.post(f"{server}/predict", files={"image": ("ok.png", good, "image/png")}, timeout=60)
    assert r.status_code == 200 and r.json()["value"] == expected


def test_cli_runs_on_images(venv, exported, workspace):
    examples = _examples(workspace)[:2]
    proc = _run([venv / "bin" / exported.name, "run", *(p for p, _ in examples)], timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["value"] for line in lines] == [e for _, e in examples]
    proc = _run([venv / "bin" / exported.name, "run", workspace.root / "task.yaml"], timeout=300)
    assert proc.returncode == 1 and json.loads(proc.stdout)["error_kind"] == "image"


def test_generated_acceptance_tests_pass(venv, exported):
    proc = _run([venv / "bin" / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                cwd=exported.project_dir, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert f"{len(SEEDS) + 3} passed" in proc.stdout  # the examples, the install check, the CLI, the README


def test_server_verifies_every_image_and_refuses_huge_ones_fast(server, workspace):
    import struct

    path, expected = _examples(workspace)[0]
    good = bytearray(path.read_bytes())
    # zero 16 bytes inside the first IDAT chunk, leaving its (now wrong) CRC: corrupt, not truncated
    i = good.find(b"IDAT")
    length = struct.unpack(">I", good[i - 4:i])[0]
    bad = bytes(good[: i + 4 + length // 2] + bytes(16) + good[i + 4 + length // 2 + 16:])
    r = httpx.post(f"{server}/predict", files={"image": ("crc.png", bad, "image/png")}, timeout=60)
    assert r.status_code == 400 and "crc.png" in r.json()["detail"], r.text
    # a 4999 x 4999 single-colour PNG (tens of KB): refused from its header, before decoding
    buf = io.BytesIO()
    Image.new("RGB", (4999, 4999), (20, 200, 20)).save(buf, format="PNG")
    t0 = time.perf_counter()
    r = httpx.post(f"{server}/predict", files={"image": ("huge.png", buf.getvalue(), "image/png")}, timeout=60)
    assert r.status_code == 413 and "4999x4999" in r.json()["detail"], r.text
    assert time.perf_counter() - t0 < 2
    # the same image as base64 text (what schema-driven clients send) is decoded like the file
    import base64

    r = httpx.post(f"{server}/predict", files={"image": ("b64.png", base64.b64encode(bytes(good)), "text/plain")},
                   timeout=60)
    assert r.status_code == 200 and r.json()["value"] == expected, r.text


def _photo(workspace, size: tuple[int, int] = (2000, 1500), i: int = 0) -> bytes:
    """The second example's scene (one red circle) enlarged into a photo-sized JPEG, its aspect kept
    (slower to serve than the scene); ``i`` changes one pixel, so no two photos share a cached result."""
    scene = Image.open(_examples(workspace)[1][0]).convert("RGB")
    side = min(size)
    canvas = Image.new("RGB", size, scene.getpixel((0, 0)))
    canvas.paste(scene.resize((side, side), Image.Resampling.BICUBIC), ((size[0] - side) // 2, (size[1] - side) // 2))
    canvas.putpixel((0, 0), (i % 256, 0, 0))
    buf = io.BytesIO()
    canvas.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _post_all(url: str, photos: list[bytes], replies: list) -> list:
    """POST each photo to /predict from its own thread (started now); each reply is appended to
    ``replies`` as (status or transport error name, Retry-After, body, finish time)."""
    import threading

    def post(data):
        try:
            r = httpx.post(f"{url}/predict", files={"image": ("p.jpg", data, "image/jpeg")}, timeout=120)
            body = r.json()
            replies.append((r.status_code, r.headers.get("retry-after"), body, time.monotonic()))
        except httpx.TransportError as e:
            replies.append((type(e).__name__, None, None, time.monotonic()))

    threads = [threading.Thread(target=post, args=(d,)) for d in photos]
    for t in threads:
        t.start()
    return threads


def _workers(proc: subprocess.Popen) -> set[int]:
    """The server's engine worker processes (forked by its fork server, so not its own children)."""
    import psutil

    found = set()
    for p in psutil.Process(proc.pid).children(recursive=True):
        try:
            if p.ppid() != proc.pid and "forkserver" in " ".join(p.cmdline()):
                found.add(p.pid)
        except psutil.Error:
            pass
    return found


def _gone(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_server_under_load_answers_503_with_retry_after_never_500(venv, exported, workspace):
    """More concurrent requests than one worker and one waiting slot hold: the rest are refused
    with a JSON 503 and Retry-After, never a 500, and the server keeps serving."""
    proc, url = _start_server(venv, exported, "--workers", "1", "--max-queue", "1", "--log-level", "warning",
                              log_name="load.log")
    try:
        replies: list = []
        for t in _post_all(url, [_photo(workspace, i=i) for i in range(8)], replies):
            t.join(180)
        codes = [r[0] for r in replies]
        assert len(codes) == 8 and set(codes) <= {200, 503}, codes
        assert codes.count(200) >= 2 and codes.count(503) >= 1, codes
        for status, retry, body, _ in replies:
            if status == 503:
                assert retry == "1" and body["error"] == "overloaded", body
            else:
                assert body["ok"] and body["value"] == _examples(workspace)[1][1] == 1, body
        path, expected = _examples(workspace)[0]
        r = httpx.post(f"{url}/predict", files={"image": ("ok.png", path.read_bytes(), "image/png")}, timeout=60)
        assert r.status_code == 200 and r.json()["value"] == expected
    finally:
        stop_process(proc)


def test_sigterm_drains_the_server_under_load(venv, exported, workspace):
    """SIGTERM while requests run and wait: they finish (200), requests sent after it get a JSON
    503 with Retry-After, no response is a 500, and the process then exits 0."""
    import signal

    proc, url = _start_server(venv, exported, "--workers", "1", "--max-queue", "16", "--log-level", "warning",
                              log_name="drain.log")
    try:
        before: list = []
        photos = [_photo(workspace, i=i) for i in range(12)]
        later = [_photo(workspace, i=100 + i) for i in range(3)]
        threads = _post_all(url, photos, before)
        deadline = time.monotonic() + 120
        while not before and time.monotonic() < deadline:  # the first answered: the others are queued
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        after: list = []
        threads += _post_all(url, later, after)
        for t in threads:
            t.join(180)
        assert proc.wait(timeout=60) == 0
    finally:
        stop_process(proc)
    codes = [r[0] for r in before + after]
    assert 500 not in codes and set(codes) <= {200, 503, "ConnectError"}, codes
    # requests the server held at the SIGTERM were answered after it
    assert any(status == 200 and done > signalled for status, *_, done in before), before
    refused = [r for r in after if r[0] == 503]
    assert refused, after
    assert all(retry and body["error"] == "shutting_down" for _, retry, body, _ in refused), refused


def test_a_request_past_its_deadline_stops_its_work(venv, exported, workspace):
    """A 12-megapixel photo under a 0.05 s deadline: 504 at the deadline, and the worker doing the
    work is killed (not left computing); a new worker takes its place."""
    proc, url = _start_server(venv, exported, "--workers", "1", "--timeout", "0.05", "--log-level", "warning",
                              log_name="deadline.log")
    try:
        (first,) = _workers(proc)
        photo = _photo(workspace, (4000, 3000))
        t0 = time.monotonic()
        r = httpx.post(f"{url}/predict", files={"image": ("p.jpg", photo, "image/jpeg")}, timeout=60)
        took = time.monotonic() - t0
        assert r.status_code == 504 and r.json()["error"] == "timeout", r.text
        assert took < 1.5, took
        deadline = time.monotonic() + 1.0
        while not _gone(first) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(first), "the worker past the deadline is still running"
        deadline = time.monotonic() + 60
        while not _workers(proc) - {first} and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _workers(proc) - {first}, "no worker replaced the killed one"
        assert httpx.get(f"{url}/health", timeout=5).json()["status"] == "ok"
    finally:
        stop_process(proc)


def test_schemathesis_finds_no_failures(server, tmp_path):
    """Every check schemathesis has, against the installed server, with a schema whose example is a real image."""
    exe = Path(sys.executable).parent / "schemathesis"
    if not exe.exists():
        pytest.skip("schemathesis is not installed (the dev extra)")
    schema = httpx.get(f"{server}/openapi.json").json()
    image = schema["components"]["schemas"]
    assert any("examples" in c.get("properties", {}).get("image", {}).get("items", {}) for c in image.values())
    # Schema-valid bytes need not be an image (400), a dimension can be over the limit (413), and
    # `queries` must have one entry per image (422): a cross-field rule OpenAPI cannot state.
    config = tmp_path / "schemathesis.toml"
    config.write_text('[checks.positive_data_acceptance]\nexpected-statuses = ["2xx", "400", "413", "422"]\n')
    proc = _run([exe, "--config-file", config, "run", f"{server}/openapi.json", "--checks", "all", "--mode",
                 "positive", "--max-examples", "40", "--seed", "1"], cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-5000:]


def test_offline_install_from_the_wheelhouse_outside_the_checkout(exported, tmp_path):
    """One command, no index: the solution and its exact VisForge build come from wheelhouse/.

    The third-party dependencies come from this environment (a .pth line appends its
    site-packages, without running its .pth files, so the editable VisForge stays out of sight).
    """
    import sysconfig

    wheelhouse = exported.project_dir / "wheelhouse"
    assert sorted(w.name.split("-")[0] for w in wheelhouse.glob("*.whl")) == ["red_circles", "visforge"]
    assert "--no-index --find-links wheelhouse red-circles" in (exported.project_dir / "README.md").read_text()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (site / "zz_visforge_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    outside = tmp_path / "customer"
    outside.mkdir()
    proc = _run([sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-index", "--find-links",
                 wheelhouse, "red-circles"], cwd=outside, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    env = {k: v for k, v in ENV.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run([str(py), "-c", "import builder, red_circles; print(builder.__file__, red_circles.__file__)"],
                          cwd=outside, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and all(str(site) in p for p in proc.stdout.split()), proc.stdout + proc.stderr
    proc = subprocess.run([str(venv / "bin" / "red-circles"), "info"], cwd=outside, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and json.loads(proc.stdout)["name"] == "red-circles", proc.stderr


def test_killed_export_leaves_no_debris(tmp_path):
    import signal

    import psutil

    ws = _make_workspace(tmp_path / "k")
    ws.accept(ws.add_program(PROGRAM).version)
    systmp = tmp_path / "systmp"
    systmp.mkdir()
    env = {**ENV, "TMPDIR": str(systmp)}
    code = f"from builder.methods.export import export_solution; export_solution({str(ws.root)!r}, verify=False)"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parent = psutil.Process(proc.pid)
    children: list = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        children = parent.children(recursive=True)
        if any("pip" in " ".join(c.cmdline()) for c in children if c.is_running()):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the export finished before a build tool started"
    time.sleep(0.5)  # well inside the build
    children = parent.children(recursive=True)
    exports = ws.root / "exports"
    assert any(p.name.startswith(".") for p in exports.iterdir())  # the hidden temporary folder exists
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    gone, alive = psutil.wait_procs(children, timeout=20)
    assert not alive, [c.cmdline() for c in alive]
    assert not list(systmp.iterdir()), list(systmp.iterdir())  # nothing in the system temp directory
    reopened = Workspace.open(ws.root)
    assert reopened.summary()["exports"] == []
    assert not list(exports.iterdir()), list(exports.iterdir())  # the debris was removed at open
    # and a new export then works
    result = export_solution(reopened, verify=False)
    assert reopened.summary()["exports"] == [result.project_dir.name]


def test_export_needs_nothing_beyond_visforge_ml_serve():
    """``pip install visforge[ml,serve]`` is enough to export: every package export pins (the
    server's and the generated tests') is a requirement of the base install or of those extras."""
    import tomllib

    from packaging.requirements import Requirement

    from builder.methods.export.project import SERVE_PACKAGES, TEST_PACKAGES

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + project["optional-dependencies"]["ml"] + project["optional-dependencies"]["serve"]
    names = {Requirement(r).name.lower() for r in reqs}
    missing = [p for p in (*SERVE_PACKAGES, *TEST_PACKAGES) if p.lower() not in names]
    assert not missing, f"export needs {missing}, which visforge[ml,serve] does not install"
