"""The tool host: crops, engine calls mapped back to image coordinates, cache, trace, errors."""

import numpy as np
import pytest

from builder.tools.cache import ToolCache
from builder.tools.engines import Answer, Detection, TextSpan
from builder.tools.host import Engines, ToolError, ToolHost
from builder.tools.profile import ProfileError, build_engines, load_profile
from builder.tools.trace import Trace, trace_to_html


class FakeDetector:
    backend_id, version = "fake:det", "1"

    def __init__(self):
        self.calls = 0

    def detect(self, image, query, threshold=None):
        self.calls += 1
        # Every bright pixel block is an object; report the crop-relative box of all of them.
        ys, xs = np.nonzero(image[:, :, 0] > 200)
        if not len(xs):
            return []
        return [Detection((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1), 0.9, query)]


class FakeVQA:
    backend_id, version = "fake:vqa", "1"

    def answer(self, image, question):
        return Answer("yes" if image[:, :, 0].mean() > 100 else "no", 0.8)


class FakeMatcher:
    backend_id, version = "fake:match", "1"

    def scores(self, image, texts):
        return [float(image.mean()) * (1 if "bright" in t else -1) for t in texts]


class FakeOCR:
    backend_id, version = "fake:ocr", "1"

    def read(self, image):
        return [TextSpan("HELLO", (0, 0, 5, 5), 0.99), TextSpan("42", (6, 0, 9, 5), 0.9)]


def image():
    img = np.zeros((40, 60, 3), np.uint8)
    img[10:20, 30:45] = 255
    return img


def engines():
    return Engines(detector=FakeDetector(), vqa=FakeVQA(), matcher=FakeMatcher(), ocr=FakeOCR())


def test_find_maps_boxes_back_to_image_coordinates():
    host = ToolHost(engines(), [image()])
    found = host("find", {"image": 0, "box": [20, 5, 60, 40]}, ["square"])
    assert found == [{"box": [30, 10, 45, 20], "score": 0.9}]
    assert host("verify", {"image": 0, "box": [30, 10, 45, 20]}, ["is it bright?"]) is True
    assert host("verify", {"image": 0, "box": [0, 0, 10, 10]}, ["is it bright?"]) is False
    assert host("read_text", {"image": 0, "box": [0, 0, 60, 40]}, []) == "HELLO 42"
    dark = image() // 4
    two = ToolHost(engines(), [dark, image()])
    refs = [{"image": 0, "box": [0, 0, 60, 40]}, {"image": 1, "box": [0, 0, 60, 40]}]
    assert two("best_image_match", refs, ["a bright square"]) == 1
    assert two("best_text_match", refs[1], [["dark", "bright"]]) == 1


@pytest.mark.parametrize(
    ("tool", "ref", "args", "msg"),
    [
        ("find", {"image": 3, "box": [0, 0, 5, 5]}, ["x"], "out of range"),
        ("find", {"image": 0, "box": [70, 0, 90, 5]}, ["x"], "is empty"),
        ("find", {"image": 0, "box": [0, 0, 5, 5]}, [""], "non-empty text"),
        ("find", {"image": 0, "box": [0, 0, 5, 5]}, ["x" * 5000], "longer than"),
        ("find", "not a ref", ["x"], "expected an image patch"),
        ("caption", {"image": 0, "box": [0, 0, 5, 5]}, [], "no captioner engine"),
        ("read_text", {"image": 0, "box": [0, 0, 5, 5]}, ["x"], "takes no arguments"),
        ("best_text_match", {"image": 0, "box": [0, 0, 5, 5]}, [[]], "list of 1 to"),
        ("rm_rf", {"image": 0, "box": [0, 0, 5, 5]}, [], "unknown tool"),
    ],
)
def test_bad_calls_are_tool_errors(tool, ref, args, msg):
    trace = Trace()
    host = ToolHost(engines(), [image()], trace=trace)
    with pytest.raises(ToolError, match=msg):
        host(tool, ref, args)
    assert trace.steps[-1].error and msg in trace.steps[-1].error


def test_engine_exception_is_reported_not_raised_raw():
    class Broken(FakeDetector):
        def detect(self, image, query, threshold=None):
            raise RuntimeError("CUDA out of memory")

    host = ToolHost(Engines(detector=Broken()), [image()])
    with pytest.raises(ToolError, match="find failed in the detector engine: RuntimeError: CUDA out of memory"):
        host("find", {"image": 0, "box": [0, 0, 60, 40]}, ["x"])


