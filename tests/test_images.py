"""load_image / iter_image_files / describe_source against a corpus of good and bad inputs.

The corpus is generated into tmp_path by the builders below: nothing is downloaded or committed.
Every case states its expected outcome: an image of a given size with given pixel colours, or an
ImageError whose message contains a given substring.
"""

from __future__ import annotations

import io
import os
import struct
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
from PIL import Image, ImageFile, features

from polycap import images
from polycap.errors import ImageError
from polycap.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    describe_source,
    is_url,
    iter_image_files,
    load_image,
    scan_image_files,
)

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 200, 0), (0, 0, 255), (255, 255, 255)
HAS_WEBP = features.check("webp")
HAS_AVIF = features.check("avif")


# --------------------------------------------------------------------------------------------
# Corpus builders: each takes tmp_path and returns the input to pass to load_image
# --------------------------------------------------------------------------------------------


def encode(im: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def write(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


def noise(w: int = 64, h: int = 64) -> Image.Image:
    """Incompressible content, so cutting the file in half really loses scan data."""
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8))


def png_declaring(width: int, height: int) -> bytes:
    """A valid-looking ~70-byte PNG whose IHDR claims width x height RGB pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def exif_jpeg(orientation: int) -> bytes:
    """A 40x20 JPEG, red 8x8 block in the stored top-left corner, with an EXIF orientation tag."""
    a = np.zeros((20, 40, 3), np.uint8)
    a[:8, :8] = RED
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(Image.fromarray(a), "JPEG", quality=95, exif=exif.tobytes())


def palette_with_transparency() -> bytes:
    """4x4 palette PNG: index 0 (black) is transparent, pixel (0, 0) is opaque red."""
    p = Image.new("P", (4, 4), 0)
    p.putpalette([0, 0, 0, *RED] + [0] * (256 * 3 - 6))
    p.putpixel((0, 0), 1)
    return encode(p, "PNG", transparency=0)


def animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (6, 4), c) for c in (RED, BLUE, GREEN)]
    extra = {"lossless": True} if fmt == "WEBP" else {"loop": 0}
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, **extra)


def rgba_png() -> bytes:
    """2x1 RGBA: half-transparent red, then fully transparent black."""
    im = Image.new("RGBA", (2, 1))
    im.putpixel((0, 0), (255, 0, 0, 128))
    im.putpixel((1, 0), (0, 0, 0, 0))
    return encode(im, "PNG")


def la_png() -> bytes:
    im = Image.new("LA", (2, 1))
    im.putpixel((0, 0), (100, 255))
    im.putpixel((1, 0), (100, 0))
    return encode(im, "PNG")


def float_tiff() -> bytes:
    return encode(Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32)), "TIFF")


def int32_tiff() -> bytes:
    return encode(Image.fromarray(np.array([[0, 257 * 100, 65535]], np.int32)), "TIFF")


def sixteen_bit_png() -> bytes:
    return encode(Image.fromarray(np.array([[0, 257 * 100, 65535, 1000]], np.uint16)), "PNG")


class Ok(NamedTuple):
    size: tuple[int, int]
    pixels: dict[tuple[int, int], tuple[int, int, int]] = {}
    tol: int = 0


class Err(NamedTuple):
    message: str


Builder = Callable[[Path], Any]

CASES: list[tuple[str, Builder, Ok | Err]] = [
    # --- broken files -----------------------------------------------------------------------
    ("zero-byte file", lambda t: write(t, "empty.jpg", b""), Err("empty file")),
    ("zero bytes", lambda t: b"", Err("empty file")),
    (
        "truncated jpeg",
        lambda t: write(t, "cut.jpg", encode(noise(), "JPEG")[:2000]),
        Err("truncated or corrupt image data"),
    ),
    (
        "jpeg cut inside header",
        lambda t: write(t, "head.jpg", encode(noise(), "JPEG")[:20]),
        Err("truncated or corrupt image data (starts like a JPEG"),
    ),
    (
        "truncated png",
        lambda t: write(t, "cut.png", encode(noise(), "PNG")[:3000]),
        Err("truncated or corrupt image data"),
    ),
    ("text named .jpg", lambda t: write(t, "notes.jpg", b"shopping list\nmilk\n"), Err("text file")),
    (
        "html saved as .png",
        lambda t: write(t, "page.png", b"<!DOCTYPE html>\n<html><body>403 Forbidden</body></html>"),
        Err("not a recognised image format: it is an HTML page"),
    ),
    ("binary garbage", lambda t: bytes(range(7, 200)), Err("not a recognised image format")),
    ("directory as file", lambda t: t, Err("is a directory")),
    ("missing path", lambda t: t / "nope.jpg", Err("file not found")),
    ("missing str path", lambda t: str(t / "nope.png"), Err("file not found")),
    # --- decompression bombs: tiny files declaring huge sizes ----------------------------
    (
        "declares 20000x20000 (over PIL's own limit)",
        lambda t: write(t, "bomb.png", png_declaring(20000, 20000)),
        Err("image too large: 400,000,000 pixels exceeds the limit of 64,000,000"),
    ),
    (
        "declares 9000x9000 (over ours, under PIL's)",
        lambda t: png_declaring(9000, 9000),
        Err("9000x9000 = 81,000,000 pixels exceeds the limit of 64,000,000"),
    ),
    # --- pixel formats --------------------------------------------------------------------
    ("1x1 png", lambda t: encode(Image.new("RGB", (1, 1), RED), "PNG"), Ok((1, 1), {(0, 0): RED})),
    (
        "cmyk jpeg",
        lambda t: encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG", quality=95),
        Ok((8, 8), {(4, 4): RED}, tol=6),
    ),
    (
        "16-bit grey png scaled, not clipped",
        lambda t: write(t, "deep.png", sixteen_bit_png()),
        Ok((4, 1), {(0, 0): (0, 0, 0), (1, 0): (100,) * 3, (2, 0): (255,) * 3, (3, 0): (4,) * 3}),
    ),
    (
        "32-bit int tiff holding 16-bit values",
        lambda t: int32_tiff(),
        Ok((3, 1), {(0, 0): (0, 0, 0), (1, 0): (100,) * 3, (2, 0): (255,) * 3}),
    ),
    (
        "float32 F tiff",
        lambda t: write(t, "float.tif", float_tiff()),
        Ok((3, 1), {(0, 0): (0, 0, 0), (1, 0): (128,) * 3, (2, 0): (255,) * 3}),
    ),
    (
        "palette png with transparency",
        lambda t: write(t, "pal.png", palette_with_transparency()),
        Ok((4, 4), {(0, 0): RED, (2, 2): WHITE}),
    ),
    (
        "rgba png on white",
        lambda t: rgba_png(),
        Ok((2, 1), {(0, 0): (255, 127, 127), (1, 0): WHITE}, tol=1),
    ),
    ("LA png on white", lambda t: la_png(), Ok((2, 1), {(0, 0): (100,) * 3, (1, 0): WHITE})),
    ("grey png", lambda t: encode(Image.new("L", (3, 2), 77), "PNG"), Ok((3, 2), {(2, 1): (77,) * 3})),
    ("1-bit png", lambda t: encode(Image.new("1", (2, 2), 1), "PNG"), Ok((2, 2), {(1, 1): WHITE})),
    ("bmp", lambda t: encode(Image.new("RGB", (5, 3), BLUE), "BMP"), Ok((5, 3), {(4, 2): BLUE})),
    ("animated gif: first frame", lambda t: write(t, "anim.gif", animated("GIF")), Ok((6, 4), {(0, 0): RED})),
    # EXIF 6 = rotate 90 clockwise to display: stored top-left ends up top-right.
    ("exif orientation 6", lambda t: exif_jpeg(6), Ok((20, 40), {(17, 2): RED, (2, 2): (0, 0, 0)}, tol=12)),
    # EXIF 8 = rotate 90 counter-clockwise: stored top-left ends up bottom-left.
    ("exif orientation 8", lambda t: exif_jpeg(8), Ok((20, 40), {(2, 37): RED, (2, 2): (0, 0, 0)}, tol=12)),
    (
        "non-ascii name with spaces",
        lambda t: write(t, "café photo ü.jpg", encode(Image.new("RGB", (7, 5), BLUE), "JPEG")),
        Ok((7, 5), {(3, 2): BLUE}, tol=8),
    ),
    # --- numpy inputs ---------------------------------------------------------------------
    ("ndarray uint8 (H, W)", lambda t: np.full((2, 3), 9, np.uint8), Ok((3, 2), {(0, 0): (9,) * 3})),
    ("ndarray uint8 (H, W, 1)", lambda t: np.full((2, 3, 1), 9, np.uint8), Ok((3, 2), {(0, 0): (9,) * 3})),
    ("ndarray uint8 (H, W, 3)", lambda t: np.full((2, 3, 3), RED, np.uint8), Ok((3, 2), {(2, 1): RED})),
    (
        "ndarray uint8 (H, W, 4) on white",
        lambda t: np.zeros((2, 3, 4), np.uint8),
        Ok((3, 2), {(2, 1): WHITE}),
    ),
    (
        "ndarray uint16",
        lambda t: np.array([[0, 257 * 100, 65535]], np.uint16),
        Ok((3, 1), {(0, 0): (0,) * 3, (1, 0): (100,) * 3, (2, 0): (255,) * 3}),
    ),
    (
        "ndarray float32 in [0, 1]",
        lambda t: np.array([[0.0, 0.5, 1.0]], np.float32),
        Ok((3, 1), {(1, 0): (128,) * 3, (2, 0): (255,) * 3}),
    ),
    ("ndarray float64 rgb", lambda t: np.full((1, 1, 3), 0.2), Ok((1, 1), {(0, 0): (51,) * 3})),
    ("ndarray bool", lambda t: np.array([[True, False]]), Ok((2, 1), {(0, 0): WHITE, (1, 0): (0,) * 3})),
    ("ndarray float out of range", lambda t: np.full((2, 2, 3), 200.0), Err("must be in [0, 1]")),
    ("ndarray float nan", lambda t: np.full((2, 2), np.nan), Err("NaN")),
    ("ndarray int64", lambda t: np.zeros((2, 2, 3), np.int64), Err("unsupported array dtype int64")),
    ("ndarray channels-first", lambda t: np.zeros((3, 8, 8), np.uint8), Err("channels-first")),
    ("ndarray 2 channels", lambda t: np.zeros((4, 4, 2), np.uint8), Err("unsupported array shape (4, 4, 2)")),
    ("ndarray 1-D", lambda t: np.zeros(12, np.uint8), Err("unsupported array shape (12,)")),
    ("ndarray empty", lambda t: np.zeros((0, 4, 3), np.uint8), Err("empty array")),
    # --- container types ------------------------------------------------------------------
    ("bytes", lambda t: encode(Image.new("RGB", (3, 3), RED), "PNG"), Ok((3, 3), {(1, 1): RED})),
    (
        "bytearray",
        lambda t: bytearray(encode(Image.new("RGB", (3, 3), RED), "PNG")),
        Ok((3, 3), {(1, 1): RED}),
    ),
    (
        "BytesIO",
        lambda t: io.BytesIO(encode(Image.new("RGB", (3, 3), RED), "PNG")),
        Ok((3, 3), {(1, 1): RED}),
    ),
    ("empty BytesIO", lambda t: io.BytesIO(), Err("empty file")),
    ("text-mode file object", lambda t: io.StringIO("abc"), Err("text mode")),
    ("pathlib.Path", lambda t: write(t, "p.png", encode(Image.new("RGB", (2, 2), RED), "PNG")), Ok((2, 2))),
    (
        "str path",
        lambda t: str(write(t, "s.png", encode(Image.new("RGB", (2, 2), RED), "PNG"))),
        Ok((2, 2), {(0, 0): RED}),
    ),
    ("PIL image, palette", lambda t: Image.new("P", (2, 2), 0), Ok((2, 2), {(0, 0): (0, 0, 0)})),
    ("PIL image, lazily opened", lambda t: Image.open(io.BytesIO(sixteen_bit_png())), Ok((4, 1))),
    ("http url refused by default", lambda t: "http://example.com/cat.jpg", Err("URLs are refused")),
    ("https url refused by default", lambda t: "HTTPS://example.com/cat.jpg", Err("allow_urls=True")),
    ("other scheme", lambda t: "s3://bucket/cat.jpg", Err("only http:// and https://")),
    ("unsupported type", lambda t: 42, Err("unsupported input type builtins.int")),
    ("list is not an image", lambda t: [1, 2, 3], Err("unsupported input type builtins.list")),
]

if HAS_WEBP:
    CASES += [
        (
            "webp",
            lambda t: encode(Image.new("RGB", (5, 4), GREEN), "WEBP", lossless=True),
            Ok((5, 4), {(1, 1): GREEN}),
        ),
        ("animated webp: first frame", lambda t: animated("WEBP"), Ok((6, 4), {(0, 0): RED})),
    ]
if HAS_AVIF:
    CASES += [
        (
            "avif file",
            lambda t: write(t, "a.avif", encode(Image.new("RGB", (8, 6), BLUE), "AVIF", quality=100)),
            Ok((8, 6), {(4, 3): BLUE}, tol=12),
        ),
        ("truncated avif", lambda t: encode(Image.new("RGB", (8, 6), BLUE), "AVIF")[:40], Err("AVIF")),
    ]


@pytest.mark.parametrize(("case", "make", "expected"), CASES, ids=[c[0] for c in CASES])
def test_corpus(case: str, make: Builder, expected: Ok | Err, tmp_path: Path) -> None:
    source = make(tmp_path)
    if isinstance(expected, Err):
        with pytest.raises(ImageError) as info:
            load_image(source)
        assert expected.message in str(info.value)
        assert info.value.source == describe_source(source)
        return
    out = load_image(source)
    assert out.mode == "RGB"
    assert out.size == expected.size
    for xy, colour in expected.pixels.items():
        got = out.getpixel(xy)
        assert all(abs(g - c) <= expected.tol for g, c in zip(got, colour, strict=True)), (xy, got, colour)


# --------------------------------------------------------------------------------------------
# Specific behaviours
# --------------------------------------------------------------------------------------------


def test_custom_max_pixels_refuses_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoding(self: Any) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ImageError, match=r"1000x1000 = 1,000,000 pixels exceeds the limit of 999,999"):
        load_image(png_declaring(1000, 1000), max_pixels=999_999)
    with pytest.raises(ImageError, match="max_pixels=None") as info:
        load_image(png_declaring(20000, 20000))
    assert "--max-pixels N on the command line" in str(info.value)  # the CLI has that flag


def test_max_pixels_allows_exact_limit_and_none() -> None:
    data = encode(Image.new("RGB", (10, 10), RED), "PNG")
    assert load_image(data, max_pixels=100).size == (10, 10)
    assert load_image(data, max_pixels=None).size == (10, 10)
    with pytest.raises(ImageError, match="10x10 = 100 pixels"):
        load_image(data, max_pixels=99)
    with pytest.raises(ValueError, match="max_pixels"):
        load_image(data, max_pixels=0)


def test_does_not_rely_on_pil_globals(monkeypatch: pytest.MonkeyPatch) -> None:
    """Another library lowering PIL's limit or allowing truncated files must not change results."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    assert load_image(encode(noise(64, 64), "PNG")).size == (64, 64)
    with pytest.raises(ImageError, match="truncated or corrupt"):
        load_image(encode(noise(), "JPEG")[:2000])
    assert Image.MAX_IMAGE_PIXELS == 100 and ImageFile.LOAD_TRUNCATED_IMAGES is True
    assert images._pil_overrides == 0


