"""A hostile-input corpus: files that break naive image tools, each with the outcome polycap owes it.

Issue 18's proof. ``CASES`` is the table: per case, how its file is made and what must happen to it,
in the CLI (a folder walk over the corpus, plus the inputs named on the command line) and in the
server (the same bytes uploaded). An outcome is *captioned*, a *failed* item whose error contains a
reason, no record at all (not an image file), or, on the server, the whole request refused with a
status. ``OPTION_CASES`` lists the usage errors that must exit 2 with one line.

Outcomes are what the issue asks for, not what some version happens to do, so a case can fail
until its fix lands. Cases that need POSIX (symlinks, non-UTF-8 file names) are left out elsewhere.

Besides being imported by ``test_hostile.py``, this file runs as a script:

* ``python tests/hostile_corpus.py build DIR`` writes the corpus into ``DIR/corpus`` to probe by hand;
* ``python tests/hostile_corpus.py drive RUNS.json`` is how the suite runs the CLI: it calls
  ``polycap.cli.main(argv)`` once per argv in the file, in one process (``python -m polycap`` does
  exactly ``sys.exit(main())``), so real stdout/stderr streams and their encodings are exercised
  while the ~5 s import of torch is paid once. Each run is framed by marker lines (``split_runs``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import re
import struct
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, features

LANGS = ("en", "de")
HAVE_AVIF = features.check("avif")


# ---- what must happen -------------------------------------------------------------------------
@dataclass(frozen=True)
class Expect:
    """A per-item outcome: captioned (``ok``), or failed with ``reason`` in its error (case-insensitive)."""

    ok: bool
    reason: str = ""


@dataclass(frozen=True)
class Refused:
    """The server refuses the whole request: ``status``, with ``detail`` in the JSON error."""

    status: int
    detail: str


CAPTIONED = Expect(True)


def failed(reason: str) -> Expect:
    return Expect(False, reason)


def _heic_reason() -> str:
    """Without pillow-heif the error must name it (issue 18.4); with it, a fake file still fails as HEIC."""
    try:
        import pillow_heif  # noqa: F401
    except ImportError:
        return "pillow-heif"
    return "hei"


# ---- how files are made ---------------------------------------------------------------------
def _save(im: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _rgb(size: tuple[int, int] = (48, 32), colour: tuple[int, int, int] = (200, 30, 30)) -> Image.Image:
    return Image.new("RGB", size, colour)


def _noise(size: tuple[int, int] = (64, 48)) -> Image.Image:
    return Image.merge("RGB", [Image.effect_noise(size, 60 + 10 * i) for i in range(3)])


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG header claiming ``width`` x ``height`` with almost no pixel data: a cheap bomb."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _truncated_png() -> bytes:
    data = _save(_noise(), "PNG")
    return data[: len(data) * 6 // 10]


def _truncated_jpeg() -> bytes:
    data = _save(_noise((96, 64)), "JPEG", quality=95)
    return data[: len(data) // 2]


def _random_bytes() -> bytes:
    # Four zero bytes first: no image plugin (not even TGA, whose header is loose) claims this.
    return b"\x00\x00\x00\x00" + random.Random(18).randbytes(4092)


def _fake_heic() -> bytes:
    return b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 200


def _avif() -> bytes:
    if HAVE_AVIF:
        return _save(_rgb((40, 30), (30, 140, 90)), "AVIF")
    return b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + b"\x00" * 200


def _large_photo() -> bytes:
    """6 MP: large enough to be resized for real, small enough for CI (a 50 MP decode costs ~1 s a run)."""
    return _save(Image.linear_gradient("L").resize((3000, 2000)).convert("RGB"), "JPEG", quality=80)


def _cmyk() -> bytes:
    return _save(Image.new("CMYK", (40, 30), (10, 200, 30, 0)), "JPEG")


def _gray16() -> bytes:
    im = Image.linear_gradient("L").resize((40, 30)).convert("I").point(lambda v: v * 257)
    return _save(im.convert("I;16"), "PNG")


def _palette_transparent() -> bytes:
    im = _rgb((40, 30), (0, 120, 200)).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    return _save(im, "PNG", transparency=0)


def _alpha() -> bytes:
    return _save(Image.new("RGBA", (40, 30), (250, 10, 10, 90)), "PNG")


def _exif_rotated() -> bytes:
    im = _rgb((60, 30))
    im.paste((10, 10, 240), (0, 0, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    return _save(im, "JPEG", exif=exif.tobytes())


def _animated_gif() -> bytes:
    frames = [_rgb((32, 32), c).convert("P") for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    return _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=40, loop=0)


def _text() -> bytes:
    return b"This is a note, not a photo.\nIt was saved with a .jpg name by mistake.\n"


# ---- the table ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One hostile input.

    ``key`` starts the file name and is how a record is matched to its case (``case_key``).
    ``data`` makes the file's bytes; ``None`` with ``link``: a symlink to ``link``; ``None`` without:
    nothing is created (a missing file). ``cli``: the outcome in a CLI run (``None``: the folder walk
    yields no record). ``server``: the outcome of uploading ``data`` (``None``: not uploaded).
    ``explicit``: named on the command line instead of being found by the folder walk.
    """

    key: str
    name: bytes
    data: Callable[[], bytes] | None
    cli: Expect | None
    server: Expect | Refused | None
    link: bytes | None = None
    explicit: bool = False
    posix_only: bool = False
    note: str = ""