def test_cache_hits_on_rerun_and_misses_on_change(tmp_path):
    eng = engines()
    cache = ToolCache(tmp_path / "cache")
    ref = {"image": 0, "box": [0, 0, 60, 40]}
    first = ToolHost(eng, [image()], cache=cache)("find", ref, ["square"])
    trace = Trace()
    again = ToolHost(eng, [image()], cache=cache, trace=trace)("find", ref, ["square"])
    assert again == first and eng.detector.calls == 1 and trace.steps[0].cached
    ToolHost(eng, [image()], cache=cache)("find", ref, ["circle"])  # other argument
    changed = image()
    changed[0, 0] = 1
    ToolHost(eng, [changed], cache=cache)("find", ref, ["square"])  # other pixels
    eng.detector.version = "2"
    ToolHost(eng, [image()], cache=cache)("find", ref, ["square"])  # other engine version
    assert eng.detector.calls == 4
    cache.close()
    reopened = ToolCache(tmp_path / "cache")  # persistent across processes/sessions
    eng.detector.version = "1"
    ToolHost(eng, [image()], cache=reopened)("find", ref, ["square"])
    assert eng.detector.calls == 4 and reopened.hits == 1


def test_trace_html_draws_steps():
    trace = Trace(source="def execute(image):\n    return image.find('square')")
    host = ToolHost(engines(), [image()], trace=trace)
    trace.value = host("find", {"image": 0, "box": [0, 0, 60, 40]}, ["square"])
    page = trace_to_html(trace, [image()])
    assert page.count("<img") >= 3 and "1. find" in page and "[30, 10, 45, 20]" in page
    assert "&lt;" not in trace.source and "def execute" in page
    again = Trace.from_dict(trace.to_dict())
    assert again.steps[0].result == trace.steps[0].result


def test_profiles():
    assert set(load_profile("shapes")) == {"detector", "vqa", "captioner", "matcher", "ocr", "embedder"}
    assert load_profile("hf")["vqa"]["model"] == "Salesforce/blip-vqa-base"
    with pytest.raises(ProfileError, match="unknown engine kind 'segmenter'"):
        load_profile({"segmenter": {"backend": "hf"}})
    with pytest.raises(ProfileError, match="unknown backend 'magic'"):
        load_profile({"vqa": {"backend": "magic"}})
    with pytest.raises(ProfileError, match="no such profile"):
        load_profile("nonexistent")
    with pytest.raises(ProfileError, match="needs a mapping"):
        load_profile({"vqa": "shapes"})
    with pytest.raises(ProfileError, match="rejected its options"):
        build_engines({"ocr": {"backend": "rapidocr", "colour": "red"}})


def test_tool_table_agrees_with_the_program_api():
    """Every program API name that calls the host is listed by exactly one ToolSpec, and back."""
    import inspect

    from builder.methods.export import FUNCTION_ENGINES, METHOD_ENGINES
    from builder.tools import api
    from builder.tools.specs import TOOLS

    calling = set()
    for name, member in [*vars(api.ImagePatch).items(), *vars(api.VideoSegment).items(),
                         *api.PROGRAM_API.items()]:
        if inspect.isfunction(member) and not name.startswith("_"):
            src = inspect.getsource(member)
            if "_call(" in src or "self.find(" in src:
                calling.add(name)
    listed = [c for spec in TOOLS.values() for c in spec.callers]
    assert sorted(listed) == sorted(set(listed)) and set(listed) == calling
    assert set(METHOD_ENGINES) | set(FUNCTION_ENGINES) == calling
    assert all(spec.doc for spec in TOOLS.values())


class SizeRecordingDetector(FakeDetector):
    def __init__(self):
        super().__init__()
        self.shapes = []

    def detect(self, image, query, threshold=None):
        self.shapes.append(image.shape)
        return super().detect(image, query, threshold)


def test_engines_see_a_bounded_image_and_programs_keep_original_coordinates():
    big = np.zeros((3000, 4000, 3), np.uint8)  # a 12-megapixel photo
    big[1000:1400, 2000:2800] = 255
    det = SizeRecordingDetector()
    host = ToolHost(Engines(detector=det), [big], working_side=1000)
    assert host.image_sizes() == [(4000, 3000)]
    whole = host("find", {"image": 0, "box": [0, 0, 4000, 3000]}, ["object"])
    assert det.shapes[-1] == (750, 1000, 3)
    assert whole[0]["box"] == [2000, 1000, 2800, 1400]
    part = host("find", {"image": 0, "box": [1800, 800, 3000, 1600]}, ["object"])  # a patch of the photo
    assert max(det.shapes[-1][:2]) <= 300
    assert part[0]["box"] == [2000, 1000, 2800, 1400]
    small = ToolHost(Engines(detector=SizeRecordingDetector()), [image()], working_side=1000)
    assert small.images[0] is not None and small.images[0].shape == (40, 60, 3)  # small images are untouched
