"""Open, validate and normalise image inputs: anything a user may hand us becomes an RGB PIL image.

Every captioning path (library, CLI, server, batch jobs, evaluation) goes through ``load_image``, so
this is the one place that decides what counts as an image and how it is decoded. The rules:

* the result is always a fully decoded ``RGB`` image that owns its pixels (no open file behind it);
* anything that cannot become such an image raises ``ImageError`` naming the input and the reason,
  never a raw PIL/OS exception;
* the pixel count is checked from the header before any pixel is decoded (decompression bombs);
* behaviour does not depend on PIL's process-wide switches (``Image.MAX_IMAGE_PIXELS``,
  ``ImageFile.LOAD_TRUNCATED_IMAGES``), which other libraries in the same process like to change.
"""

from __future__ import annotations

import glob
import io
import os
import re
import stat
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple, Union

from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError, features

from polycap.errors import ImageError
from polycap.net import redact_url

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "FileScan",
    "ImageInput",
    "describe_source",
    "is_url",
    "iter_image_files",
    "load_image",
    "scan_image_files",
]

DEFAULT_MAX_PIXELS = 64_000_000
"""Largest image (width * height) decoded by default: a 64 MP RGB image is ~190 MB of pixels."""

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
    | {".avif", ".heic", ".heif"}
)
"""Lower-case suffixes picked up when a directory or glob is expanded by ``iter_image_files``.

HEIC/HEIF are listed even though Pillow cannot decode them on its own: a folder of iPhone photos
must give one clear error per photo (install pillow-heif), never silently nothing."""

# A Union (not ``X | Y``) because numpy is only imported for type checking: the alias must still
# be a valid object at runtime, and a string forward reference cannot take part in ``|``.
ImageInput = Union[  # noqa: UP007
    str, os.PathLike, bytes, bytearray, BinaryIO, Image.Image, "np.ndarray"
]
"""Everything ``load_image`` accepts. ``bytes`` are encoded image data, never a file name."""

_URL_RE = re.compile(r"^https?://", re.IGNORECASE)
_SCHEME_RE = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_GLOB_CHARS = frozenset("*?[")
_HIGH_DEPTH_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_BOMB_PIXELS_RE = re.compile(r"\((\d+) pixels\)")
_WHITE = (255, 255, 255, 255)

# Magic numbers of formats we decode, so a file that starts like one but fails to open is
# reported as damaged rather than "not an image".
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)
# ISO base media file ("ftyp" box) brands: HEIF needs pillow-heif, AVIF a Pillow built with libavif.
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_heif_registered = False


# --------------------------------------------------------------------------------------------
# Naming inputs
# --------------------------------------------------------------------------------------------


def is_url(s: object) -> bool:
    """True for strings that start with ``http://`` or ``https://`` (case-insensitive)."""
    return isinstance(s, str) and bool(_URL_RE.match(s.strip()))


def describe_source(x: object) -> str:
    """A short name for an input, used in error messages and records; never raises.

    URLs lose their credentials (``https://***@host/a.jpg``)."""
    if isinstance(x, str) and _SCHEME_RE.match(x):
        return redact_url(x)
    if isinstance(x, (str, os.PathLike)):
        try:
            return os.fsdecode(os.fspath(x))  # type: ignore[arg-type]
        except TypeError:
            return f"<{type(x).__name__}>"
    if isinstance(x, (bytes, bytearray, memoryview)):
        size = x.nbytes if isinstance(x, memoryview) else len(x)
        return f"<{type(x).__name__}: {size} bytes>"
    if isinstance(x, Image.Image):
        return f"<PIL.Image {x.width}x{x.height} {x.mode}>"
    if _is_ndarray(x):
        return f"<ndarray {tuple(x.shape)} {x.dtype}>"  # type: ignore[attr-defined]
    if hasattr(x, "read"):
        name = getattr(x, "name", None)
        if isinstance(name, (str, bytes)) and name:
            return f"<file-like {os.fsdecode(name)}>"
        return f"<file-like {type(x).__name__}>"
    return f"<{type(x).__name__}>"


def _is_ndarray(x: object) -> bool:
    """isinstance(x, numpy.ndarray) without importing numpy: if it isn't imported, x isn't one."""
    np = sys.modules.get("numpy")
    return np is not None and isinstance(x, np.ndarray)


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