def test_overlapping_loads_restore_pil_globals() -> None:
    """Loads that switch PIL's globals (max_pixels=None) and loads that don't, run concurrently."""
    from concurrent.futures import ThreadPoolExecutor

    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    data = encode(noise(32, 32), "PNG")
    limits = [None, DEFAULT_MAX_PIXELS] * 20
    with ThreadPoolExecutor(max_workers=8) as pool:
        sizes = list(pool.map(lambda m: load_image(data, max_pixels=m).size, limits))
    assert sizes == [(32, 32)] * len(limits)
    assert before == (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    assert images._pil_overrides == 0


def test_pil_errors_are_chained(tmp_path: Path) -> None:
    with pytest.raises(ImageError) as info:
        load_image(encode(noise(), "JPEG")[:2000])
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value.__cause__, OSError)


def test_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "secret.png", encode(Image.new("RGB", (2, 2)), "PNG"))

    def denied(p: Any) -> Any:
        raise PermissionError(13, "Permission denied", str(p))

    monkeypatch.setattr(images, "_open_file", denied)
    with pytest.raises(ImageError, match="permission denied") as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_allowed_url_reaches_the_fetch_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ImageError, match="refused"):  # the real fetcher: loopback is never fetched
        load_image("http://127.0.0.1:9/a.png", allow_urls=True)
    monkeypatch.setattr(images, "_fetch_url", lambda url: encode(Image.new("RGB", (3, 2), RED), "PNG"))
    assert load_image("https://example.com/a.png", allow_urls=True).size == (3, 2)


