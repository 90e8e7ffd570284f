"""Run a captioner over a manifest split and score it: what ``polycap eval`` and ``polycap score`` do.

Both produce the same report (keys are read by later tools and benchmarks, keep them):
``{"model", "data", "split", "options", "languages": {lang: {"n_images", "n_refs_per_image",
"metrics", "n_errors"}}, "speed": {"images_per_s", "ms_per_image", ...; "runtime" for polycap's own
models}, "polycap_version"}``. With ``--objects`` an English block also has ``"objects"`` (CHAIR,
recall, largest object named), with ``--labels`` each block ``"subject_named"``; see
:mod:`polycap.eval.objects`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from polycap._version import __version__
from polycap.data.manifest import ManifestItem
from polycap.errors import PolycapError
from polycap.types import GenerationOptions

Progress = Callable[[int], None]  # called with the number of images just finished


def references_for(items: Iterable[ManifestItem], lang: str, max_refs: int | None = None) -> dict[str, list[str]]:
    """{image key: references in ``lang``}; images without a reference in ``lang`` are left out."""
    refs = {}
    for it in items:
        caps = [c for c in it.captions.get(lang, []) if c.strip()]
        if caps:
            refs[it.key] = caps[:max_refs] if max_refs else caps
    return refs


def caption_targets(
    items: Iterable[ManifestItem], langs: list[str], max_refs: int | None = None,
    also: Mapping[str, Iterable[str]] | None = None,
) -> dict[str, set[str]]:
    """{lang: keys of the images to caption}: those with references in ``lang``, plus ``also[lang]``."""
    items = list(items)
    out = {lang: set(references_for(items, lang, max_refs)) for lang in langs}
    for lang, keys in (also or {}).items():
        if lang in out:
            out[lang].update(keys)
    return out


def available_languages(items: Iterable[ManifestItem]) -> list[str]:
    seen: dict[str, None] = {}
    for it in items:
        for lang, caps in it.captions.items():
            if caps:
                seen.setdefault(lang)
    return list(seen)


def evaluate_model(
    captioner: Any,
    items: list[ManifestItem],
    langs: list[str],
    options: GenerationOptions,
    max_refs: int | None = None,
    batch_size: int = 16,
    preds_out: IO[str] | None = None,
    progress: Progress | None = None,
    also: Mapping[str, Iterable[str]] | None = None,
) -> tuple[dict[str, dict[str, str]], dict[str, Any], dict[str, int]]:
    """Caption every image that has references in each language; stream predictions.

    ``also`` names more images to caption per language, references or not (labelled sets, images
    with instance annotations). Returns (predictions {lang: {key: caption}}, speed, errors per
    language). A failed item is scored as an empty caption (it counts against the model) and
    counted in the errors.
    """
    targets = caption_targets(items, langs, max_refs, also)
    wanted = [it for it in items if any(it.key in targets[lang] for lang in langs)]
    preds: dict[str, dict[str, str]] = {lang: {} for lang in langs}
    errors = dict.fromkeys(langs, 0)
    paths = [str(it.image) for it in wanted]
    # One pass: each image is loaded (and, for native models, encoded) once for all languages.
    start = time.perf_counter()
    stream = captioner.iter_captions(paths, options, batch_size=batch_size, langs=langs)
    done = 0
    for n, cap in enumerate(stream):
        it = wanted[n // len(langs)]
        if it.key not in targets[cap.lang]:
            continue  # not wanted in this language (no reference): not scored
        preds[cap.lang][it.key] = cap.text if cap.ok else ""
        errors[cap.lang] += 0 if cap.ok else 1
        done += 1
        if preds_out is not None:
            rec = {"image": it.key, "lang": cap.lang, "caption": cap.text, "score": cap.score, "error": cap.error}
            preds_out.write(json.dumps(rec, ensure_ascii=False) + "\n")
            preds_out.flush()
        if progress:
            progress(1)
    seconds = time.perf_counter() - start
    # Speed counts captions produced (image x language), the unit a user waits for.
    speed = {
        "captions_per_s": done / seconds if seconds else 0.0,
        "images_per_s": len(wanted) / seconds if seconds else 0.0,
        "ms_per_image": 1000 * seconds / len(wanted) if wanted else 0.0,
        "languages_per_image": len(langs),
    }
    if getattr(captioner, "runtime", None):  # polycap's own models: torch or onnx
        speed["runtime"] = captioner.runtime
    return preds, speed, errors


def read_predictions(
    path: str | Path, items: Iterable[ManifestItem] | None = None, langs: list[str] | None = None
) -> dict[str, dict[str, str]]:
    """Predictions as {lang: {image key: caption}}; see :func:`load_predictions`."""
    return load_predictions(path, items, langs)[0]


def load_predictions(
    path: str | Path, items: Iterable[ManifestItem] | None = None, langs: list[str] | None = None
) -> tuple[dict[str, dict[str, str]], dict[str, int]]:
    """Predictions {lang: {image key: caption}} and failures {lang: count} of one system's output.

    Read: JSON Lines of ``polycap caption``/``polycap eval`` (``{"image", "lang", "caption"}``) or
    of ``polycap batch`` (``{"id", "path", "lang", "caption", "error"}``: the image is its ``id``),
    a ``polycap batch --parquet`` file or folder, or a folder of JSON Lines (``--engine ray``
    shards). A record with an ``error`` is a failure, not an empty caption. With the manifest's
    ``items``, a record whose name is no manifest key but whose ``path`` (else its name) is one of
    the manifest's image files, relative to the current folder, counts for that image: records of
    a batch over the image folder, or of ``polycap caption`` on it, score too.

    A COCO caption results file (``[{"image_id", "caption"}]``, what ``polycap batch --coco``
    writes) carries no language: ``langs`` must name exactly one. See :func:`_coco_rows` for how
    its ids are mapped back to images.
    """
    items = list(items or [])
    keys = {it.key for it in items}
    by_file = {str(it.image): it.key for it in items}
    preds: dict[str, dict[str, str]] = {}
    failed: dict[str, int] = {}
    path = Path(path)
    rows = _coco_rows(path, items, langs) if _is_coco_results(path) else _prediction_rows(path)
    for where, rec in rows:
        try:
            lang, name = rec["lang"], rec["image"] if "image" in rec else rec["id"]
            if not isinstance(lang, str) or not isinstance(name, str):
                raise TypeError("image (or id) and lang must be strings")
        except (KeyError, TypeError) as e:
            raise PolycapError(f"{where}: bad prediction line ({e}); need image (or id), lang, caption") from e
        if name not in keys and by_file:
            name = by_file.get(_resolved(rec.get("path") or name), name)
        if rec.get("error"):
            failed[lang] = failed.get(lang, 0) + 1
        else:
            preds.setdefault(lang, {})[name] = rec.get("caption") or ""
    return preds, failed


def _resolved(name: str) -> str:
    try:
        return str(Path(name).resolve())
    except (OSError, RuntimeError, ValueError):
        return name


def _is_coco_results(path: Path) -> bool:
    """A JSON file holding one list (COCO results), not JSON Lines of objects or Parquet."""
    if not path.is_file() or path.suffix == ".parquet":
        return False
    with path.open("rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"[")


def _coco_rows(path: Path, items: list[ManifestItem], langs: list[str] | None) -> Iterable[tuple[str, Any]]:
    """(where, record) for the entries of a COCO caption results file, in the one language given.

    The image of an ``image_id``: when the journal ``polycap batch --coco`` keeps beside the file
    (``FILE.json.state.jsonl``; with several languages ``FILE.json.state.jsonl`` beside
    ``FILE.<lang>.json``) holds exactly these results in this order, the job's own record ids (and
    its failed images, as failures); else a text id is the image's name (a manifest key or image
    file, as for JSON Lines), and a number is the manifest image whose name the batch writer turns
    into that number (``COCO_val2014_000000391895.jpg`` -> 391895, ``42.jpg`` -> 42).
    """
    from polycap.errors import OptionError
    from polycap.records import coco_image_id

    if not langs or len(langs) != 1:
        raise OptionError(f"{path} holds COCO caption results, which carry no language: pass --lang with the "
                          "one language of its captions")  # fmt: skip
    lang = langs[0]
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise PolycapError(f"{path}: not a COCO results JSON file ({e})") from e
    for n, r in enumerate(results, 1):
        ok = isinstance(r, dict) and isinstance(r.get("image_id"), (int, str)) and isinstance(r.get("caption"), str)
        if not ok or isinstance(r["image_id"], bool):
            raise PolycapError(f'{path}: entry {n} is not a COCO result; need {{"image_id", "caption"}}')
    journal = _coco_journal(path, lang, results)
    if journal is not None:
        for n, e in enumerate(journal, 1):
            yield f"{path} (journal entry {n})", {"image": str(e["id"]), "lang": lang, "caption": e.get("caption"),
                                                  "error": e.get("error")}  # fmt: skip
        return
    by_number: dict[int, list[str]] = {}
    for it in items:
        number = coco_image_id(it.key)
        if isinstance(number, int):
            by_number.setdefault(number, []).append(it.key)
    for n, r in enumerate(results, 1):
        name = r["image_id"]
        if isinstance(name, int):
            named = by_number.get(name, [str(name)])
            if len(named) > 1:
                raise PolycapError(
                    f"{path}: entry {n}: image_id {name} fits several manifest images ({', '.join(named[:3])}); "
                    "keep the batch job's journal beside the file (its .state.jsonl) to tell them apart"
                )
            name = named[0]
        yield f"{path} entry {n}", {"image": name, "lang": lang, "caption": r["caption"]}


def _coco_journal(path: Path, lang: str, results: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The entries in ``lang`` of the batch journal that wrote ``results``, if one beside the file
    matches them entry for entry (a later run that was killed before rewriting the file does not)."""
    from polycap.records import coco_image_id, coco_state_path

    candidates = [coco_state_path(path)]
    if path.stem.endswith(f".{lang}"):  # FILE.<lang>.json of a job in several languages
        candidates.append(coco_state_path(path.with_name(path.stem[: -len(lang) - 1] + path.suffix)))
    want = [(r["image_id"], r["caption"]) for r in results]
    for journal in candidates:
        try:
            lines = journal.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        entries = []
        for line in lines:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if isinstance(e, dict) and e.get("lang") == lang and isinstance(e.get("id"), str):
                entries.append(e)
        got = [(coco_image_id(e["id"]), e.get("caption") or "") for e in entries if not e.get("error")]
        if got == want:
            return entries
    return None