def load_image(
    source: ImageInput,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    allow_urls: bool = False,
    min_side: int | None = None,
) -> Image.Image:
    """Return ``source`` as a fully decoded RGB image that shares nothing with the input.

    EXIF orientation is applied, transparency is composited on white, high-bit-depth pixels
    are scaled (not clipped) to 0..255 and only the first frame of an animation is used.
    ``max_pixels`` (None: no limit) is checked against the header of encoded inputs before any
    pixel is decoded; in-memory arrays and already decoded PIL images are not limited.
    URLs are refused unless ``allow_urls`` is true. Raises ``ImageError`` for every bad input.
    ``min_side`` lets a JPEG be decoded at 1/2, 1/4 or 1/8 size (Pillow's ``draft``, DCT scaling)
    while both sides stay at least that long: a model with a 260-pixel input needs no 12-megapixel
    decode. Other formats, and encoded inputs already small, decode at full size.
    """
    if max_pixels is not None and (isinstance(max_pixels, bool) or max_pixels < 1):
        raise ValueError(f"max_pixels must be a positive int or None, got {max_pixels!r}")
    name = describe_source(source)
    if isinstance(source, Image.Image):
        return _from_pil(source, name, max_pixels)
    if _is_ndarray(source):
        return _from_array(source, name)  # type: ignore[arg-type]
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageError("empty file (0 bytes)", name)
        return _decode(io.BytesIO(source), name, max_pixels, min_side)
    if isinstance(source, str) and is_url(source):
        if not allow_urls:
            raise ImageError(
                "URLs are refused unless explicitly allowed (pass allow_urls=True), "
                "or download the image and pass the file",
                name,
            )
        return _decode(io.BytesIO(_fetch_url(source)), name, max_pixels, min_side)
    if isinstance(source, (str, os.PathLike)):
        return _load_path(source, name, max_pixels, min_side)
    if hasattr(source, "read"):
        return _load_stream(source, name, max_pixels, min_side)
    raise ImageError(
        f"unsupported input type {type(source).__module__}.{type(source).__qualname__}; "
        "expected a path, URL, bytes, binary file object, PIL image or numpy array",
        name,
    )


def _fetch_url(url: str) -> bytes:
    """Download ``url`` with :mod:`polycap.net`: public addresses only (checked again after
    every redirect), size and time limits. Needs httpx (the ``serve`` extra)."""
    try:
        import httpx  # noqa: F401
    except ImportError as e:
        raise ImageError("fetching URLs needs httpx: pip install 'polycap[serve]'", url) from e
    from polycap.net import fetch_url

    return fetch_url(url)


# --------------------------------------------------------------------------------------------
# Encoded inputs: paths, streams, bytes
# --------------------------------------------------------------------------------------------


def _open_file(path: str | os.PathLike) -> BinaryIO:
    """Open a file for reading; a seam so tests can simulate permission errors as root."""
    return open(path, "rb")  # noqa: SIM115 - closed by the caller's ``with``


def _load_path(path: str | os.PathLike, name: str, max_pixels: int | None, min_side: int | None = None) -> Image.Image:
    """Check the path is a readable, non-empty regular file, then decode it."""
    path = os.path.expanduser(os.fspath(path))
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise ImageError(
                "is a directory, not an image file (use iter_image_files() to list its images)",
                name,
            )
        if not stat.S_ISREG(st.st_mode):
            # FIFOs and devices could block forever or never end.
            raise ImageError("not a regular file", name)
        if st.st_size == 0:
            raise ImageError("empty file (0 bytes)", name)
        fh = _open_file(path)
    except FileNotFoundError as e:
        hint = ""
        if _SCHEME_RE.match(str(path)):
            hint = " (only http:// and https:// URLs are recognised as URLs)"
        raise ImageError(f"file not found{hint}", name) from e
    except IsADirectoryError as e:
        raise ImageError("is a directory, not an image file", name) from e
    except PermissionError as e:
        raise ImageError("permission denied: cannot read the file", name) from e
    except OSError as e:
        raise ImageError(f"cannot open the file: {e.strerror or e}", name) from e
    with fh:
        return _decode(fh, name, max_pixels, min_side)