def test_result_is_detached_from_file_and_input(tmp_path: Path) -> None:
    path = write(tmp_path, "a.png", encode(Image.new("RGB", (4, 4), RED), "PNG"))
    out = load_image(path)
    path.unlink()
    assert not isinstance(out, ImageFile.ImageFile)
    assert out.getpixel((3, 3)) == RED

    src = Image.new("RGB", (4, 4), RED)
    copy = load_image(src)
    assert copy is not src
    copy.putpixel((0, 0), BLUE)
    assert src.getpixel((0, 0)) == RED


def test_open_binary_file_handle(tmp_path: Path) -> None:
    path = write(tmp_path, "h.png", encode(Image.new("RGB", (2, 3), BLUE), "PNG"))
    with open(path, "rb") as fh:
        assert load_image(fh).getpixel((1, 2)) == BLUE


# --------------------------------------------------------------------------------------------
# describe_source and is_url
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("photos/cat.jpg", "photos/cat.jpg"),
        (Path("photos") / "cat.jpg", str(Path("photos") / "cat.jpg")),
        (b"abcd", "<bytes: 4 bytes>"),
        (bytearray(3), "<bytearray: 3 bytes>"),
        (Image.new("RGB", (640, 480)), "<PIL.Image 640x480 RGB>"),
        (np.zeros((480, 640, 3), np.uint8), "<ndarray (480, 640, 3) uint8>"),
        (io.BytesIO(b"x"), "<file-like BytesIO>"),
        (42, "<int>"),
    ],
    ids=["str", "path", "bytes", "bytearray", "pil", "ndarray", "bytesio", "int"],
)
def test_describe_source(value: Any, expected: str) -> None:
    assert describe_source(value) == expected


