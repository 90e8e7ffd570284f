"""METEOR 1.5 through the official jar (the one shipped inside pycocoevalcap), run with Java.

METEOR has no faithful Python port (NLTK's differs: other matcher, no paraphrases, other
parameters), so we talk to the jar in its ``-stdio`` mode exactly as pycocoevalcap does:
``SCORE ||| ref1 ||| ref2 ||| hyp`` returns one line of statistics per image, then
``EVAL ||| stats1 ||| stats2 ...`` returns each image's score and the corpus score (computed by
the jar from the summed statistics).  Unlike pycocoevalcap's wrapper, this one

* writes in a separate thread while reading, so large inputs cannot deadlock on full pipes,
  and sends stderr to a file instead of a pipe nobody reads;
* encodes UTF-8 explicitly (the jar reads UTF-8) and removes ``|||`` and line breaks from
  every caption, references included, so no caption can break the protocol;
* serialises calls per process with a lock and keeps one process per configuration alive
  for the session (starting the JVM and loading the 60 MB paraphrase table takes seconds);
  a failed call kills its process so the next call starts clean.

Languages.  The jar knows en, cz, de, es, fr and, with language-independent parameters, da fi
hu it nl no pt ro ru se tr; but pycocoevalcap ships only the *English* paraphrase table, and
the jar refuses to start for the others without theirs.  So:

* en: the official configuration ``-l en -norm`` (exact, stem, synonym, paraphrase), identical
  to pycocoevalcap;
* a language the jar knows, with ``paraphrase-<code>.gz`` found next to the jar (``data/``) or
  in ``$POLYCAP_METEOR_DATA``: its official configuration;
* a language the jar knows, without that table: the jar's parameters and stemmer for it but
  modules ``exact stem`` (``exact`` for Czech, which has no stemmer) -- reported in the notes
  as not comparable with published METEOR scores for that language;
* any other language (Arabic included: the jar's Arabic mode is experimental and expects
  Buckwalter transliteration): ``-l other``, exact matching only.

Inputs are tokenised captions; languages without a jar normaliser get ``-lower`` instead of
``-norm`` (their input is already tokenised and casefolded).
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_JAR_CODES = {
    "en": "en",
    "cs": "cz",
    "cz": "cz",
    "de": "de",
    "es": "es",
    "fr": "fr",
    "ru": "ru",
    "da": "da",
    "fi": "fi",
    "hu": "hu",
    "it": "it",
    "nl": "nl",
    "no": "no",
    "nb": "no",
    "pt": "pt",
    "ro": "ro",
    "sv": "se",
    "se": "se",
    "tr": "tr",
}
_HAS_NORMALIZER = {"en", "cz", "de", "es", "fr", "ru"}


@dataclass(frozen=True)
class MeteorConfig:
    """How the jar is run for one language: its arguments and a note for reports."""

    args: tuple[str, ...]
    note: str


def find_jar() -> Path | None:
    """``$POLYCAP_METEOR_JAR``, else the meteor-1.5.jar inside the installed pycocoevalcap."""
    env = os.environ.get("POLYCAP_METEOR_JAR")
    if env:
        return Path(env) if Path(env).is_file() else None
    try:
        spec = importlib.util.find_spec("pycocoevalcap")
    except (ImportError, ValueError):
        return None
    for base in (spec.submodule_search_locations or []) if spec else []:
        jar = Path(base) / "meteor" / "meteor-1.5.jar"
        if jar.is_file():
            return jar
    return None


def meteor_unavailable() -> str | None:
    """Why METEOR cannot run here (no Java, no jar), or None."""
    if shutil.which("java") is None:
        return "java is not on PATH (METEOR 1.5 is a Java program)"
    if find_jar() is None:
        return "meteor-1.5.jar not found: install pycocoevalcap (it ships the jar) or set POLYCAP_METEOR_JAR"
    return None


def _paraphrase_table(code: str, jar: Path) -> Path | None:
    dirs = [jar.parent / "data"]
    if os.environ.get("POLYCAP_METEOR_DATA"):
        dirs.insert(0, Path(os.environ["POLYCAP_METEOR_DATA"]))
    for d in dirs:
        if (d / f"paraphrase-{code}.gz").is_file():
            return d / f"paraphrase-{code}.gz"
    return None


def meteor_config(lang: str, jar: Path) -> MeteorConfig:
    """The jar configuration for ``lang`` (see the module docstring for the policy)."""
    base = lang.lower().replace("_", "-").split("-")[0]
    code = _JAR_CODES.get(base)
    if code is None:
        why = (
            "the jar's only Arabic mode (ar-bw-red, experimental) needs Buckwalter-transliterated text"
            if base == "ar"
            else "the jar has no module for this language"
        )
        return MeteorConfig(
            ("-l", "other", "-lower"),
            f"METEOR 1.5 language-independent mode ('other', exact matches only) for '{lang}': {why}",
        )
    norm = "-norm" if code in _HAS_NORMALIZER else "-lower"
    table = _paraphrase_table(code, jar)
    if table is not None:
        extra = () if table.parent == jar.parent / "data" else ("-a", str(table))
        return MeteorConfig(("-l", code, norm, *extra), f"METEOR 1.5 official configuration for '{code}'")
    modules = "exact" if code == "cz" else "exact stem"
    return MeteorConfig(
        ("-l", code, norm, "-m", modules),
        f"METEOR 1.5 '{code}' parameters with modules '{modules}' only: "
        f"paraphrase-{code}.gz is not shipped with pycocoevalcap (set "
        f"POLYCAP_METEOR_DATA to a folder holding it); not comparable with "
        f"published METEOR-{code} scores",
    )


def _clean(text: str) -> str:
    """Make a caption safe for the line protocol (the jar's reader splits lines at CR and LF).

    On tokenised captions this is exactly pycocoevalcap's treatment of hypotheses.
    """
    return re.sub("[\r\n]", " ", text.replace("|||", "")).replace("  ", " ")


class MeteorProcess:
    """One running METEOR jar in ``-stdio`` mode; :meth:`score` may be called many times."""

    def __init__(self, jar: Path, config: MeteorConfig, java: str = "java") -> None:
        self.config = config
        self._lock = threading.Lock()
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the jar
        cmd = [java, "-jar", "-Xmx2G", str(jar), "-", "-", "-stdio", *config.args]
        self._proc = subprocess.Popen(
            cmd, cwd=jar.parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr
        )

    def alive(self) -> bool:
        return self._proc.poll() is None

    def _fail(self, what: str) -> RuntimeError:
        self.close()
        self._stderr.seek(0)
        tail = self._stderr.read()[-2000:].decode("utf-8", "replace").strip()
        return RuntimeError(f"METEOR jar failed while {what}: {tail or 'no error output'}")

    def _exchange(self, lines: list[str], n_replies: int, what: str) -> list[str]:
        """Write ``lines`` from a thread while reading ``n_replies`` lines (no pipe deadlock)."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        stdin, stdout = self._proc.stdin, self._proc.stdout
        errors: list[BaseException] = []

        def write() -> None:
            try:
                for line in lines:
                    stdin.write(line.encode("utf-8") + b"\n")
                stdin.flush()
            except (BrokenPipeError, OSError) as e:
                errors.append(e)

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        replies = []
        for _ in range(n_replies):
            raw = stdout.readline()
            if not raw:
                writer.join(timeout=1)
                raise self._fail(what)
            replies.append(raw.decode("utf-8").strip())
        writer.join()
        if errors:
            raise self._fail(what)
        return replies

    def score(self, hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> tuple[float, list[float]]:
        """Corpus METEOR and per-image scores for tokenised hypotheses and references."""
        if not hyps:
            raise ValueError("METEOR needs at least one hypothesis")
        with self._lock:
            if not self.alive():
                raise self._fail("starting")
            score_lines = [
                " ||| ".join(("SCORE", " ||| ".join(_clean(r) for r in rs), _clean(h)))
                for h, rs in zip(hyps, refs, strict=True)
            ]
            stats = self._exchange(score_lines, len(score_lines), "computing statistics")
            eval_line = "EVAL ||| " + " ||| ".join(stats)
            out = self._exchange([eval_line], len(stats) + 1, "scoring")
            try:
                return float(out[-1]), [float(x) for x in out[:-1]]
            except ValueError as e:
                raise self._fail(f"parsing its output ({e})") from e

    def close(self) -> None:
        """Stop the jar (safe to call twice)."""
        if self._proc.poll() is None:
            try:
                if self._proc.stdin:
                    self._proc.stdin.close()
                self._proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        for pipe in (self._proc.stdout,):
            if pipe:
                pipe.close()


_PROCESSES: dict[tuple[str, ...], MeteorProcess] = {}
_PROCESSES_LOCK = threading.Lock()


def _shared_process(jar: Path, config: MeteorConfig) -> MeteorProcess:
    key = (str(jar), *config.args)
    with _PROCESSES_LOCK:
        proc = _PROCESSES.get(key)
        if proc is None or not proc.alive():
            proc = _PROCESSES[key] = MeteorProcess(jar, config)
        return proc


@atexit.register
def close_all() -> None:
    """Stop every jar started by :func:`meteor` (also run at interpreter exit)."""
    with _PROCESSES_LOCK:
        for proc in _PROCESSES.values():
            proc.close()
        _PROCESSES.clear()


def meteor(
    hyps: Sequence[str],
    refs: Sequence[Sequence[str]],
    lang: str = "en",
) -> tuple[float, list[float], str]:
    """Corpus METEOR, per-image scores and the configuration note, via a shared jar process.

    Raises RuntimeError when Java or the jar is missing (see :func:`meteor_unavailable`) or the
    jar fails; :func:`polycap.eval.metrics.score` turns that into ``None`` with the reason.
    """
    reason = meteor_unavailable()
    if reason is not None:
        raise RuntimeError(reason)
    jar = find_jar()
    assert jar is not None
    config = meteor_config(lang, jar)
    score, per_image = _shared_process(jar, config).score(hyps, refs)
    return score, per_image, config.note