_HEIC = failed(_heic_reason())
_AVIF = CAPTIONED if HAVE_AVIF else failed("avif")
_BOMB_PIXELS = f"{30000 * 30000:,}"
_50MP = (8660, 5774)

# fmt: off
CASES: tuple[Case, ...] = (
    Case("h01", b"h01-ok.png", lambda: _save(_rgb(), "PNG"), CAPTIONED, CAPTIONED),
    Case("h02", b"h02-ok.jpg", lambda: _save(_rgb((33, 70), (10, 160, 40)), "JPEG"), CAPTIONED, CAPTIONED),
    Case("h03", b"h03-truncated.png", _truncated_png, failed("truncated or corrupt"), failed("truncated or corrupt")),
    Case("h04", b"h04-truncated.jpg", _truncated_jpeg, failed("truncated or corrupt"), failed("truncated or corrupt")),
    Case("h05", b"h05-zero.jpg", lambda: b"", failed("empty file"), failed("empty file")),
    Case("h06", b"h06-random.jpg", _random_bytes, failed("not a recognised image"), failed("not a recognised image")),
    Case("h07", b"h07-text.jpg", _text, failed("text file"), failed("text file"), note="a text file named .jpg"),
    Case("h08", b"h08-photo.heic", _fake_heic, _HEIC, _HEIC, note="a folder walk must report it, not skip it"),
    Case("h09", b"h09-photo.avif", _avif, _AVIF, _AVIF, note="a folder walk must caption it"),
    Case(
        "h10", b"h10-bomb.png", lambda: png_header_only(30000, 30000),
        failed("image too large"), Refused(413, _BOMB_PIXELS), note="decompression bomb: 900 MP in the header",
    ),
    Case(
        "h11", b"h11-50mp-header.png", lambda: png_header_only(*_50MP),
        failed("truncated or corrupt"), Refused(413, f"{_50MP[0] * _50MP[1]:,}"),
        note="a 50 MP header over no pixels: under the CLI's 64 MP limit (fails decoding), over the server's 25 MP",
    ),
    Case("h12", b"h12-large.jpg", _large_photo, CAPTIONED, CAPTIONED),
    Case("h13", b"h13-cmyk.jpg", _cmyk, CAPTIONED, CAPTIONED),
    Case("h14", b"h14-gray16.png", _gray16, CAPTIONED, CAPTIONED),
    Case("h15", b"h15-palette.png", _palette_transparent, CAPTIONED, CAPTIONED),
    Case("h16", b"h16-alpha.png", _alpha, CAPTIONED, CAPTIONED),
    Case("h17", b"h17-exif-rotated.jpg", _exif_rotated, CAPTIONED, CAPTIONED),
    Case("h18", b"h18-animated.gif", _animated_gif, CAPTIONED, CAPTIONED),
    Case("h19", b"h19-mislabelled.png", lambda: _save(_rgb(), "JPEG"), CAPTIONED, CAPTIONED, note="JPEG named .png"),
    Case(
        "h20", b"h20-loop.jpg", None, failed("symbolic links"), None, link=b"h20-loop.jpg", posix_only=True,
        note="a symlink to itself",
    ),
    Case(
        "h21", b"h21-loopdir", None, None, None, link=b".", posix_only=True,
        note="a folder symlink to its own folder: not followed, no record, no hang",
    ),
    Case("h22", b"h22-missing.jpg", None, failed("file not found"), None, explicit=True),
    Case(
        "h23", b"h23-img_0100_caf\xe9.jpg", lambda: _save(_rgb(), "JPEG"), CAPTIONED, CAPTIONED, posix_only=True,
        note="a Latin-1 file name: not valid UTF-8",
    ),
    Case(
        "h24", b"h24-caf\xe9-zero.jpg", lambda: b"", failed("empty file"), failed("empty file"), posix_only=True,
        note="a broken file whose name is not valid UTF-8: its error line too must be valid",
    ),
    Case("h25", "h25-café.jpg".encode(), lambda: _save(_rgb(), "JPEG"), CAPTIONED, CAPTIONED, note="valid UTF-8"),
    Case("h26", b"h26-tab\tname.png", lambda: _save(_rgb(), "PNG"), CAPTIONED, CAPTIONED, posix_only=True),
    Case("h27", b"h27-new\nline.png", lambda: _save(_rgb(), "PNG"), CAPTIONED, CAPTIONED, posix_only=True),
    Case(
        "h28", b"h28-bad\tname\n.jpg", lambda: b"", failed("empty file"), failed("empty file"), posix_only=True,
        note="a failed item with a tab and a newline in its name: one stderr line",
    ),
)
# fmt: on


