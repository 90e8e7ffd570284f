"""Issue 18 paper cuts: option bounds refused up front, text with brackets printed as written, and
``polycap models`` names that can always be copied into ``--model``."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Sequence

import pytest
from PIL import Image

import polycap
from polycap.backends.base import Capabilities, Captioner
from polycap.cli import main
from polycap.errors import MissingDependencyError
from polycap.types import Caption

TINY = ["--model", "polycap-tiny-random", "--device", "cpu"]
HUGE_SEED = "99999999999999999999999"
# (flags, what the one error line says); each of these used to run (slowly, or failing every item)
BAD_FLAGS = [
    (["--seed", HUGE_SEED], f"seed must be <= 2147483647, got {HUGE_SEED}"),
    (["--temperature", "inf", "--sample"], "temperature must be > 0 and <= 100, got inf"),
    (["--temperature", "nan", "--sample"], "temperature must be > 0 and <= 100, got nan"),
    (["--top-p", "nan", "--sample"], "top_p must be in (0, 1], got nan"),
    (["--length-penalty", "inf"], "length_penalty must be a number from -10 to 10, got inf"),
    (["--beams", "1000"], "num_beams must be <= 16, got 1000"),
    (["--max-tokens", "100000"], "max_new_tokens must be <= 1024, got 100000"),
    (["--top-k", "1000000000", "--sample"], "top_k must be <= 1000000, got 1000000000"),
    (["--num-return", "100", "--sample"], "num_return_sequences must be <= 16, got 100"),
]


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


# ---- 10. option bounds: the CLI exits 2 with one line ----------------------------------------
@pytest.mark.parametrize(("flags", "message"), BAD_FLAGS)
def test_caption_refuses_absurd_options_with_one_line(photo_dir, capsys, flags, message):
    assert main(["caption", str(photo_dir / "img0.png"), *TINY, "-q", *flags]) == 2
    captured = capsys.readouterr()
    assert _error_lines(captured.err) == [f"error: {message}"], captured.err
    assert captured.out == ""  # no records: nothing was captioned


def test_eval_refuses_a_seed_out_of_range(photo_dir, tmp_path, capsys):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"image": str(photo_dir / "img0.png"), "split": "val",
                                    "captions": {"en": ["a red square"]}}) + "\n")  # fmt: skip
    assert main(["eval", "--data", str(manifest), *TINY, "-q", "--seed", HUGE_SEED]) == 2
    assert _error_lines(capsys.readouterr().err) == [f"error: seed must be <= 2147483647, got {HUGE_SEED}"]


# ---- 10. the same bounds give 422 from the server --------------------------------------------
class EchoCaptioner(Captioner):
    """Captions without a model: the server checks options before any captioner runs."""

    def __init__(self):
        super().__init__("echo", Capabilities(languages=("en",)))

    def caption_batch(self, images: Sequence[Image.Image], options) -> list[Caption]:
        return [Caption(f"{im.width}x{im.height}", options.lang, self.name) for im in images]


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def client():
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    pytest.importorskip("httpx", reason="the serve extra is not installed")
    from fastapi.testclient import TestClient

    from polycap.serve import ServeSettings, create_app

    # server limits above GenerationOptions' own, so these requests meet the shared bounds
    settings = ServeSettings(max_beams=1000, max_new_tokens=100_000)
    with TestClient(create_app(settings, captioners=[EchoCaptioner()])) as c:
        yield c


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"seed": HUGE_SEED}, "seed must be <= 2147483647"),
        ({"temperature": "inf", "do_sample": "true"}, "temperature must be > 0 and <= 100, got inf"),
        ({"temperature": "nan", "do_sample": "true"}, "temperature must be > 0 and <= 100, got nan"),
        ({"length_penalty": "-inf"}, "length_penalty must be a number from -10 to 10, got -inf"),
        ({"num_beams": "1000"}, "num_beams must be <= 16, got 1000"),
        ({"max_new_tokens": "5000"}, "max_new_tokens must be <= 1024"),
    ],
)
def test_server_refuses_the_same_options_with_422(client, fields, message):
    form = client.post("/v1/captions", files=[("image", ("a.png", _png(), "image/png"))], data=fields)
    assert form.status_code == 422 and message in form.json()["detail"], form.text
    assert client.post("/v1/captions", files=[("image", ("a.png", _png(), "image/png"))]).status_code == 200


def test_server_refuses_non_finite_json_numbers_with_422(client):
    import base64

    image = base64.b64encode(_png()).decode()
    body = json.dumps({"images": [image], "do_sample": True, "temperature": float("inf")})
    assert "Infinity" in body  # not strict JSON, but Python's json (and so the server) reads it
    r = client.post("/v1/captions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "temperature must be > 0 and <= 100, got inf" in r.json()["detail"], r.text
    r = client.post("/v1/captions", json={"images": [image], "seed": int(HUGE_SEED)})
    assert r.status_code == 422 and "seed must be <= 2147483647" in r.json()["detail"], r.text


# ---- 12. brackets are text, never rich markup ------------------------------------------------
def test_install_hint_keeps_its_brackets(photo_dir, capsys, monkeypatch):
    def needs_gemma(name, **kwargs):
        raise MissingDependencyError("llama_cpp", "gemma", "clipcap-gemma270m-effnet")

    monkeypatch.setattr(polycap, "load", needs_gemma)
    assert main(["caption", str(photo_dir / "img0.png"), "--model", "clipcap-gemma270m-effnet", "-q"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'polycap[gemma]'" in err, err
    assert _error_lines(err) == [
        "error: llama_cpp is required for clipcap-gemma270m-effnet; install it with: pip install 'polycap[gemma]'"
    ]


def test_shared_consoles_print_markup_as_text(capsys):
    from polycap.cli.common import err, out, usage_error

    out.print("[bold]polycap[gemma][/bold] :smile:")
    err.print("[red]x[/red]")
    usage_error("needs [b]polycap[serve][/b]")
    captured = capsys.readouterr()
    assert captured.out == "[bold]polycap[gemma][/bold] :smile:\n"
    assert captured.err.splitlines() == ["[red]x[/red]", "error: needs [b]polycap[serve][/b]"]


def test_models_table_shows_brackets_in_descriptions(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["models", "--format", "table"]) == 0
    table = capsys.readouterr().out
    assert "needs polycap[gemma]" in table  # the clipcap-gemma270m-effnet description


def test_help_texts_hold_no_brackets_that_rich_would_eat():
    """typer renders help with rich markup: '[gemma]' in a help string would vanish (use \\[ instead)."""
    import typer

    from polycap.cli import commands  # noqa: F401 - registers the commands
    from polycap.cli.app import app

    root = typer.main.get_command(app)
    for name, command in root.commands.items():
        texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
        for text in texts:
            assert "[" not in text.replace("\\[", ""), f"polycap {name}: {text!r}"


# ---- 13. polycap models: names are never cut -------------------------------------------------
def _polycap(*args: str, columns: int = 80) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": str(columns)}
    return subprocess.run([sys.executable, "-m", "polycap", *args], capture_output=True, text=True, env=env,
                          timeout=120)  # fmt: skip


def test_models_piped_prints_one_full_name_per_line():
    proc = _polycap("models")  # stdout is a pipe, not a terminal
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [m["name"] for m in polycap.list_models()]


@pytest.mark.parametrize("columns", [80, 40])
def test_models_table_never_truncates_names(columns):
    proc = _polycap("models", "--format", "table", columns=columns)
    assert proc.returncode == 0, proc.stderr
    assert "…" not in proc.stdout
    first_cells = [line.split("│")[1].strip() for line in proc.stdout.splitlines() if line.startswith("│")]
    names = [m["name"] for m in polycap.list_models()]
    assert [c.removesuffix(" (default)") for c in first_cells if c] == names
    if columns == 80:
        assert max(len(line) for line in proc.stdout.splitlines()) <= 80  # and it still fits the terminal


def test_models_formats(capsys, monkeypatch):
    names = [m["name"] for m in polycap.list_models()]
    assert main(["models", "--format", "json"]) == 0
    assert [m["name"] for m in json.loads(capsys.readouterr().out)["models"]] == names
    assert main(["models", "--json"]) == 0  # the older spelling still works
    assert [m["name"] for m in json.loads(capsys.readouterr().out)["models"]] == names
    assert main(["models", "--format", "names"]) == 0
    assert capsys.readouterr().out.splitlines() == names
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)  # on a terminal the default is the table
    assert main(["models"]) == 0
    assert "┃ name" in capsys.readouterr().out
    assert main(["models", "--format", "xml"]) == 2
    assert _error_lines(capsys.readouterr().err) == ["error: --format must be one of table, json, names, got 'xml'"]