def _load_stream(fp: Any, name: str, max_pixels: int | None, min_side: int | None = None) -> Image.Image:
    """Decode a binary file object. Like PIL, the whole stream is read from its start."""
    if isinstance(fp, io.TextIOBase):
        raise ImageError("file object is open in text mode; open the file with 'rb'", name)
    try:
        size = fp.seek(0, io.SEEK_END)
        fp.seek(0)
    except (AttributeError, OSError, ValueError):
        # Not seekable (a pipe, a socket): PIL would read it all anyway.
        try:
            data = fp.read()
        except (OSError, ValueError) as e:
            raise ImageError(f"cannot read the file object: {e}", name) from e
        if not isinstance(data, (bytes, bytearray)):
            raise ImageError("file object returned text; open the file with 'rb'", name) from None
        fp, size = io.BytesIO(data), len(data)
    if size == 0:
        raise ImageError("empty file (0 bytes)", name)
    return _decode(fp, name, max_pixels, min_side)


def _decode(fp: BinaryIO, name: str, max_pixels: int | None, min_side: int | None = None) -> Image.Image:
    """Identify, size-check, decode and normalise one encoded image read from ``fp``."""
    with _pil_guard(max_pixels):
        im = _open_pil(fp, name, max_pixels)
        with im:
            _check_size(im.size, max_pixels, name)  # the declared size, before any reduction
            if min_side and im.format == "JPEG" and min(im.size) >= 2 * min_side:
                im.draft("RGB", (min_side, min_side))  # both sides stay >= min_side
            _load_pixels(im, name, max_pixels)
            return _to_rgb(im, name)


def _open_pil(fp: BinaryIO, name: str, max_pixels: int | None) -> Image.Image:
    """``Image.open`` with every failure an ImageError; HEIF gets pillow-heif's opener if installed."""
    try:
        return Image.open(fp)
    except Image.DecompressionBombError as e:
        raise ImageError(_too_large_message(None, str(e), max_pixels), name) from e
    except UnidentifiedImageError as e:
        head = _head(fp)
        if _container_kind(head) == "HEIF" and _register_heif_opener():
            fp.seek(0)
            return _open_pil(fp, name, max_pixels)
        raise ImageError(_unrecognised_message(head), name) from e
    except Exception as e:  # PIL raises many types on bad headers; all mean "bad data"
        raise ImageError(f"truncated or corrupt image data ({_reason(e)})", name) from e


def _register_heif_opener() -> bool:
    """Teach PIL to read HEIC/HEIF through pillow-heif (the ``heif`` extra), on the first HEIF file
    seen, so ``import polycap`` stays light. True only when it was registered just now."""
    global _heif_registered
    if _heif_registered:
        return False
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    with _pil_lock:
        if not _heif_registered:
            register_heif_opener()
            _heif_registered = True
    return True


def _container_kind(head: bytes) -> str | None:
    """The kind ("HEIF", "AVIF") of an ISO base media file, from its brands; None for other data."""
    if head[4:8] != b"ftyp":
        return None
    size = int.from_bytes(head[:4], "big")
    box = head[8 : min(max(size, 16), len(head))]
    # major brand, minor version (skipped), then the compatible brands
    brands = {box[:4]} | {box[i : i + 4] for i in range(8, len(box) - 3, 4)}
    if brands & _AVIF_BRANDS:
        return "AVIF"
    return "HEIF" if brands & _HEIF_BRANDS else None


def _load_pixels(im: Image.Image, name: str, max_pixels: int | None) -> None:
    """Decode the pixels of the current (first) frame, turning every failure into ImageError."""
    try:
        im.load()
    except Image.DecompressionBombError as e:
        raise ImageError(_too_large_message(im.size, str(e), max_pixels), name) from e
    except MemoryError as e:
        raise ImageError(f"not enough memory to decode a {im.width}x{im.height} image", name) from e
    except Exception as e:  # OSError, SyntaxError, ValueError, struct.error, EOFError, ...
        raise ImageError(f"truncated or corrupt image data ({_reason(e)})", name) from e