def test_describe_named_file(tmp_path: Path) -> None:
    path = write(tmp_path, "n.png", b"x")
    with open(path, "rb") as fh:
        assert describe_source(fh) == f"<file-like {path}>"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("http://a/b.jpg", True),
        ("https://a/b.jpg", True),
        ("HTTPS://A/B", True),
        ("ftp://a/b.jpg", False),
        ("photos/http.jpg", False),
        (Path("http://x"), False),
        (b"http://x", False),
    ],
)
def test_is_url(value: Any, expected: bool) -> None:
    assert is_url(value) is expected


# --------------------------------------------------------------------------------------------
# iter_image_files
# --------------------------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/{b.jpg, a.PNG, notes.txt, .hidden.jpg, sub/{c.webp, z.gif, data.csv}, .git/x.png}"""
    root = tmp_path / "root"
    files = ["b.jpg", "a.PNG", "notes.txt", ".hidden.jpg", "sub/c.webp", "sub/z.gif", "sub/data.csv"]
    for rel in [*files, ".git/x.png"]:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    return root


def names(paths: list[Path], root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in paths]


def test_directory_is_recursive_sorted_and_image_only(tree: Path) -> None:
    assert names(iter_image_files([str(tree)]), tree) == ["a.PNG", "b.jpg", "sub/c.webp", "sub/z.gif"]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("*.jpg", ["b.jpg"]),
        ("**/*.gif", ["sub/z.gif"]),
        ("sub/?.webp", ["sub/c.webp"]),
        ("[ab].*", ["a.PNG", "b.jpg"]),
        ("*", ["a.PNG", "b.jpg", "sub/c.webp", "sub/z.gif"]),  # notes.txt dropped, sub expanded
    ],
)
def test_globs(tree: Path, pattern: str, expected: list[str]) -> None:
    assert names(iter_image_files([f"{tree}/{pattern}"]), tree) == expected


