"""The hostile-input corpus (``hostile_corpus.py``) through the CLI and the server (issue 18's proof).

CLI: the corpus is walked in every output format, to stdout and with ``--out``, in real subprocesses
(two, started together, each running several commands), so stdout bytes and encodings are the real
ones. Each run must end without a traceback, with the right exit code, output that parses as its
format and is valid UTF-8, exactly one record per input per language, and per case the outcome the
table gives. The usage errors (bad ``--out``, refused options), the globs and a few papercuts run
in the same subprocesses.

Server: the same files, uploaded as multipart and as JSON base64, get the same outcomes; hostile
names and over-limit options get 4xx JSON answers, never a 500.

Problems are collected per run and reported together, so one failure shows every broken case.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import hostile_corpus as hc
from hostile_corpus import LANGS, Built, Corpus, Expect, Refused, Run

HERE = Path(__file__).resolve().parent
FORMATS = ("text", "json", "jsonl", "csv")
TINY = ["--model", "polycap-tiny-random", "--device", "cpu", "-q", "--lang", ",".join(LANGS), "--max-tokens", "4"]
DRIVER_TIMEOUT_S = 240
CREDENTIAL_URL = "https://alice:s3cret@127.0.0.1/a.jpg"  # loopback: nothing leaves the machine


# ---- running the CLI ------------------------------------------------------------------------
def _env() -> dict[str, str]:
    """The user's environment, minus what would hide encoding bugs; one torch thread per process."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONIOENCODING", "PYTHONUTF8")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", COLUMNS="200")
    return env


def _start(argvs: list[list[str]], runs_file: Path) -> subprocess.Popen:
    runs_file.write_text(json.dumps(argvs), encoding="utf-8")
    cmd = [sys.executable, str(HERE / "hostile_corpus.py"), "drive", str(runs_file)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(), cwd=runs_file.parent)