def _reason(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _head(fp: BinaryIO, n: int = 512) -> bytes:
    """The first bytes of the stream, for explaining why it is not an image."""
    try:
        fp.seek(0)
        return fp.read(n) or b""
    except (OSError, ValueError):
        return b""


def _unrecognised_message(head: bytes) -> str:
    """Say what the data looks like, because "cannot identify image" alone helps nobody."""
    for magic, fmt in _SIGNATURES:
        if head.startswith(magic):
            return f"truncated or corrupt image data (starts like a {fmt} file but cannot be read)"
    msg = "not a recognised image format"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    kind = _container_kind(head)
    if kind == "HEIF":
        if _heif_registered:
            return "truncated or corrupt image data (starts like a HEIC/HEIF file but pillow-heif cannot read it)"
        return (
            f"{msg}: HEIC/HEIF photos need pillow-heif: pip install 'polycap[heif]' "
            "(or convert them to JPEG or PNG)"
        )
    if kind == "AVIF":
        if "avif" in features.modules and features.check_module("avif"):
            return "truncated or corrupt image data (starts like an AVIF file but cannot be read)"
        return f"{msg}: this Pillow cannot decode AVIF; upgrade it (pip install -U 'pillow>=11.3')"
    if text.startswith(b"%pdf"):
        return f"{msg}: it is a PDF document"
    if b"<svg" in text:
        return f"{msg}: SVG vector images are not supported; convert it to PNG"
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in text:
        return (
            f"{msg}: it is an HTML page (often an error or login page saved in place of "
            "the image; check where the file came from)"
        )
    if head and _looks_like_text(head):
        return f"{msg}: it looks like a text file, not an image"
    return f"{msg} (first bytes: {head[:8].hex(' ')}); expected JPEG, PNG, WebP, GIF, BMP, TIFF or AVIF"


def _looks_like_text(head: bytes) -> bool:
    try:
        decoded = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\r\n\t" for c in decoded)


# --------------------------------------------------------------------------------------------
# Size limits and PIL's global switches
# --------------------------------------------------------------------------------------------


def _check_size(size: tuple[int, int], max_pixels: int | None, name: str) -> None:
    """Refuse images over ``max_pixels`` using only the header-declared size."""
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageError(f"invalid image size {width}x{height}", name)
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError(_too_large_message(size, "", max_pixels), name)


def _too_large_message(size: tuple[int, int] | None, pil_msg: str, max_pixels: int | None) -> str:
    if size is not None:
        what = f"{size[0]}x{size[1]} = {size[0] * size[1]:,} pixels"
    else:
        m = _BOMB_PIXELS_RE.search(pil_msg)
        what = f"{int(m.group(1)):,} pixels" if m else "too many pixels"
    limit = f"{max_pixels:,}" if max_pixels is not None else "PIL's limit"
    return (
        f"image too large: {what} exceeds the limit of {limit} pixels (refused before decoding, "
        "as a possible decompression bomb); if you trust this file, raise the limit: --max-pixels N "
        "on the command line, max_pixels=N (or max_pixels=None for no limit) in Python"
    )


_pil_lock = threading.Lock()
_pil_overrides = 0
_pil_saved: tuple[int | None, bool] = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)


