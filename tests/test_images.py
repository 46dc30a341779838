"""Image loading refuses bad input with errors that name the image and the problem."""

import io

import numpy as np
import pytest
from PIL import Image

from builder.core.images import ImageError, decode_image, load_image


def png_bytes(w=8, h=6, mode="RGB"):
    buf = io.BytesIO()
    Image.new(mode, (w, h), 128).save(buf, format="PNG")
    return buf.getvalue()


def test_good_images_become_rgb_arrays(tmp_path):
    for mode in ("RGB", "L", "RGBA", "P"):
        arr = decode_image(png_bytes(mode=mode))
        assert arr.shape == (6, 8, 3) and arr.dtype == np.uint8
    (tmp_path / "a.png").write_bytes(png_bytes())
    assert load_image(tmp_path / "a.png").shape == (6, 8, 3)


def test_bad_images(tmp_path):
    good = png_bytes(64, 64)
    with pytest.raises(ImageError, match="x.png: corrupt or truncated"):
        decode_image(good[: len(good) // 2], "x.png")
    with pytest.raises(ImageError, match="not a recognised image format"):
        decode_image(b"GIF89a-not-really" + b"\0" * 50)
    with pytest.raises(ImageError, match="empty file"):
        decode_image(b"")
    with pytest.raises(ImageError, match="over the 100-pixel limit"):
        decode_image(png_bytes(20, 20), max_pixels=100)
    with pytest.raises(ImageError, match="file not found"):
        load_image(tmp_path / "missing.png")


def test_decompression_bomb_refused_before_decoding():
    # A 20000 x 20000 PNG compresses to a few hundred KB; it must be refused by its header.
    buf = io.BytesIO()
    Image.new("L", (20000, 20000), 0).save(buf, format="PNG")
    with pytest.raises(ImageError, match="(over the .*-pixel limit|too large)"):
        decode_image(buf.getvalue(), "bomb.png", max_pixels=10_000_000)
