"""Image loading refuses bad input with errors that name the image and the problem."""

import io
from pathlib import Path

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


def _displayed():
    """A 6x4 picture whose every pixel differs, so any wrong flip or turn shows."""
    return (np.arange(6 * 4 * 3).reshape(4, 6, 3) * 3).astype(np.uint8)


# How a camera stores a picture for each EXIF orientation (the inverse of what a viewer does),
# written from the EXIF spec's row/column description, not from Pillow's table.
_STORED = {
    1: lambda d: d,
    2: lambda d: d[:, ::-1],
    3: lambda d: d[::-1, ::-1],
    4: lambda d: d[::-1, :],
    5: lambda d: d.transpose(1, 0, 2),
    6: lambda d: np.rot90(d, 1),
    7: lambda d: d[::-1, ::-1].transpose(1, 0, 2),
    8: lambda d: np.rot90(d, -1),
}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_decoded_as_displayed(orientation):
    stored = Image.fromarray(np.ascontiguousarray(_STORED[orientation](_displayed())))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    stored.save(buf, format="PNG", exif=exif)
    np.testing.assert_array_equal(decode_image(buf.getvalue()), _displayed())


def test_a_phone_jpeg_turned_on_its_side_is_read_upright():
    upright = np.zeros((40, 60, 3), np.uint8)
    upright[:10, :20] = (255, 0, 0)  # red block at the displayed top-left
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1))).save(buf, format="JPEG", quality=95, exif=exif)
    got = decode_image(buf.getvalue())
    assert got.shape == (40, 60, 3)
    assert got[2:8, 2:18, 0].mean() > 200 and got[30:, 40:, 0].mean() < 40


def test_sixteen_bit_images_keep_their_values():
    grey = np.array([[0, 257 * 64], [257 * 128, 65535]], dtype=np.uint16)
    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, format="PNG")
    got = decode_image(buf.getvalue())
    np.testing.assert_array_equal(got[..., 0], [[0, 64], [128, 255]])
    assert (got[..., 0] == got[..., 2]).all()
    rgb16 = io.BytesIO()  # 16-bit RGB PNG (Pillow reads it as 8-bit RGB): the values must survive
    import zlib

    rows = b"".join(b"\0" + np.array([[[65535, 0, 257 * 100]] * 2], ">u2").tobytes() for _ in range(2))

    def chunk(kind, data):
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    rgb16.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", (2).to_bytes(4, "big") * 2 + bytes([16, 2, 0, 0, 0]))
                + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    np.testing.assert_array_equal(decode_image(rgb16.getvalue())[0, 0], [255, 0, 100])


def test_special_files_are_refused_before_they_are_read(tmp_path):
    import os

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    link = tmp_path / "env.png"
    link.symlink_to("/proc/self/environ")
    for path, message in ((Path("/proc/self/environ"), "a system file"), (Path("/dev/zero"), "a system file"),
                          (link, "a system file"), (fifo, "a FIFO"), (tmp_path, "a folder"),
                          (text, "not a recognised image format")):
        with pytest.raises(ImageError, match=message) as err:
            load_image(path)
        assert str(path) in str(err.value)


def _photo(w=4000, h=3000, orientation=None) -> bytes:
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([(xx * 255 // w), (yy * 255 // h), np.full_like(xx, 90)], -1).astype(np.uint8)
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90, exif=exif)
    return buf.getvalue()


@pytest.mark.parametrize("orientation", [None, 6])
def test_a_phone_photo_is_decoded_at_working_size_with_its_displayed_size(orientation):
    from builder.core.images import decode_working

    data = _photo(orientation=orientation)
    work = decode_working(data, 1000, "photo.jpg")
    full = decode_image(data, "photo.jpg")
    assert work.size == (full.shape[1], full.shape[0]) == ((3000, 4000) if orientation else (4000, 3000))
    assert max(work.pixels.shape[:2]) == 1000 and work.pixels.shape[2] == 3
    shrunk = np.asarray(Image.fromarray(full).resize(work.pixels.shape[1::-1], Image.Resampling.BOX))
    assert np.abs(shrunk.astype(int) - work.pixels.astype(int)).mean() < 3  # the same picture, smaller
    with pytest.raises(ImageError, match="photo.jpg: corrupt or truncated"):
        decode_working(data[: len(data) // 3], 1000, "photo.jpg")


def test_a_small_image_is_decoded_whole_for_engines():
    from builder.core.images import decode_working

    work = decode_working(png_bytes(8, 6), 1000)
    assert work.size == (8, 6) and work.pixels.shape == (6, 8, 3)