def test_input_order_kept_and_duplicates_dropped(tree: Path) -> None:
    got = iter_image_files([str(tree / "sub/z.gif"), str(tree), f"{tree}/*.jpg", str(tree / "sub" / ".." / "b.jpg")])
    assert names(got, tree) == ["sub/z.gif", "a.PNG", "b.jpg", "sub/c.webp"]


def test_explicit_and_missing_paths_are_kept(tree: Path) -> None:
    missing, no_match = str(tree / "gone.jpg"), str(tree / "*.tiff")
    got = iter_image_files([str(tree / "notes.txt"), missing, no_match])
    assert got == [tree / "notes.txt", Path(missing), Path(no_match)]
    with pytest.raises(ImageError, match="file not found"):
        load_image(got[1])


def test_constants() -> None:
    assert DEFAULT_MAX_PIXELS == 64_000_000
    assert {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"} < IMAGE_EXTENSIONS
    assert {".heic", ".heif", ".avif", ".jfif"} < IMAGE_EXTENSIONS


def test_heic_heif_avif_are_found_by_folders_and_globs(tree: Path) -> None:
    for rel in ["sub/p.HEIC", "sub/q.heif", "r.avif"]:
        (tree / rel).write_bytes(b"x")
    assert names(iter_image_files([str(tree)]), tree) == [
        "a.PNG", "b.jpg", "r.avif", "sub/c.webp", "sub/p.HEIC", "sub/q.heif", "sub/z.gif"
    ]  # fmt: skip
    assert names(iter_image_files([f"{tree}/sub/*.HEIC"]), tree) == ["sub/p.HEIC"]


def test_scan_reports_what_it_skipped(tree: Path) -> None:
    scan = scan_image_files([str(tree), f"{tree}/sub/*.csv"])
    assert names(scan.paths, tree) == ["a.PNG", "b.jpg", "sub/c.webp", "sub/z.gif"]
    # hidden and non-image files are reported (the csv twice: walked and globbed); .git is not entered
    assert sorted(names(scan.skipped, tree)) == [".hidden.jpg", "notes.txt", "sub/data.csv", "sub/data.csv"]
    assert scan.unreadable == []


def test_scan_reports_folders_it_cannot_list(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.scandir

    def scandir(path: Any = ".") -> Any:
        if os.fspath(path) == str(tree / "sub"):
            raise PermissionError(13, "Permission denied", str(tree / "sub"))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    scan = scan_image_files([str(tree)])
    assert names(scan.paths, tree) == ["a.PNG", "b.jpg"]
    assert scan.unreadable == [(tree / "sub", "Permission denied")]


def test_non_utf8_file_name_opens(tmp_path: Path) -> None:
    raw = os.path.join(os.fsencode(tmp_path), b"caf\xe9.png")
    with open(raw, "wb") as fh:
        fh.write(encode(Image.new("RGB", (3, 2), RED), "PNG"))
    (found,) = iter_image_files([str(tmp_path)])
    assert os.fsencode(found) == raw
    assert load_image(found).size == (3, 2)


# An ISO base media file header as iPhones write it: ftyp box, major brand heic, then mif1 heic.
HEIC_HEAD = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 40


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (HEIC_HEAD, "HEIF"),
        (b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1heix", "HEIF"),
        (b"\x00\x00\x00\x20ftypmif1\x00\x00\x00\x00mif1avifmiafMA1B", "AVIF"),  # AVIF under a mif1 major brand
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf", "AVIF"),
        (b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2", None),  # an mp4 video
        (b"\x89PNG\r\n\x1a\n", None),
    ],
    ids=["heic", "heix", "avif-under-mif1", "avif", "mp4", "png"],
)
def test_container_kind(head: bytes, kind: str | None) -> None:
    assert images._container_kind(head) == kind


def test_heic_without_pillow_heif_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # the default install: not importable
    monkeypatch.setattr(images, "_heif_registered", False)
    with pytest.raises(ImageError, match=r"need pillow-heif: pip install 'polycap\[heif\]'"):
        load_image(write(tmp_path, "IMG_0001.HEIC", HEIC_HEAD))


def test_heic_with_pillow_heif_decodes(tmp_path: Path) -> None:
    pillow_heif = pytest.importorskip("pillow_heif")  # the optional ``heif`` extra
    heif = pillow_heif.from_pillow(Image.new("RGB", (16, 8), RED))
    path = tmp_path / "photo.heic"
    heif.save(path, quality=95)
    out = load_image(path)
    assert out.size == (16, 8) and all(abs(a - b) <= 16 for a, b in zip(out.getpixel((8, 4)), RED))
