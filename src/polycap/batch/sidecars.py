"""Captions written next to the images: text sidecars (LoRA datasets) and XMP alt text.

**Text sidecars** (``photo.jpg`` -> ``photo.txt``): ``--ext``, ``--prefix``/``--suffix`` (trigger
words), ``--existing skip|overwrite|append|prepend`` for files already there. Layouts for several
languages: ``auto`` (one language: ``photo.txt``; several: ``photo.de.txt``), ``suffix`` (always
``photo.en.txt``), ``folder`` (``<sidecar-dir>/de/photo.txt``). With ``--sidecar-dir`` the files go
under that folder, named after the image id, instead of next to the images.

Which files this job wrote is kept in a journal (``sidecars.jsonl`` in the job's state folder),
each entry written *before* its file is moved into place, with the SHA-256 of the new content. Only
the last entry can describe a write a kill interrupted; on restart its file is checked against the
hash and the entry dropped if the file never arrived. ``append``/``prepend`` therefore never add a
caption twice, and ``skip`` tells the user's own captions (skipped) from this job's (done).

**XMP metadata** (:class:`XmpOutput`, the ``xmp`` extra: pyexiv2, GPL-3): IPTC "Alt Text
(Accessibility)" (``Xmp.iptc.AltTextAccessibility``) and ``Xmp.dc.description``, language
alternatives with one value per language (``x-default`` = the first language), written into a
copy of the image that then replaces it, or into a ``photo.xmp`` sidecar. Writing the same
values twice gives the same file, so its journal entry comes after the write; a ``pending`` entry
before the write names the file whose temporary copy a kill may leave, removed on the next start.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

from polycap.batch.inputs import Item
from polycap.batch.outputs import Output
from polycap.batch.state import Journal, remove_stale_temps, sha256_bytes, sha256_file, temp_path, write_atomic
from polycap.errors import OptionError
from polycap.images import is_url

POLICIES = ("skip", "overwrite", "append", "prepend")
LAYOUTS = ("auto", "suffix", "folder")


def _relative(item_id: str) -> PurePosixPath:
    """An image id as a safe relative path under a sidecar folder (no root, no ``..``)."""
    parts = [p for p in PurePosixPath(item_id.replace("\\", "/")).parts if p not in ("/", "..", ".", "")]
    return PurePosixPath(*parts) if parts else PurePosixPath("image")


def is_local(item: Item) -> bool:
    return isinstance(item.source, str) and not is_url(item.source)


class SidecarOutput(Output):
    """One text file per image and language; see the module docstring."""

    name = "sidecar"

    def __init__(
        self,
        state_dir: Path,
        langs: list[str],
        ext: str = ".txt",
        prefix: str = "",
        suffix: str = "",
        existing: str = "skip",
        layout: str = "auto",
        root: Path | None = None,
        separator: str = ", ",
    ):
        super().__init__()
        if existing not in POLICIES:
            raise OptionError(f"--existing must be one of {', '.join(POLICIES)}, got {existing!r}")
        if layout not in LAYOUTS:
            raise OptionError(f"--lang-layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        if layout == "folder" and root is None:
            raise OptionError("--lang-layout folder needs --sidecar-dir (the folder that holds en/, de/, ...)")
        self.langs, self.prefix, self.suffix, self.existing = langs, prefix, suffix, existing
        self.ext = ext if ext.startswith(".") else f".{ext}"
        self.layout, self.root, self.separator = layout, root, separator
        self.journal = Journal(state_dir / "sidecars.jsonl")
        self.files: dict[str, str] = {}  # target file -> "done" | "failed"

    def target(self, item: Item, lang: str) -> Path | None:
        """The sidecar file of ``item`` in ``lang`` (None: the image is no local file, no --sidecar-dir)."""
        if self.root is None:
            if not is_local(item):
                return None
            base = Path(item.path)
        else:
            base = self.root / _relative(item.id)
        if self.layout == "folder":
            return (self.root / lang / _relative(item.id)).with_suffix(self.ext)  # type: ignore[operator]
        if self.layout == "suffix" or (self.layout == "auto" and len(self.langs) > 1):
            return base.with_name(f"{base.stem}.{lang}{self.ext}")
        return base.with_name(base.stem + self.ext)

    def start(self, retry_failed: bool) -> None:
        entries = self.journal.entries()
        last = entries[-1] if entries else None
        if last:  # files are written one at a time, after their entry: only the last can have left a temp
            remove_stale_temps(Path(last["file"]))
        if last and not last.get("error") and sha256_file(Path(last["file"])) != last.get("sha256"):
            self.journal.drop_last()  # killed between journal and rename: that file never arrived
            entries.pop()
        for e in entries:  # the last entry of a file wins
            self.files[e["file"]] = "failed" if e.get("error") else "done"
        failed = {f for f, st in self.files.items() if st == "failed"}
        if retry_failed and failed:
            self.journal.rewrite([e for e in entries if e["file"] not in failed])
            self.files = {f: st for f, st in self.files.items() if f not in failed}

    def status(self, item: Item, lang: str) -> str | None:
        target = self.target(item, lang)
        if target is None:
            return "no-file"
        known = self.files.get(os.fspath(target))
        if known:
            return known
        if self.existing == "skip" and target.exists():
            return "existing"
        return None

    def write(self, item: Item, recs: list[dict[str, Any]]) -> dict[str, str] | None:
        own: dict[str, str] = {}
        for rec in recs:
            target = self.target(item, rec["lang"])
            if target is None:
                continue
            key = os.fspath(target)
            error = rec.get("error")
            if not error:
                try:
                    self._write_one(item, rec, target)
                    continue
                except OSError as e:  # a read-only folder, a full disk: this file fails, not the job
                    error = own[rec["lang"]] = f"cannot write the sidecar {key}: {e.strerror or e}"
            self.journal.append({"file": key, "id": item.id, "lang": rec["lang"], "error": error})
            self.files[key] = "failed"
        return own

    def _write_one(self, item: Item, rec: dict[str, Any], target: Path) -> None:
        key = os.fspath(target)
        data = self._content(target, rec.get("caption") or "").encode("utf-8", "backslashreplace")
        target.parent.mkdir(parents=True, exist_ok=True)
        self.journal.append({"file": key, "id": item.id, "lang": rec["lang"], "sha256": sha256_bytes(data)})
        write_atomic(target, data)
        self.files[key] = "done"

    def _content(self, target: Path, caption: str) -> str:
        new = f"{self.prefix}{caption}{self.suffix}"
        if self.existing not in ("append", "prepend") or not target.is_file():
            return new
        old = target.read_text(encoding="utf-8", errors="replace").strip()
        if not old:
            return new
        return f"{old}{self.separator}{new}" if self.existing == "append" else f"{new}{self.separator}{old}"

    def close(self) -> None:
        self.journal.close()


XMP_KEYS = ("Xmp.iptc.AltTextAccessibility", "Xmp.dc.description")
EMPTY_XMP = (
    '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"></x:xmpmeta>\n<?xpacket end="w"?>\n'
)


def write_alt_text(target: Path, captions: dict[str, str], default_lang: str, sidecar: bool) -> None:
    """Set alt text and description (one value per language) in ``target``, atomically.

    ``target`` is the image itself (embedded) or its ``.xmp`` sidecar; values of other languages
    already there are kept. Raises ``OSError``/``RuntimeError`` when the file cannot take XMP.
    """
    pyexiv2 = _pyexiv2()
    tmp = temp_path(target)
    try:
        if target.exists():
            shutil.copyfile(target, tmp)
        elif sidecar:
            tmp.write_text(EMPTY_XMP, encoding="utf-8")
        else:
            raise OSError(f"{target}: the image is gone")
        with pyexiv2.Image(os.fspath(tmp)) as im:
            current = im.read_xmp()
            values = {}
            for key in XMP_KEYS:
                alt = dict(current.get(key) or {}) if isinstance(current.get(key), dict) else {}
                for lang, text in captions.items():
                    alt[f'lang="{lang}"'] = text
                    if lang == default_lang:
                        alt['lang="x-default"'] = text
                values[key] = alt
            im.modify_xmp(values)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_alt_text(path: Path) -> dict[str, dict[str, str]]:
    """{xmp key: {language: text}} of the alt text and description in an image or .xmp file."""
    pyexiv2 = _pyexiv2()
    with pyexiv2.Image(os.fspath(path)) as im:
        xmp = im.read_xmp()
    return {
        key: {k.removeprefix('lang="').removesuffix('"'): v for k, v in (xmp.get(key) or {}).items()}
        for key in XMP_KEYS
        if key in xmp
    }


def _pyexiv2():
    try:
        import pyexiv2
    except ImportError as e:
        raise OptionError("writing XMP metadata needs pyexiv2 (GPL-3): pip install 'polycap[xmp]'") from e
    return pyexiv2


class XmpOutput(Output):
    """Alt text and description as XMP, in the image (``embed``) or a ``.xmp`` sidecar."""

    name = "xmp"

    def __init__(self, state_dir: Path, langs: list[str], mode: str = "sidecar"):
        super().__init__()
        if mode not in ("embed", "sidecar"):
            raise OptionError(f"--xmp must be embed or sidecar, got {mode!r}")
        _pyexiv2()
        self.langs, self.mode = langs, mode
        self.journal = Journal(state_dir / f"xmp-{mode}.jsonl")

    def target(self, item: Item) -> Path | None:
        if not is_local(item):
            return None
        path = Path(item.path)
        return path if self.mode == "embed" else path.with_suffix(".xmp")

    def start(self, retry_failed: bool) -> None:
        entries = self.journal.entries()
        pending = [e for e in entries if e.get("pending")]
        if pending:  # the file of the last write begun: a kill may have left its temporary copy
            remove_stale_temps(Path(pending[-1]["file"]))
        if retry_failed and any(e.get("error") for e in entries):
            entries = [e for e in entries if not e.get("error")]
            self.journal.rewrite(entries)
        self._load(entries)

    def status(self, item: Item, lang: str) -> str | None:
        return "no-file" if self.target(item) is None else self.state.get((item.id, lang))

    def write(self, item: Item, recs: list[dict[str, Any]]) -> dict[str, str] | None:
        target = self.target(item)
        if target is None:
            return None
        good = {r["lang"]: r["caption"] for r in recs if not r.get("error") and r.get("caption")}
        errors = {r["lang"]: r["error"] for r in recs if r.get("error")}
        own: dict[str, str] = {}
        if good:
            self.journal.append({"file": os.fspath(target), "pending": True})  # no id/lang: not a state entry
            try:
                write_alt_text(target, good, self.langs[0], sidecar=self.mode == "sidecar")
            except Exception as e:  # noqa: BLE001 - one file that takes no XMP must not end the job
                own = {lang: f"cannot write XMP metadata: {type(e).__name__}: {e}" for lang in good}
                errors.update(own)
                good = {}
        empty = [r["lang"] for r in recs if not r.get("error") and not r.get("caption")]  # nothing to write
        for lang in [*good, *empty]:
            self.journal.append({"id": item.id, "lang": lang, "file": os.fspath(target)})
            self.state[(item.id, lang)] = "done"
        for lang, error in errors.items():
            self.journal.append({"id": item.id, "lang": lang, "file": os.fspath(target), "error": error})
            self.state[(item.id, lang)] = "failed"
        return own

    def close(self) -> None:
        self.journal.close()
