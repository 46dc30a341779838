"""Loading images safely: every bad input (missing, corrupt, huge, wrong mode) is a clear error."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from builder.core.atomic import atomic_write_bytes
from builder.core.errors import UserError

MAX_PIXELS = 40_000_000  # about 6300 x 6300; larger images are refused before decoding
MAX_BYTES = 50 * 1024 * 1024
_TURNED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


class ImageError(UserError, ValueError):
    """An image could not be used; the message names the image and the problem."""


class ImageTooLarge(ImageError):
    """An image whose declared size is over a limit (refused before its pixels are decoded)."""


def image_size(data: bytes, name: str = "image") -> tuple[int, int]:
    """(width, height) from the image's header, without decoding a pixel."""
    if not data:
        raise ImageError(f"{name}: empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                return img.size
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"{name}: image is too large (decompression bomb guard)") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not a recognised image format") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{name}: corrupt or truncated image ({e})") from None


def check_image_size(data: bytes, name: str = "image", max_pixels: int = MAX_PIXELS,
                     max_side: int | None = None) -> tuple[int, int]:
    """The header's (width, height), or ``ImageTooLarge`` when a side or the pixel count is over a limit."""
    w, h = image_size(data, name)
    if max_side is not None and max(w, h) > max_side:
        raise ImageTooLarge(f"{name}: {w}x{h} pixels: a side is over the {max_side}-pixel limit")
    if w * h > max_pixels:
        raise ImageTooLarge(f"{name}: {w}x{h} pixels is over the {max_pixels}-pixel limit")
    return w, h


def decode_image(data: bytes, name: str = "image", max_pixels: int = MAX_PIXELS,
                 max_side: int | None = None) -> np.ndarray:
    """Decode encoded image bytes (PNG, JPEG, ...) into an (H, W, 3) uint8 RGB array.

    The size is checked from the header before any pixel is decoded (``ImageTooLarge``); then
    the whole file is verified (for PNG: every chunk's CRC, IDAT included) and fully decoded,
    so a corrupt or truncated file is an ``ImageError``, never a silently wrong picture.
    """
    img, _, _ = _open_checked(data, name, max_pixels, max_side)
    return np.asarray(to_rgb(displayed(img)))


def _open_checked(data: bytes, name: str, max_pixels: int, max_side: int | None,
                  working_side: int | None = None) -> tuple[Image.Image, tuple[int, int], bool]:
    """The decoded image, its stored (width, height) and whether EXIF turns it by 90 degrees.

    Limits are checked from the header first; then the file is verified (for PNG every chunk's
    CRC) and decoded. With ``working_side`` a large JPEG is decoded at 1/2 to 1/8 scale by the
    codec instead (no full-size pixels; truncation still fails the decode).
    """
    if len(data) > MAX_BYTES:
        raise ImageTooLarge(f"{name}: {len(data)} bytes is over the {MAX_BYTES}-byte limit")
    w, h = check_image_size(data, name, max_pixels, max_side)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            turned = img.getexif().get(0x0112) in _TURNED
            scale = working_side / max(w, h) if working_side else 1.0
            if img.format == "JPEG" and scale < 1:
                img.draft("RGB", (max(1, int(w * scale) + 1), max(1, int(h * scale) + 1)))
            else:
                with Image.open(io.BytesIO(data)) as check:
                    check.verify()  # checksums, without keeping pixels
                img = Image.open(io.BytesIO(data))
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLarge(f"{name}: image is too large (decompression bomb guard)") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not a recognised image format") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(f"{name}: corrupt or truncated image ({e})") from None
    if w < 1 or h < 1:
        raise ImageError(f"{name}: image has no pixels")
    return img, (w, h), turned


@dataclass(frozen=True)
class WorkingImage:
    """An image decoded at (at most) the engines' working size, with the size it is displayed at.

    Programs see ``size``; engines see ``pixels``. A phone photo decoded this way costs what a
    working-size image costs (JPEGs are decoded at 1/2 to 1/8 scale by the codec itself).
    """

    pixels: np.ndarray  # (h, w, 3) uint8 RGB, longer side <= the working side
    size: tuple[int, int]  # (width, height) of the displayed original

    @property
    def shape(self) -> tuple[int, ...]:
        """The original's array shape (height, width, 3), as a full decode would have it."""
        return (self.size[1], self.size[0], 3)




def decode_working(data: bytes, working_side: int, name: str = "image", max_pixels: int = MAX_PIXELS,
                   max_side: int | None = None) -> WorkingImage:
    """Decode ``data`` for the engines: at most ``working_side`` pixels on the longer side.

    The same checks as ``decode_image`` (limits from the header, corrupt or truncated files are an
    ``ImageError``), the same orientation and depth handling, but a large JPEG is never decoded at
    full size.
    """
    img, (w, h), turned = _open_checked(data, name, max_pixels, max_side, working_side)
    return WorkingImage(np.asarray(fit_within(to_rgb(displayed(img)), working_side)), (h, w) if turned else (w, h))