def _many_cases(n: int = 100) -> tuple[Case, ...]:
    """A folder of ``n`` small photos with a few bad files mixed in (the 3,100-file folder, scaled down)."""
    bad = {
        7: (b"zero.jpg", lambda: b"", failed("empty file")),
        23: (b"text.jpg", _text, failed("text file")),
        51: (b"truncated.png", _truncated_png, failed("truncated or corrupt")),
        77: (b"random.png", _random_bytes, failed("not a recognised image")),
        96: (b"photo.heic", _fake_heic, _HEIC),
    }
    cases = []
    for i in range(n):
        key = f"m{i:03d}"
        if i in bad:
            suffix, data, expect = bad[i]
        else:
            colour = (i * 2 % 256, 255 - i * 2 % 256, i * 7 % 256)
            suffix, data, expect = b"ok.png", (lambda c=colour: _save(_rgb((16, 16), c), "PNG")), CAPTIONED
        cases.append(Case(key, b"many/" + key.encode() + b"-" + suffix, data, expect, expect))
    return tuple(cases)


MANY_CASES = _many_cases()
ALL_CASES = CASES + MANY_CASES


def case(key: str) -> Case:
    return next(c for c in ALL_CASES if c.key == key)


KEY_RE = re.compile(r"(?:^|/)([hm]\d{2,3})-")


def case_key(image: str) -> str | None:
    """The case a record's ``image`` field names: the key at the start of its last path component."""
    keys = KEY_RE.findall(image)
    return keys[-1] if keys else None


# ---- usage errors: exit 2, one line, no traceback ---------------------------------------------
@dataclass(frozen=True)
class OptionCase:
    """Extra ``polycap caption`` arguments that must be refused up front, and a word the line must contain."""

    args: tuple[str, ...]
    needle: str
    server: dict[str, object]  # the same option in a request: must be a 422


OPTION_CASES: dict[str, OptionCase] = {
    "seed-overflow": OptionCase(("--sample", "--seed", "99999999999999999999999"), "seed",
                                {"do_sample": True, "seed": 99999999999999999999999}),
    "temperature-inf": OptionCase(("--sample", "--temperature", "inf"), "temperature",
                                  {"do_sample": True, "temperature": float("inf")}),
    "temperature-nan": OptionCase(("--sample", "--temperature", "nan"), "temperature",
                                  {"do_sample": True, "temperature": float("nan")}),
    "beams-1000": OptionCase(("--beams", "1000"), "beams", {"num_beams": 1000}),
}  # fmt: skip


# ---- building -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Built:
    """A case as built under a corpus folder; ``path`` is ``os.fsdecode``d (surrogateescape) text."""

    case: Case
    path: str


@dataclass(frozen=True)
class Corpus:
    root: Path  # the folder walked by the CLI
    built: tuple[Built, ...]
    skipped: tuple[tuple[str, str], ...]  # (key, why) for cases this platform cannot make

    def cli_inputs(self) -> list[str]:
        """What a CLI run is given: the corpus folder, then the inputs named explicitly."""
        return [str(self.root), *(b.path for b in self.built if b.case.explicit)]

    def cli_expected(self) -> dict[str, Expect]:
        return {b.case.key: b.case.cli for b in self.built if b.case.cli is not None}

    def uploads(self) -> list[Built]:
        return [b for b in self.built if b.case.server is not None]