def _prediction_rows(path: Path) -> Iterable[tuple[str, Any]]:
    """(where, record) for every record of a JSON Lines or Parquet file, or of a folder of them."""
    files = [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".jsonl", ".parquet") and not p.name.startswith("."))
        if not files:
            raise PolycapError(f"{path}: no .jsonl or .parquet predictions in the folder")
    for f in files:
        if f.suffix == ".parquet":
            try:
                import pyarrow.parquet as pq
            except ImportError as e:
                raise PolycapError("reading Parquet predictions needs pyarrow: pip install 'polycap[batch]'") from e
            names = pq.read_schema(f).names
            table = pq.read_table(f, columns=[c for c in ("id", "path", "lang", "caption", "error") if c in names])
            for n, row in enumerate(table.to_pylist(), 1):
                yield f"{f} row {n}", row
            continue
        with f.open(encoding="utf-8") as lines:
            for lineno, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    yield f"{f}:{lineno}", json.loads(line)
                except json.JSONDecodeError as e:
                    raise PolycapError(f"{f}:{lineno}: bad prediction line ({e}); need image, lang, caption") from e


def build_report(
    items: list[ManifestItem],
    preds: dict[str, dict[str, str]],
    langs: list[str],
    max_refs: int | None,
    meta: dict[str, Any],
    errors: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Score predictions per language against the manifest's references."""
    from polycap.eval.report import build_language_report

    languages = {}
    for lang in langs:
        refs = references_for(items, lang, max_refs)
        lang_preds = preds.get(lang, {})
        keys = [k for k in refs if k in lang_preds]
        if not keys:
            continue
        report = build_language_report({k: refs[k] for k in keys}, {k: lang_preds[k] for k in keys}, lang, max_refs)
        # Coverage is part of the result: a partial run must not pass for a full one.
        report["n_missing"] = len(refs) - len(keys)  # images with references but no prediction
        report["n_ignored"] = len(lang_preds) - len(keys)  # predictions for images without references
        if errors is not None:
            report["n_errors"] = errors.get(lang, 0)
        languages[lang] = report
    return {**meta, "languages": languages, "polycap_version": __version__}
