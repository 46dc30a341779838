"""The executor on good programs: values, printing, parameters, multi-image, threads."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from builder.executor import Limits, Sandbox, ValidationError, validate


def dispatch(tool, ref, args):
    if tool == "find":
        return [{"box": [5, 5, 15, 15], "score": 0.8}, {"box": [30, 5, 40, 15], "score": 0.6}]
    if tool == "query":
        return f"answer to {args[0]}"
    if tool == "best_image_match":
        return len(ref) - 1
    if tool == "best_text_match":
        return 1
    raise ValueError(tool)


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(workers=2, limits=Limits(timeout_s=5)) as sb:
        yield sb


def test_values_and_patches(sandbox):
    src = (
        "def execute(image):\n"
        "    found = image.find('circle')\n"
        "    print('found', len(found))\n"
        "    a, b = found\n"
        "    return {'n': len(found), 'left': leftmost(found), 'ok': a.left_of(b), 'crop': image.crop(0, 0, 10, 10),\n"
        "            'w': image.width, 's': {3, 1, 2}, 't': (1, 2.5), 'q': a.query('color?')}\n"
    )
    res = sandbox.run(src, image_sizes=[(64, 48)], dispatch=dispatch)
    assert res.ok, res.error
    assert res.value == {
        "n": 2, "left": {"box": [5, 5, 15, 15], "image": 0, "score": 0.8}, "ok": True,
        "crop": {"box": [0, 0, 10, 10], "image": 0, "score": 1.0}, "w": 64, "s": [1, 2, 3], "t": [1, 2.5],
        "q": "answer to color?",
    }
    assert res.stdout == "found 2\n" and res.tool_calls == 2


def test_query_choices_and_multi_image(sandbox):
    res = sandbox.run("def execute(image, query):\n    return query.upper()\n", [(8, 8)], dispatch, query="how many?")
    assert res.value == "HOW MANY?"
    res = sandbox.run("def execute(image, choices):\n    return best_text_match(image, choices)\n", [(8, 8)],
                      dispatch, choices=["a", "b"])
    assert res.value == 1
    res = sandbox.run("def execute(image):\n    return [best_image_match(image, 'x'), len(image)]\n",
                      [(8, 8), (9, 9), (7, 7)], dispatch, multi_image=True)
    assert res.value == [2, 3]
    res = sandbox.run("def execute(image, query=None, extra=3):\n    return extra\n", [(8, 8)], dispatch)
    assert res.value == 3


def test_helpers_and_runtime_error_line(sandbox):
    src = "def helper(x):\n    return x * 2\n\ndef execute(image):\n    y = helper(3)\n    return y / 0\n"
    res = sandbox.run(src, [(8, 8)], dispatch)
    assert not res.ok and res.error.kind == "runtime" and res.error.line == 6
    assert "ZeroDivisionError" in res.error.message


def test_threads_share_the_pool(sandbox):
    src = "def execute(image):\n    return image.width * 2\n"
    with ThreadPoolExecutor(4) as pool:
        out = list(pool.map(lambda w: sandbox.run(src, [(w, 5)], dispatch).value, range(1, 41)))
    assert out == [2 * w for w in range(1, 41)]


def test_validate_standalone():
    validate("def execute(image):\n    return image.count('red circle')\n")
    with pytest.raises(ValidationError) as e:
        validate("def execute(image):\n    import os\n")
    assert e.value.line == 2 and "import" in str(e.value)
    with pytest.raises(ValidationError, match="named 'main'"):
        validate("def execute(image):\n    return 1\n", entry="main")


def test_timeout_then_fresh_worker():
    with Sandbox(workers=1, limits=Limits(timeout_s=0.5)) as sb:
        res = sb.run("def execute(image):\n    while True:\n        pass\n", [(8, 8)], dispatch)
        assert res.error.kind == "timeout"
        assert sb.run("def execute(image):\n    return 7\n", [(8, 8)], dispatch).value == 7


def test_workers_outlive_the_threads_that_used_them():
    """Workers started on behalf of short-lived threads keep serving after those threads end."""
    import threading

    with Sandbox(workers=2, limits=Limits(timeout_s=5)) as sb:
        for _ in range(3):
            threads = [threading.Thread(target=sb.run, args=("def execute(image):\n    return 1\n", [(4, 4)],
                                                               dispatch)) for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        results = [sb.run("def execute(image):\n    return 3\n", [(4, 4)], dispatch) for _ in range(6)]
        assert all(r.ok and r.value == 3 for r in results), [r.error for r in results]


def test_attribute_assignment_is_refused_with_line():
    with pytest.raises(ValidationError) as e:
        validate("def execute(image):\n    x = 1\n    ImagePatch.find = len\n")
    assert e.value.line == 3 and "assigning" in str(e.value)
    validate("def execute(image):\n    d = {}\n    d['a'] = image.left\n    return d\n")  # items are fine


def test_host_checks_tool_requests_before_dispatch():
    """What a compromised worker might send never reaches ``dispatch`` unchecked."""
    from builder.executor.sandbox import _dispatch

    seen = []

    def spy(tool, ref, args):
        seen.append(tool)
        return 1

    good_ref = {"image": 0, "box": [0, 0, 4, 4]}
    bad = [
        {"tool": "os.system", "ref": good_ref, "args": []},
        {"tool": "find", "ref": good_ref, "args": "x"},
        {"tool": "find", "ref": good_ref, "args": [[[["deep"]]]]},
        {"tool": "find", "ref": good_ref, "args": [{"a": 1}]},
        {"tool": "find", "ref": {"image": 2, "box": [0, 0, 4, 4]}, "args": ["x"]},
        {"tool": "find", "ref": {"image": True, "box": [0, 0, 4, 4]}, "args": ["x"]},
        {"tool": "find", "ref": {"image": 0, "box": [0, 0, 4.5, 4]}, "args": ["x"]},
        {"tool": "find", "ref": {"image": 0, "box": [0, 0, 4]}, "args": ["x"]},
        {"tool": "best_image_match", "ref": [], "args": ["x"]},
    ]
    for msg in bad:
        reply = _dispatch(spy, msg, n_images=2)
        assert reply["ok"] is False and reply["error"], msg
    assert seen == []
    assert _dispatch(spy, {"tool": "find", "ref": good_ref, "args": ["x"]}, 2) == {"ok": True, "value": 1}
    failing = _dispatch(lambda *a: 1 / 0, {"tool": "query", "ref": good_ref, "args": ["q"]}, 2)
    assert failing["ok"] is False and failing["error"].startswith("query:")


def test_frames_refuse_garbage_and_honour_deadlines():
    import json
    import os
    import struct
    import time

    from builder.executor.protocol import FrameError, read_frame, write_frame

    r, w = os.pipe()
    try:
        for payload in (b"[" * 20_000 + b"]" * 20_000, b'{"a": ' + b"9" * 5000 + b"}", b"\xff\xfe", b"[1]"):
            os.write(w, struct.pack(">I", len(payload)) + payload)
            with pytest.raises(FrameError):
                read_frame(r, time.monotonic() + 1)
        os.write(w, struct.pack(">I", 10**9))
        with pytest.raises(FrameError, match="limit"):
            read_frame(r, time.monotonic() + 1, max_bytes=1000)
        with pytest.raises(TimeoutError):
            read_frame(r, time.monotonic() + 0.05)
        # Nobody reads: a write past the pipe buffer must give up at its deadline, not hang.
        os.set_blocking(w, False)
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            write_frame(w, {"x": "y" * 1_000_000}, time.monotonic() + 0.2)
        assert time.monotonic() - t0 < 1
        assert json.loads(json.dumps({"ok": 1}))  # sanity: json itself untouched
    finally:
        os.close(r)
        os.close(w)


def test_worker_imports_stay_light():
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import builder.executor.worker; "
        "print(sorted(m for m in ('numpy', 'torch', 'PIL', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-I", "-c", code, root], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_workers_get_a_clean_environment_and_leave_nothing_behind(monkeypatch):
    import os

    import psutil

    monkeypatch.setenv("VISFORGE_TEST_SECRET", "hunter2")
    me = psutil.Process(os.getpid())
    before = {p.pid for p in me.children(recursive=True)}
    sb = Sandbox(workers=2, limits=Limits(timeout_s=0.5))
    sb.run("def execute(image):\n    while True:\n        pass\n", [(4, 4)], dispatch)  # killed, replaced
    assert sb.run("def execute(image):\n    return 1\n", [(4, 4)], dispatch).value == 1
    mine = [p for p in me.children(recursive=True) if p.pid not in before]
    assert mine
    for p in mine:
        env = p.environ()
        assert "VISFORGE_TEST_SECRET" not in env and set(env) <= {"PATH", "LANG", "PWD"}, env  # bwrap sets PWD
    sb.close()
    gone, alive = psutil.wait_procs(mine, timeout=3)
    assert not alive, alive