def _finish(proc: subprocess.Popen, argvs: list[list[str]]) -> list[Run]:
    try:
        out, err = proc.communicate(timeout=DRIVER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        err += f"\n[test] driver killed after {DRIVER_TIMEOUT_S} s\n".encode()
    return hc.split_runs(argvs, out, err)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Corpus:
    return hc.build_corpus(tmp_path_factory.mktemp("hostile") / "corpus")


def _good(corpus: Corpus) -> list[str]:
    return [b.path for b in corpus.built if b.case.key in ("h01", "h02")]


def _misc_runs(corpus: Corpus) -> dict[str, list[str]]:
    """Usage errors first (before anything loads a model in the driver), then runs that caption."""
    base, good = corpus.root.parent, _good(corpus)
    (base / "outdir").mkdir()
    (base / "kept.jsonl").write_text("keep me\n", encoding="utf-8")
    (base / "replaced.jsonl").write_text("old line\n", encoding="utf-8")
    (base / "empty.jsonl").write_bytes(b"")
    caption = ["caption", *good, *TINY, "-f", "jsonl"]
    runs = {
        "out-missing-folder": [*caption, "--out", str(base / "no-such-folder" / "o.jsonl")],
        "out-is-directory": [*caption, "--out", str(base / "outdir")],
        "out-not-empty": [*caption, "--out", str(base / "kept.jsonl")],
    }
    runs.update({f"option-{name}": [*caption, *case.args] for name, case in hc.OPTION_CASES.items()})
    runs.update({
        "out-overwrite": [*caption, "--out", str(base / "replaced.jsonl"), "--overwrite"],
        "out-empty-existing": [*caption, "--out", str(base / "empty.jsonl")],
        "glob-heic": ["caption", str(corpus.root / "*.heic"), *TINY, "-f", "jsonl"],
        "glob-avif": ["caption", str(corpus.root / "*.avif"), *TINY, "-f", "jsonl"],
        "all-good": caption,
        "max-pixels-flag": [*caption, "--max-pixels", "100"],
        "url-credentials": ["caption", CREDENTIAL_URL, *TINY, "-f", "jsonl"],
    })  # fmt: skip
    return runs


@pytest.fixture(scope="module")
def cli(corpus: Corpus) -> dict[str, Run]:
    """Every CLI run of this module, keyed ``"<format>-stdout"``, ``"<format>-out"`` or a misc name.

    Two driver processes (one per core of a small CI machine), started together: importing torch
    costs more than captioning the corpus, so it is paid twice, not once per run. The misc runs come
    first in theirs, so the usage errors run before anything in that process has loaded a model.
    """
    base = corpus.root.parent
    (base / "out").mkdir()
    corpus_runs: dict[str, list[str]] = {}
    for fmt in FORMATS:
        argv = ["caption", *corpus.cli_inputs(), *TINY, "--batch-size", "16", "-f", fmt]
        # --out first: a crash writing stdout must not hide what the file run did
        corpus_runs[f"{fmt}-out"] = [*argv, "--out", str(base / "out" / f"corpus.{fmt}")]
        corpus_runs[f"{fmt}-stdout"] = argv
    names = list(corpus_runs)
    groups = [
        {n: corpus_runs[n] for n in names[:4]},
        {**_misc_runs(corpus), **{n: corpus_runs[n] for n in names[4:]}},
    ]
    procs = [_start(list(runs.values()), base / f"runs-{i}.json") for i, runs in enumerate(groups)]
    result: dict[str, Run] = {}
    for proc, runs in zip(procs, groups):
        result.update(zip(runs, _finish(proc, list(runs.values()))))
    return result


# ---- reading what a run wrote ------------------------------------------------------------------
def _utf8(data: bytes, what: str, problems: list[str]) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        problems.append(f"{what} is not valid UTF-8: {e}")
        return data.decode("utf-8", "replace")


def parse_records(fmt: str, text: str) -> list[dict]:
    """Records in the CLI's shape; raises if the text does not parse as ``fmt``."""
    if fmt == "json":
        data = json.loads(text)
        assert isinstance(data, list), "a --format json document must be a list of records"
        return data
    if fmt == "jsonl":
        return [json.loads(line) for line in text.split("\n") if line.strip()]
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
        return [{**r, "error": r.get("error") or None} for r in rows]
    assert text == "" or text.endswith("\n"), "text output must end with a newline"
    recs = []
    for line in text.split("\n")[:-1]:
        fields = line.split("\t")
        assert len(fields) == 3, f"a text line must be image<TAB>lang<TAB>caption, got {line!r}"
        recs.append({"image": fields[0], "lang": fields[1], "caption": fields[2], "error": None})
    return recs


def _unescape_name(image: str) -> bytes:
    r"""Bytes of a name in the documented escaped form (``\xNN`` for a byte that is not UTF-8)."""
    return re.sub(rb"\\x([0-9a-fA-F]{2})", lambda m: bytes([int(m.group(1), 16)]), image.encode("utf-8"))


def check_record(rec: dict, expected: dict[str, Expect], problems: list[str]) -> str | None:
    """Check one record against the table; returns its case key."""
    image = rec.get("image")
    if not isinstance(image, str):
        problems.append(f"record without an image name: {rec!r}")
        return None
    key = hc.case_key(image)
    if key not in expected:
        problems.append(f"a record for no input of this run: {image!r}")
        return None
    try:
        image.encode("utf-8")
    except UnicodeEncodeError:
        problems.append(f"{key}: image field is not valid Unicode (lone surrogate): {image!r}")
    if "\ufffd" in image:
        problems.append(f"{key}: image name lost bytes (U+FFFD): {image!r}")
    want, error = expected[key], rec.get("error")
    if want.ok and error:
        problems.append(f"{key} ({rec.get('lang')}): should be captioned, failed: {error}")
    elif not want.ok and not error:
        problems.append(f"{key} ({rec.get('lang')}): should fail with {want.reason!r}, was captioned")
    elif not want.ok and want.reason.lower() not in error.lower():
        problems.append(f"{key}: error should contain {want.reason!r}: {error}")
    return key


def check_counts(seen: Counter, keys: list[str], problems: list[str], where: str) -> None:
    """Exactly one record per input per language."""
    for key in keys:
        for lang in LANGS:
            if seen[key, lang] != 1:
                problems.append(f"{key} ({lang}): {seen[key, lang]} records in {where}, expected 1")


def check_stderr(text: str, expected: dict[str, Expect], problems: list[str]) -> set[str]:
    """Every stderr line is one ``error:`` line naming one failed input, once. Returns the keys named."""
    named: set[str] = set()
    for line in (x for x in text.split("\n") if x.strip()):
        keys = hc.KEY_RE.findall(line)
        if not line.startswith("error:") or not keys:
            problems.append(f"stray stderr line (a name broken over lines?): {line!r}")
        elif expected.get(keys[0], Expect(True)).ok:
            problems.append(f"{keys[0]}: an error line for an input that should be captioned: {line!r}")
        else:
            named.add(keys[0])
            if len(keys) != 1:
                problems.append(f"{keys[0]}: the error line names the path {len(keys)} times: {line!r}")
    return named


def _no_problems(problems: list[str]) -> None:
    unique = list(dict.fromkeys(problems))  # the same problem in two languages is shown once
    assert not unique, f"{len(unique)} problem(s):\n" + "\n".join(unique)


# ---- the corpus through every format, to stdout and to a file ------------------------------------
@pytest.mark.parametrize("dest", ["stdout", "out"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_corpus_through_the_cli(cli, corpus, fmt, dest):
    run = cli[f"{fmt}-{dest}"]
    problems: list[str] = []
    stderr = _utf8(run.stderr, "stderr", problems)
    if "Traceback" in stderr:
        problems.append("traceback in stderr:\n" + stderr[stderr.index("Traceback") :][-3000:])
    if run.rc != 1:
        problems.append(f"exit code {run.rc}, expected 1 (some items fail)")
    if dest == "out":
        if run.stdout.strip():
            problems.append(f"--out given, yet stdout got {run.stdout[:200]!r}")
        path = corpus.root.parent / "out" / f"corpus.{fmt}"
        data = path.read_bytes() if path.exists() else b""
    else:
        data = run.stdout
    text = _utf8(data, f"{fmt} output", problems)
    try:
        records = parse_records(fmt, text)
    except (AssertionError, ValueError) as e:
        problems.append(f"{fmt} output does not parse: {e}")
        records = []
    expected = corpus.cli_expected()
    _check_corpus_records(records, expected, fmt, check_stderr(stderr, expected, problems), problems, corpus)
    _no_problems(problems)


def _check_corpus_records(records, expected, fmt, named, problems, corpus) -> None:
    seen: Counter = Counter()
    images: dict[str, str] = {}
    for rec in records:
        key = check_record(rec, expected, problems)
        if key:
            seen[key, rec.get("lang")] += 1
            images[key] = rec["image"]
    failing = [k for k, e in expected.items() if not e.ok]
    if fmt == "text":  # failed items are reported on stderr only
        check_counts(seen, [k for k, e in expected.items() if e.ok], problems, "stdout")
        problems.extend(f"{k}: failed, but not named on stderr" for k in failing if k not in named)
    else:
        check_counts(seen, list(expected), problems, "the output")
        problems.extend(f"{k}: failed, but no error line on stderr" for k in failing if k not in named)
    _check_names(records, images, problems, corpus)


def _check_names(records, images: dict[str, str], problems: list[str], corpus: Corpus) -> None:
    """Non-UTF-8 names are recoverable (escaped form or ``image_bytes``), UTF-8 names kept verbatim."""
    paths = {b.case.key: b.path for b in corpus.built}
    if "h23" in images:
        raw = os.fsencode(paths["h23"])
        extra = [r.get("image_bytes") for r in records if hc.case_key(str(r.get("image"))) == "h23"]
        carried = {base64.b64decode(x) for x in extra if x} | {_unescape_name(images["h23"])}
        if raw not in carried:
            problems.append(f"h23: the Latin-1 name cannot be recovered from {images['h23']!r} / {extra!r}")
    if "h25" in images and not images["h25"].endswith("h25-café.jpg"):
        problems.append(f"h25: a valid UTF-8 name must be kept as it is: {images['h25']!r}")


# ---- usage errors: exit 2, one line, no traceback, and a bad --out before the model loads ---------
def _one_line_usage_error(run: Run) -> str:
    err = run.stderr.decode("utf-8", "replace")
    assert "Traceback" not in err, err
    assert run.rc == 2, f"exit code {run.rc}, expected 2; stderr: {err!r}"
    lines = [x for x in err.split("\n") if x.strip()]
    assert len(lines) == 1, f"expected one stderr line, got {lines!r}"
    assert not run.stdout.strip(), run.stdout
    return lines[0]


@pytest.mark.parametrize(("name", "needle"), [("out-missing-folder", "no-such-folder"), ("out-is-directory", "outdir")])
def test_bad_out_path_is_refused_before_the_model_loads(cli, name, needle):
    run = cli[name]
    line = _one_line_usage_error(run)
    assert needle in line, line
    assert not run.loaded, "the model was loaded before --out was checked"


def test_non_empty_out_is_refused_without_overwrite(cli, corpus):
    line = _one_line_usage_error(cli["out-not-empty"])
    assert "--overwrite" in line, line
    assert (corpus.root.parent / "kept.jsonl").read_text(encoding="utf-8") == "keep me\n"


@pytest.mark.parametrize("name", ["out-overwrite", "out-empty-existing"])
def test_out_written_when_allowed(cli, corpus, name):
    run = cli[name]
    assert run.rc == 0, run.stderr.decode("utf-8", "replace")
    path = corpus.root.parent / ("replaced.jsonl" if name == "out-overwrite" else "empty.jsonl")
    recs = parse_records("jsonl", path.read_text(encoding="utf-8"))
    assert [(hc.case_key(r["image"]), r["lang"]) for r in recs] == [(k, x) for k in ("h01", "h02") for x in LANGS]


@pytest.mark.parametrize("name", sorted(hc.OPTION_CASES))
def test_absurd_options_exit_2_with_one_line(cli, name):
    line = _one_line_usage_error(cli[f"option-{name}"])
    assert hc.OPTION_CASES[name].needle in line, line


def _jsonl_run(run: Run, rc: int) -> list[dict]:
    err = run.stderr.decode("utf-8", "replace")
    assert "Traceback" not in err and run.rc == rc, f"exit code {run.rc}, expected {rc}; stderr: {err!r}"
    return parse_records("jsonl", run.stdout.decode("utf-8"))


def test_heic_glob_is_reported_not_no_images_found(cli):
    recs = _jsonl_run(cli["glob-heic"], rc=1)
    assert [(hc.case_key(r["image"]), r["lang"]) for r in recs] == [("h08", x) for x in LANGS]
    assert all(hc.case("h08").cli.reason in r["error"].lower() for r in recs), recs


def test_avif_glob(cli):
    want = hc.case("h09").cli
    recs = _jsonl_run(cli["glob-avif"], rc=0 if want.ok else 1)
    assert [(hc.case_key(r["image"]), r["lang"]) for r in recs] == [("h09", x) for x in LANGS]
    assert all((r["error"] is None) == want.ok for r in recs), recs


def test_all_good_inputs_exit_0(cli):
    recs = _jsonl_run(cli["all-good"], rc=0)
    assert len(recs) == 2 * len(LANGS) and all(r["error"] is None for r in recs)


def test_the_bomb_message_names_a_flag_that_exists(cli):
    """The CLI used to say "pass a larger max_pixels", a Python argument it had no flag for."""
    recs = parse_records("jsonl", cli["jsonl-stdout"].stdout.decode("utf-8", "replace"))
    error = next(r["error"] for r in recs if hc.case_key(r["image"]) == "h10")
    assert "max_pixels" not in error or "--max-pixels" in error, error
    if "--max-pixels" in error:  # then the flag works: 48x32 pixels are over a limit of 100
        recs = _jsonl_run(cli["max-pixels-flag"], rc=1)
        assert all("image too large" in r["error"] for r in recs), recs


def test_url_credentials_are_not_echoed(cli):
    run = cli["url-credentials"]
    recs = _jsonl_run(run, rc=1)
    assert len(recs) == len(LANGS) and all(r["error"] for r in recs), recs
    assert b"s3cret" not in run.stdout + run.stderr, (run.stdout, run.stderr)


# ---- the server -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    """The tiny model, on one torch thread (busy CI cores make extra threads spin)."""
    pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'polycap[serve]'")
    pytest.importorskip("httpx", reason="the serve extra is not installed: pip install 'polycap[serve]'")
    import torch

    import polycap

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield polycap.load("polycap-tiny-random", device="cpu")
    torch.set_num_threads(threads)


def _serve(tiny, settings=None):
    from fastapi.testclient import TestClient

    from polycap.serve import ServeSettings, create_app

    app = create_app(settings or ServeSettings(), captioners=[tiny])
    return TestClient(app, raise_server_exceptions=False)  # a 500 is an answer to check, not an exception


@pytest.fixture(scope="module")
def client(tiny):
    with _serve(tiny) as c:
        yield c


def _upload_name(b: Built) -> str:
    return f"{b.case.key}-upload{os.path.splitext(b.case.name)[1].decode('ascii', 'replace')}"


def _post(client, kind: str, items: list[tuple[str, bytes]], **fields):
    if kind == "multipart":
        files = [("image", (name, data, "application/octet-stream")) for name, data in items]
        form = {k: str(v) for k, v in fields.items()}
        return client.post("/v1/captions", files=files, data={"lang": ",".join(LANGS), **form})
    images = [{"data": base64.b64encode(data).decode(), "name": name} for name, data in items]
    body = json.dumps({"images": images, "lang": list(LANGS), **fields})  # inf/nan as Infinity/NaN
    return client.post("/v1/captions", content=body.encode(), headers={"content-type": "application/json"})


@pytest.mark.parametrize("kind", ["multipart", "json"])
def test_corpus_through_the_server(client, corpus, kind):
    uploads = [b for b in corpus.uploads() if isinstance(b.case.server, Expect)]
    expected = {b.case.key: b.case.server for b in uploads}
    problems: list[str] = []
    seen: Counter = Counter()
    for start in range(0, len(uploads), 16):
        chunk = uploads[start : start + 16]
        r = _post(client, kind, [(_upload_name(b), b.case.data()) for b in chunk])
        if r.status_code != 200:
            problems.append(f"{[b.case.key for b in chunk]}: status {r.status_code}: {r.text[:300]}")
            continue
        body = r.json()
        if body["n_images"] != len(chunk) or len(body["results"]) != len(chunk) * len(LANGS):
            problems.append(f"{body['n_images']} images / {len(body['results'])} records for {len(chunk)} uploads")
        for rec in body["results"]:
            key = check_record(rec, expected, problems)
            if key:
                seen[key, rec["lang"]] += 1
    check_counts(seen, list(expected), problems, "the responses")
    _no_problems(problems)


@pytest.mark.parametrize("kind", ["multipart", "json"])
@pytest.mark.parametrize("key", ["h10", "h11"])
def test_server_refuses_pixel_bombs_with_the_true_size(client, corpus, kind, key):
    b = next(b for b in corpus.built if b.case.key == key)
    assert isinstance(b.case.server, Refused)
    r = _post(client, kind, [(_upload_name(b), b.case.data())])
    assert r.status_code == b.case.server.status, r.text
    assert b.case.server.detail in r.json()["detail"], r.json()


def test_lone_surrogate_name_is_a_4xx_json_error(client):
    data = base64.b64encode(hc.case("h01").data()).decode()
    body = json.dumps({"images": [{"data": data, "name": "a\udcff.jpg"}]})  # the JSON text has \udcff
    r = client.post("/v1/captions", content=body.encode(), headers={"content-type": "application/json"})
    assert r.status_code in (400, 422), (r.status_code, r.text[:300])
    assert isinstance(r.json()["detail"], str) and r.json()["detail"]


def test_latin1_bytes_in_a_multipart_file_name(client):
    """A browser or curl on a Latin-1 system sends the name's raw bytes: caption it, answer valid JSON."""
    boundary = "hostile-boundary-18"
    data = hc.case("h02").data()
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="'.encode()
        + b'img_0100_caf\xe9.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
        + data
        + f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="lang"\r\n\r\nen,de\r\n--{boundary}--\r\n'.encode()
    )
    r = client.post("/v1/captions", content=body, headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 200, r.text[:300]
    r.content.decode("utf-8")
    results = r.json()["results"]
    assert [x["lang"] for x in results] == list(LANGS) and all(x["error"] is None for x in results), results
    for x in results:
        x["image"].encode("utf-8")
        assert "img_0100_caf" in x["image"]


@pytest.mark.parametrize("kind", ["multipart", "json"])
def test_control_characters_in_names_are_not_echoed(client, kind):
    data = hc.case("h01").data()
    r = _post(client, kind, [("h26-tab\tname.png", data), ("h27-new\nline.png", data), ("h25-café.jpg", data)])
    assert r.status_code == 200, r.text[:300]
    names = [x["image"] for x in r.json()["results"]]
    assert not any(re.search(r"[\x00-\x1f\x7f]", n) for n in names), names
    assert "h25-café.jpg" in names


@pytest.mark.parametrize("kind", ["multipart", "json"])
@pytest.mark.parametrize("n", [17, 40])
def test_too_many_files_is_413_with_the_documented_message(client, kind, n):
    r = _post(client, kind, [(f"{i}.png", hc.case("h01").data()) for i in range(n)])
    assert r.status_code == 413, (r.status_code, r.text[:300])
    detail = r.json()["detail"]
    assert "too many images" in detail and "16" in detail, detail


OVER_LIMIT = {
    **{name: (case.server, case.needle) for name, case in hc.OPTION_CASES.items()},
    "beams-9": ({"num_beams": 9}, "num_beams"),
    "max-new-tokens-101": ({"max_new_tokens": 101}, "max_new_tokens"),
    "returns-9": ({"do_sample": True, "num_return_sequences": 9}, "num_return_sequences"),
}


@pytest.mark.parametrize("kind", ["multipart", "json"])
@pytest.mark.parametrize("name", sorted(OVER_LIMIT))
def test_over_limit_options_are_422_json(client, kind, name):
    fields, needle = OVER_LIMIT[name]
    r = _post(client, kind, [("ok.png", hc.case("h01").data())], **fields)
    assert r.status_code == 422, (r.status_code, r.text[:300])
    assert needle in r.json()["detail"], r.json()


def test_server_does_not_echo_url_credentials(tiny):
    """Both URLs are refused by the real fetcher (loopback, private), before any connection."""
    from polycap.serve import ServeSettings

    urls = [CREDENTIAL_URL, "http://bob:hunter2@10.0.0.1/good.png"]
    with _serve(tiny, ServeSettings(allow_urls=True)) as c:
        r = c.post("/v1/captions", json={"images": [{"url": u} for u in urls], "lang": list(LANGS)})
    assert r.status_code == 200, r.text[:300]
    results = r.json()["results"]
    assert len(results) == 2 * len(LANGS) and all(x["error"] for x in results), results
    assert "hunter2" not in r.text and "s3cret" not in r.text, r.text