@contextmanager
def _pil_guard(max_pixels: int | None) -> Iterator[None]:
    """Make PIL's global switches agree with our own rules while decoding, only when they don't.

    PIL refuses images over its own ``MAX_IMAGE_PIXELS`` and, if someone set
    ``LOAD_TRUNCATED_IMAGES``, silently pads truncated files. Usually neither matters (our
    default limit is below PIL's and the flag is off) and nothing is touched. Otherwise the
    globals are switched (PIL limit off - ours is checked instead - and truncation an error)
    for as long as any such load runs, reference-counted under a lock so overlapping loads
    restore the original values exactly once.
    """
    global _pil_overrides, _pil_saved
    with _pil_lock:
        pil_limit, truncated_ok = (
            _pil_saved if _pil_overrides else (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
        )
        stricter = pil_limit is not None and (max_pixels is None or max_pixels > pil_limit)
        override = stricter or truncated_ok
        if override:
            if _pil_overrides == 0:
                _pil_saved = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
                Image.MAX_IMAGE_PIXELS = None
                ImageFile.LOAD_TRUNCATED_IMAGES = False
            _pil_overrides += 1
    try:
        yield
    finally:
        if override:
            with _pil_lock:
                _pil_overrides -= 1
                if _pil_overrides == 0:
                    Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = _pil_saved


# --------------------------------------------------------------------------------------------
# Normalising decoded images to RGB
# --------------------------------------------------------------------------------------------


def _from_pil(im: Image.Image, name: str, max_pixels: int | None) -> Image.Image:
    """Normalise a caller's PIL image without modifying it; a lazily opened one is size-checked."""
    if isinstance(im, ImageFile.ImageFile) and im.tile:  # opened but not decoded yet
        _check_size(im.size, max_pixels, name)
        with _pil_guard(max_pixels):
            _load_pixels(im, name, max_pixels)
    else:
        _load_pixels(im, name, max_pixels)  # a no-op, but reports closed images clearly
    return _to_rgb(im, name)


def _to_rgb(im: Image.Image, name: str) -> Image.Image:
    """Orientation, bit depth and transparency handled; always a new image in mode RGB."""
    src = im
    im = _apply_exif_orientation(im)
    if im.mode in _HIGH_DEPTH_MODES:
        im = _high_depth_to_l(im)
    if "transparency" in im.info and im.mode in ("P", "L", "RGB", "1"):
        im = im.convert("RGBA")  # palette/colour-key transparency becomes a real alpha channel
    if im.mode in _ALPHA_MODES:
        im = _composite_on_white(im)
    if im.mode != "RGB":
        try:
            im = im.convert("RGB")
        except (ValueError, OSError) as e:
            raise ImageError(f"unsupported pixel mode {im.mode!r}", name) from e
    return im.copy() if im is src else im


def _apply_exif_orientation(im: Image.Image) -> Image.Image:
    """Rotate/flip as the camera's EXIF tag says, so captions describe the upright photo.

    A damaged EXIF block does not make the pixels unusable, so parse errors are ignored.
    """
    try:
        orientation = im.getexif().get(ExifTags.Base.Orientation, 1)
        if orientation in (2, 3, 4, 5, 6, 7, 8):
            return ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 - malformed EXIF: keep the stored orientation
        pass
    return im


def _composite_on_white(im: Image.Image) -> Image.Image:
    """Flatten transparency on white: models never saw alpha, and black would hide dark content."""
    if im.mode in ("RGBa", "La"):  # premultiplied alpha
        im = im.convert(im.mode.upper())
    rgba = im.convert("RGBA") if im.mode != "RGBA" else im
    return Image.alpha_composite(Image.new("RGBA", rgba.size, _WHITE), rgba).convert("RGB")


def _high_depth_to_l(im: Image.Image) -> Image.Image:
    """Scale 16/32-bit integer and float grey images to 8 bits; PIL's convert() would clip.

    ``I;16*`` is divided by 257 (65535 -> 255). ``I`` is what decoders produce for 16-bit data,
    so it is treated the same unless values fall outside 0..65535, then stretched to their range.
    ``F`` in [0, 1] is multiplied by 255, in [0, 255] kept, anything else stretched to its range.
    """
    import numpy as np

    a = np.asarray(im)
    if im.mode == "F":
        a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = float(a.min()), float(a.max())
        if lo >= 0.0 and hi <= 1.0:
            scaled = a * 255.0
        elif lo >= 0.0 and hi <= 255.0:
            scaled = a
        else:
            scaled = _stretch(a, lo, hi)
    else:
        a = a.astype(np.float64)
        lo, hi = float(a.min()), float(a.max())
        scaled = a / 257.0 if lo >= 0 and hi <= 65535 else _stretch(a, lo, hi)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


def _stretch(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (a - lo) * (255.0 / (hi - lo)) if hi > lo else a * 0.0


def _from_array(a: np.ndarray, name: str) -> Image.Image:
    """Build an image from (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) pixel arrays."""
    import numpy as np

    shape = tuple(a.shape)
    if a.ndim == 3 and shape[2] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        hint = ""
        if a.ndim == 3 and shape[0] in (1, 3, 4):
            hint = "; channels-first? use arr.transpose(1, 2, 0)"
        raise ImageError(
            f"unsupported array shape {shape} (dtype {a.dtype}); expected (H, W), (H, W, 1), "
            f"(H, W, 3) or (H, W, 4){hint}",
            name,
        )
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ImageError(f"empty array of shape {shape}", name)
    a = np.ascontiguousarray(_array_to_uint8(a, name))
    return _to_rgb(Image.fromarray(a), name)


def _array_to_uint8(a: np.ndarray, name: str) -> np.ndarray:
    """uint8 kept, uint16 / 257, bool * 255, float in [0, 1] * 255; other dtypes refused."""
    import numpy as np

    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if a.dtype == np.uint16:
        return ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise ImageError(f"float array of shape {a.shape} contains NaN or infinity", name)
        lo, hi = float(a.min()), float(a.max())
        if lo < -1e-3 or hi > 1.0 + 1e-3:
            raise ImageError(
                f"float array of shape {a.shape} ({a.dtype}) has values in [{lo:g}, {hi:g}]; "
                "float pixels must be in [0, 1] (divide by 255, or pass uint8)",
                name,
            )
        return np.rint(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)
    raise ImageError(
        f"unsupported array dtype {a.dtype} (shape {a.shape}); expected uint8, uint16, bool "
        "or float in [0, 1] (e.g. convert with arr.astype(np.uint8))",
        name,
    )


# --------------------------------------------------------------------------------------------
# Expanding command-line style inputs into image files
# --------------------------------------------------------------------------------------------


class FileScan(NamedTuple):
    """What ``scan_image_files`` found, and what it passed over so that callers can say so."""

    paths: list[Path | str]
    """Images to caption, in input order, no repeats (URLs as given, as strings)."""
    skipped: list[Path]
    """Files in searched folders or glob matches that were not taken: hidden, or no image suffix."""
    unreadable: list[tuple[Path, str]]
    """Folders that could not be listed, with the reason: images in them may have been missed."""


def iter_image_files(inputs: list[str]) -> list[Path]:
    """Expand files, directories and glob patterns into image paths, in input order, no repeats.

    * an existing file is kept whatever its suffix (it was named explicitly);
    * a directory is searched recursively for files with an ``IMAGE_EXTENSIONS`` suffix
      (case-insensitive), skipping hidden files and folders (e.g. macOS ``._x.jpg``), sorted;
    * a pattern with ``*``, ``?``, ``[`` or ``**`` is globbed (recursively for ``**``); matched
      files must have an image suffix, matched directories are expanded as above;
    * anything else - a missing path, or a pattern matching nothing - is returned unchanged, so
      the caller reports a per-item error for it (``load_image`` says "file not found") instead
      of it silently disappearing from the job.

    File names that are not valid UTF-8 come back as ``str`` with surrogate escapes
    (``os.fsdecode``), which open the very same file. ``scan_image_files`` also tells what was
    passed over.
    """
    return scan_image_files(inputs).paths


def scan_image_files(inputs: list[str]) -> FileScan:
    """``iter_image_files``, plus the files it skipped and the folders it could not list."""
    scan = FileScan([], [], [])
    seen: set[str] = set()

    def add(p: Path) -> None:
        key = os.path.normcase(os.path.abspath(p))
        if key not in seen:
            seen.add(key)
            scan.paths.append(p)

    for raw in inputs:
        if isinstance(raw, str) and _SCHEME_RE.match(raw):
            scan.paths.append(raw)  # a URL stays a string (a Path would fold its "//"); load_image decides
            continue
        item = os.path.expanduser(os.fspath(raw))
        if os.path.isdir(item):
            for p in _walk_images(Path(item), scan):
                add(p)
        elif os.path.exists(item) or not _GLOB_CHARS.intersection(item):
            add(Path(item))
        else:
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                add(Path(item))
            for m in matches:
                if os.path.isdir(m):
                    for p in _walk_images(Path(m), scan):
                        add(p)
                elif _has_image_suffix(m):
                    add(Path(m))
                else:
                    scan.skipped.append(Path(m))
    return scan


def _walk_images(root: Path, scan: FileScan) -> list[Path]:
    """Image files under ``root`` (symlinked folders not followed, so no cycles), sorted.

    Hidden folders are not entered; other files not taken go to ``scan.skipped``, folders that
    cannot be listed to ``scan.unreadable``: nothing disappears without a word.
    """
    found: list[Path] = []

    def unreadable(e: OSError) -> None:
        scan.unreadable.append((Path(e.filename or root), e.strerror or str(e)))

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for f in filenames:
            taken = not f.startswith(".") and _has_image_suffix(f)
            (found if taken else scan.skipped).append(Path(dirpath, f))
    return sorted(found)


def _has_image_suffix(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
