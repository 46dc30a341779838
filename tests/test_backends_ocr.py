"""RapidOCR backend on text rendered with PIL: real PP-OCRv4 weights from the wheel, offline.

onnxruntime writes ``~/.cache/Microsoft/DeveloperTools/.onnxruntime`` (a device id and a small
database) when its first session starts, and only ``HOME`` moves it; the engine fixture points
``HOME`` at a scratch directory while the sessions start, so the tests leave the user's home
untouched. Each ``read`` costs about a second on two cores, so the engine is shared and the
images are few.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rapidocr_onnxruntime")

from PIL import Image, ImageDraw, ImageFont

from builder.tools.backends.ocr import RapidOCREngine, reading_order
from builder.tools.engines import OCREngine, TextSpan


def _norm(text: str) -> str:
    # PP-OCRv4 (a Chinese + English model) often drops the narrow space between Latin words
    # in one line ("VISFORGE 42" -> "VISFORGE42"), so spaces are compared removed.
    return "".join(text.split()).upper()


@pytest.fixture(scope="module")
def ocr(tmp_path_factory) -> RapidOCREngine:
    engine = RapidOCREngine(threads=1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(tmp_path_factory.mktemp("ocr_home")))
        engine.warmup()
    return engine


@pytest.fixture(scope="module")
def page():
    """White page: a headline, then one line with a word on each side; and the ink boxes."""
    img = Image.new("RGB", (520, 200), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=40)
    lines = {"VISFORGE 42": (20, 20), "RIGHT": (330, 112), "LEFT": (20, 110)}
    boxes = {}
    for text, xy in lines.items():
        draw.text(xy, text, fill="black", font=font)
        # The ink itself: textbbox includes the glyphs' side bearings, a few pixels wide.
        x0, y0, x1, y1 = draw.textbbox(xy, text, font=font)
        ys, xs = np.nonzero(np.asarray(img)[y0:y1, x0:x1, 0] < 128)
        boxes[text] = (x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1)
    return np.asarray(img), boxes


def test_engine_protocol_and_ids():
    engine = RapidOCREngine()
    assert isinstance(engine, OCREngine)
    assert engine.backend_id.startswith("rapidocr:1.")
    assert engine._ocr is None  # sessions start on the first read
    assert RapidOCREngine(min_score=0.8).version != engine.version
    with pytest.raises(ValueError, match="min_score"):
        RapidOCREngine(min_score=2)


def test_reads_rendered_text_exactly_in_reading_order(ocr, page):
    image, ink = page
    spans = ocr.read(image)
    assert [_norm(s.text) for s in spans] == ["VISFORGE42", "LEFT", "RIGHT"]
    for span, text in zip(spans, ["VISFORGE 42", "LEFT", "RIGHT"], strict=True):
        assert isinstance(span, TextSpan) and all(type(v) is int for v in span.box)
        x0, y0, x1, y1 = span.box
        assert 0 <= x0 < x1 <= image.shape[1] and 0 <= y0 < y1 <= image.shape[0]
        # The box surrounds the ink, with no more than a small margin.
        ix0, iy0, ix1, iy1 = ink[text]
        assert x0 <= ix0 + 1 and y0 <= iy0 + 1 and x1 >= ix1 - 1 and y1 >= iy1 - 1, (span, ink[text])
        assert ix0 - x0 < 15 and iy0 - y0 < 15 and x1 - ix1 < 15 and y1 - iy1 < 15
        assert 0.5 <= span.score <= 1.0


def test_blank_image_reads_nothing(ocr):
    assert ocr.read(np.full((60, 120, 3), 255, dtype=np.uint8)) == []


def test_reading_order_groups_lines_before_columns():
    def span(text, x0, y0, x1, y1):
        return TextSpan(text, (x0, y0, x1, y1), 1.0)

    # "b" sits 3 px higher than "a" on the same line; "c" is on the next line.
    spans = [span("c", 0, 50, 30, 70), span("b", 100, 7, 140, 27), span("a", 0, 10, 40, 30)]
    assert [s.text for s in reading_order(spans)] == ["a", "b", "c"]
    assert reading_order([]) == []
