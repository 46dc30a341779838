"""Running programs on examples: metric, per-example errors, traces, cache, through the sandbox."""

import numpy as np
import pytest
from PIL import Image

from builder.executor import Sandbox
from builder.run import ExampleInput, run_batch, run_program
from builder.tools.cache import ToolCache
from builder.tools.engines import Answer, Detection
from builder.tools.host import Engines
from builder.tools.trace import trace_to_html


class BrightDetector:
    """Finds each bright square block (test engine; sees pixels only)."""

    backend_id, version = "test:bright", "1"

    def __init__(self):
        self.calls = 0

    def detect(self, image, query, threshold=None):
        self.calls += 1
        from scipy import ndimage

        labels, n = ndimage.label(image[:, :, 0] > 200)
        out = []
        for sl in ndimage.find_objects(labels):
            ys, xs = sl
            out.append(Detection((xs.start, ys.start, xs.stop, ys.stop), 0.9, query))
        return out


class MeanVQA:
    backend_id, version = "test:vqa", "1"

    def answer(self, image, question):
        return Answer("yes" if image.mean() > 50 else "no", 0.7)


@pytest.fixture
def examples(tmp_path):
    out = []
    for n in range(4):
        img = np.zeros((40, 80, 3), np.uint8)
        for k in range(n):
            img[5:15, 5 + 18 * k: 15 + 18 * k] = 255
        path = tmp_path / f"{n}.png"
        Image.fromarray(img).save(path)
        out.append(ExampleInput([str(path)], query="How many squares?", expected=n, id=f"img{n}"))
    (tmp_path / "bad.png").write_bytes(b"not an image")
    out.append(ExampleInput([str(tmp_path / "bad.png")], expected=0, id="corrupt"))
    return out


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(workers=2) as sb:
        yield sb


def test_batch_scores_and_keeps_errors(examples, sandbox, tmp_path):
    engines = Engines(detector=BrightDetector(), vqa=MeanVQA())
    cache = ToolCache(tmp_path / "cache")
    src = "def execute(image):\n    return len(image.find('square'))\n"
    res = run_batch(src, examples, "count", engines=engines, cache=cache, sandbox=sandbox, progress=False)
    assert (res.n, res.correct, res.errors) == (5, 4, 1)
    bad = res.results[-1]
    assert bad.error_kind == "image" and "bad.png: not a recognised image format" in bad.error
    assert engines.detector.calls == 4 and res.cache_misses == 4 + 5  # tool calls + whole-run lookups
    again = run_batch(src, examples, "count", engines=engines, cache=cache, sandbox=sandbox, progress=False)
    assert engines.detector.calls == 4 and again.cache_hits == 4 and again.correct == 4
    assert [r.value for r in again.results] == [r.value for r in res.results]
    # Another program on the same images re-runs (its own memo) but reuses the cached tool calls.
    other = run_batch(src.replace("return len", "return 0 + len"), examples, "count", engines=engines,
                      cache=cache, sandbox=sandbox, progress=False)
    assert other.correct == 4 and engines.detector.calls == 4 and other.cache_hits == 4
    # A changed engine version invalidates both layers.
    engines.detector.version = "2"
    run_batch(src, examples, "count", engines=engines, cache=cache, sandbox=sandbox, progress=False)
    assert engines.detector.calls == 8
    engines.detector.version = "1"
    wrong = run_batch("def execute(image):\n    return 'many'\n", examples[:4], "count", engines=engines,
                      sandbox=sandbox, progress=False)
    assert wrong.correct == 0 and wrong.errors == 0
    broken = run_batch("def execute(image):\n    return image.find('x')[9]\n", examples[:2], "count",
                       engines=engines, sandbox=sandbox, progress=False)
    assert broken.errors == 2 and "line 2" in broken.results[0].error and "IndexError" in broken.results[0].error


def test_run_program_trace(examples, sandbox):
    engines = Engines(detector=BrightDetector(), vqa=MeanVQA())
    src = "def execute(image):\n    return [p for p in image.find('square') if p.verify('bright?')]\n"
    res, trace = run_program(src, examples[2], engines, sandbox, inspect=True)
    assert res.error is None and len(res.value) == 2
    assert [s.tool for s in trace.steps] == ["find", "verify", "verify"]
    assert trace.steps[0].result[0]["box"] == [5, 5, 15, 15]
    page = trace_to_html(trace, [np.asarray(Image.open(examples[2].images[0]).convert("RGB"))])
    assert "3. verify" in page and page.count("<img") >= 4


def test_missing_engine_is_a_tool_error(examples, sandbox):
    res, _ = run_program("def execute(image):\n    return image.caption()\n", examples[1], Engines(), sandbox)
    assert res.error_kind == "tool" and "no captioner engine is configured" in res.error


class SlowVQA(MeanVQA):
    def __init__(self):
        self.calls = 0

    def answer(self, image, question):
        import time

        self.calls += 1
        time.sleep(0.05)
        return super().answer(image, question)


def test_a_deadline_stops_the_program_and_its_tool_calls():
    """Past the caller's deadline no engine is called and the run ends as a timeout, promptly."""
    import time

    slow = SlowVQA()
    img = np.zeros((32, 32, 3), np.uint8)
    source = "def execute(image):\n    n = 0\n    for i in range(1000):\n        n += image.verify('x?')\n    return n\n"
    with Sandbox(workers=1) as sandbox:
        t0 = time.monotonic()
        res, _ = run_program(source, ExampleInput(["a.png"]), Engines(vqa=slow), sandbox, images=[img],
                             deadline=t0 + 0.6)
        took = time.monotonic() - t0
        assert res.error_kind in ("timeout", "tool"), res
        assert took < 1.6, took
        calls = slow.calls
        assert 3 <= calls < 30
        time.sleep(0.3)
        assert slow.calls == calls  # nothing keeps running after the answer
        late, _ = run_program(source, ExampleInput(["a.png"]), Engines(vqa=slow), sandbox, images=[img],
                              deadline=time.monotonic() - 1)
        assert late.error_kind == "timeout" and slow.calls == calls
