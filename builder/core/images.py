"""Loading images safely: every bad input (missing, corrupt, huge, wrong mode) is a clear error."""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from builder.core.atomic import atomic_write_bytes
from builder.core.errors import UserError

MAX_PIXELS = 40_000_000  # about 6300 x 6300; larger images are refused before decoding
MAX_BYTES = 50 * 1024 * 1024


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
    if len(data) > MAX_BYTES:
        raise ImageTooLarge(f"{name}: {len(data)} bytes is over the {MAX_BYTES}-byte limit")
    w, h = check_image_size(data, name, max_pixels, max_side)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
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
    return np.asarray(img.convert("RGB"))


def read_image_bytes(path: str | Path) -> bytes:
    """An image file's encoded bytes; a missing or unreadable file is an ``ImageError``."""
    path = Path(path)
    try:
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