def build_corpus(root: Path) -> Corpus:
    """Write every case under ``root`` (a new folder); names are bytes, so any POSIX name can be made."""
    root.mkdir(parents=True, exist_ok=False)
    broot = os.fsencode(root)
    built, skipped = [], []
    for case in ALL_CASES:
        if case.posix_only and os.name != "posix":
            skipped.append((case.key, "needs POSIX file names or symlinks"))
            continue
        path = os.path.join(broot, case.name)
        try:
            _make(case, path)
        except OSError as e:  # e.g. a file system that only takes UTF-8 names (macOS APFS)
            skipped.append((case.key, f"cannot create it here: {e}"))
            continue
        built.append(Built(case, os.fsdecode(path)))
    return Corpus(root, tuple(built), tuple(skipped))


def _make(case: Case, path: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if case.link is not None:
        os.symlink(case.link, path)
    elif case.data is not None:
        with open(path, "wb") as fh:
            fh.write(case.data())


# ---- the driver -------------------------------------------------------------------------------
_BEGIN, _END = "@@hostile-run {i}@@\n", "@@hostile-end {i} rc={rc} loaded={loaded}@@\n"
_BEGIN_RE = re.compile(rb"@@hostile-run (\d+)@@\n")
_END_RE = re.compile(rb"@@hostile-end (\d+) rc=(-?\d+) loaded=([01])@@\n")


@dataclass
class Run:
    """One CLI invocation as the driver saw it: raw bytes of both streams, the exit code (-1: an
    exception escaped ``main``) and whether a model was loaded (``polycap.load`` called or torch imported)."""

    argv: list[str]
    stdout: bytes
    stderr: bytes
    rc: int
    loaded: bool


def drive(runs_file: str) -> int:
    """Run ``polycap.cli.main`` on each argv of ``runs_file`` (JSON list), framing each run's output."""
    import traceback

    import polycap

    argvs = json.loads(Path(runs_file).read_text(encoding="utf-8"))
    loads = []
    real_load = polycap.load

    def counting_load(*args, **kwargs):
        loads.append(args)
        return real_load(*args, **kwargs)

    polycap.load = counting_load
    from polycap.cli import main

    for i, argv in enumerate(argvs):
        _mark(_BEGIN.format(i=i))
        before = (len(loads), "torch" in sys.modules)
        try:
            rc = main(argv)
        except BaseException:  # noqa: BLE001 - what the real command would show: a traceback
            traceback.print_exc()
            rc = -1
        loaded = len(loads) > before[0] or ("torch" in sys.modules and not before[1])
        _mark(_END.format(i=i, rc=rc, loaded=int(loaded)))
    return 0


def _mark(line: str) -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, UnicodeError):
            stream.flush()
        stream.buffer.write(line.encode())
        stream.buffer.flush()


def split_runs(argvs: list[list[str]], stdout: bytes, stderr: bytes) -> list[Run]:
    """Cut a driver's two streams back into one ``Run`` per argv (a missing end marker: rc -1)."""
    outs, errs = _split(stdout, len(argvs)), _split(stderr, len(argvs))
    runs = []
    for i, argv in enumerate(argvs):
        end = _END_RE.search(errs[i])
        rc, loaded = (int(end.group(2)), end.group(3) == b"1") if end else (-1, False)
        runs.append(Run(argv, _END_RE.sub(b"", outs[i]), _END_RE.sub(b"", errs[i]), rc, loaded))
    return runs


def _split(data: bytes, n: int) -> list[bytes]:
    parts = _BEGIN_RE.split(data)  # [before, "0", run0, "1", run1, ...]
    found = {int(parts[j]): parts[j + 1] for j in range(1, len(parts) - 1, 2)}
    return [found.get(i, b"") for i in range(n)]


if __name__ == "__main__":
    usage = "usage: python tests/hostile_corpus.py build DIR | drive RUNS.json"
    if len(sys.argv) != 3 or sys.argv[1] not in ("build", "drive"):
        sys.exit(usage)
    if sys.argv[1] == "drive":
        sys.exit(drive(sys.argv[2]))
    corpus = build_corpus(Path(sys.argv[2]) / "corpus")
    print(f"{len(corpus.built)} files in {corpus.root}; skipped: {corpus.skipped or 'none'}")