def fit_within(img: Image.Image, side: int | None) -> Image.Image:
    """``img`` shrunk (area-averaged) so its longer side is at most ``side``; unchanged if it fits."""
    if side is None or max(img.size) <= side:
        return img
    scale = side / max(img.size)
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.BOX)


def displayed(img: Image.Image) -> Image.Image:
    """The image as a viewer shows it: its EXIF orientation (phone photos) applied to the pixels."""
    try:
        return ImageOps.exif_transpose(img)
    except (OSError, ValueError, SyntaxError) as e:  # a corrupt EXIF block: say so, do not guess
        raise ImageError(f"unreadable EXIF orientation ({e})") from None


_HIGH_DEPTH = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535, "F": 1.0}


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB; 16-bit and 32-bit grey are scaled to 8 bits (``convert`` would clip them to white).

    32-bit integer images are read as 16-bit values (what PNG and TIFF decoders hand back);
    float images are read as 0..1.
    """
    if img.mode in _HIGH_DEPTH:
        scale = 255.0 / _HIGH_DEPTH[img.mode]
        grey = np.clip(np.asarray(img, dtype=np.float64) * scale + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    return img.convert("RGB")


_SPECIAL_ROOTS = ("/proc", "/sys", "/dev")


def check_image_file(path: str | Path) -> Path:
    """``path`` if it is a regular file outside /proc, /sys and /dev; otherwise an ``ImageError`` naming it.

    Device files, FIFOs and kernel files are refused before they are opened: reading
    ``/dev/zero`` never ends, a FIFO blocks, and ``/proc/self/environ`` holds secrets.
    """
    path = Path(path)
    try:
        real = os.path.realpath(path)
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found") from None
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror})") from None
    if any(real == root or real.startswith(root + "/") for root in _SPECIAL_ROOTS):
        raise ImageError(f"{path}: a system file ({real}), not an image")
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device or special file"
        raise ImageError(f"{path}: {kind}, not an image file")
    return path


def read_image_bytes(path: str | Path) -> bytes:
    """An image file's encoded bytes; a missing, special or unreadable file is an ``ImageError``."""
    path = check_image_file(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ImageTooLarge(f"{path}: {size} bytes is over the {MAX_BYTES}-byte limit")
        return path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found") from None
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror})") from None


def load_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file into an (H, W, 3) uint8 RGB array."""
    return decode_image(read_image_bytes(path), str(path), max_pixels)


def load_pil_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Read an image file into an RGB ``PIL.Image`` through the same guards as ``load_image``."""
    return Image.fromarray(load_image(path, max_pixels))


def content_name(data: bytes, suffix: str = ".png") -> str:
    """The file name VisForge stores image bytes under: 16 hex digits of their SHA-256 + suffix."""
    return hashlib.sha256(data).hexdigest()[:16] + (suffix.lower() or ".png")


def store_image(data: bytes, folder: str | Path, suffix: str = ".png", atomic: bool = True) -> str:
    """Write image bytes into ``folder`` under their content name (kept if already there).

    Returns the file name. The one place images are copied by content: workspaces, uploads and
    exports all name their images this way, so the same image is stored once.
    """
    folder = Path(folder)
    name = content_name(data, suffix)
    dest = folder / name
    if not dest.exists():
        if atomic:
            atomic_write_bytes(dest, data)
        else:
            folder.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
    return name


def as_rgb_array(image) -> np.ndarray:
    """Convert a PIL image or array to the (H, W, 3) uint8 RGB array engines expect."""
    if isinstance(image, np.ndarray):
        arr = image
    else:  # PIL.Image
        arr = np.asarray(image.convert("RGB"))
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"expected an RGB image array of shape (H, W, 3), got shape {arr.shape}")
    if arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {arr.dtype}")
    return np.ascontiguousarray(arr)


def illumination_normalise(image: np.ndarray, target: float = 215.0, kernel: int = 31) -> np.ndarray:
    """Flat-field correction: divide by a smooth estimate of the light (a wide median of the
    brightest channel, which follows the background, not the objects) so dim or unevenly lit
    images look like daylight ones. Hues are unchanged; uint8 in, uint8 out."""
    import cv2

    img = np.asarray(image, np.uint8)
    median = cv2.medianBlur(np.ascontiguousarray(img.max(axis=2)), kernel).astype(np.float32)
    light = np.asarray(cv2.GaussianBlur(median, (0, 0), 8), np.float32)
    out = img.astype(np.float32) * (target / np.maximum(light, 1.0))[:, :, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
