"""Every decoding option reaches every interface: ``polycap caption``, ``eval``, ``batch`` and the REST parser.

Nothing here names an option: the tests walk ``dataclasses.fields(GenerationOptions)``, so a field
added there is checked in every interface at once, and fails here if one of them lacks it.
"""

from __future__ import annotations

import json
import typing
from dataclasses import fields
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

import polycap
from polycap.cli import main
from polycap.cli.app import app
from polycap.cli.gen_flags import flag_name, generation_flags
from polycap.errors import OptionError
from polycap.types import GenerationOptions

OPTIONS = [f for f in fields(GenerationOptions) if f.name != "lang"]  # each interface takes languages its own way
HINTS = typing.get_type_hints(GenerationOptions)
COMMANDS = ("caption", "eval", "batch")


def _base_type(name: str) -> type:
    """int, float, bool or str: the field's type without ``| None``."""
    (base,) = [t for t in typing.get_args(HINTS[name]) or (HINTS[name],) if t is not type(None)]
    return base


def _value(name: str) -> Any:
    """A value of the field's type that is no field's default (so it cannot arrive by accident)."""
    return {int: 7, float: 0.25, bool: True, str: "a pirate"}[_base_type(name)]


def _argv(name: str) -> list[str]:
    value = _value(name)
    return [flag_name(name)] if value is True else [flag_name(name), str(value)]


def _all_flags() -> list[str]:
    return [arg for f in OPTIONS for arg in _argv(f.name)]


def _expected() -> dict[str, Any]:
    return {f.name: _value(f.name) for f in OPTIONS}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_is_a_flag_of_the_command(command):
    params = {p.name: p for p in typer.main.get_command(app).commands[command].params}
    for f in OPTIONS:
        assert f.name in params, f"polycap {command} has no flag for GenerationOptions.{f.name}"
        assert flag_name(f.name) in params[f.name].opts
        assert params[f.name].help, f"polycap {command} {flag_name(f.name)} has no help"


@pytest.mark.parametrize("command", COMMANDS)
def test_help_lists_every_option(command, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    for f in OPTIONS:
        assert flag_name(f.name) in result.output, f"polycap {command} --help does not show {flag_name(f.name)}"


class _Stop(OptionError):
    """Raised by the spies once they have what the command passed on: the command then exits 2."""


class _SpyCaptioner:
    """Stands in for a loaded model; records the options the command asks for, then stops it."""

    name = "spy"
    default_lang = "en"
    capabilities = type("Caps", (), {"languages": ("en",)})()

    def __init__(self, seen: list[dict[str, Any]]):
        self.seen = seen

    def make_options(self, options: Any = None, **kwargs: Any) -> Any:
        self.seen.append(kwargs)
        raise _Stop("stop")


@pytest.fixture
def spy_model(monkeypatch) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(polycap, "load", lambda *a, **k: _SpyCaptioner(seen))
    return seen


def test_caption_passes_every_option_to_the_model(photo_dir, spy_model):
    argv = ["caption", str(photo_dir / "img0.png"), "-m", "polycap-tiny-random", "-q", *_all_flags()]
    assert main(argv) == 2  # the spy's stop, a usage error
    (kwargs,) = spy_model
    assert {k: v for k, v in kwargs.items() if k != "lang"} == _expected()


def test_eval_passes_every_option_to_the_model(tmp_path, photo_dir, spy_model):
    manifest = tmp_path / "m.jsonl"
    line = {"image": str(photo_dir / "img0.png"), "split": "val", "captions": {"en": ["a red square"]}}
    manifest.write_text(json.dumps(line) + "\n")
    argv = ["eval", "--data", str(manifest), "-m", "polycap-tiny-random", "-q", *_all_flags()]
    assert main(argv) == 2
    (kwargs,) = spy_model
    assert {k: v for k, v in kwargs.items() if k != "lang"} == _expected()


def test_batch_passes_every_option_to_the_job(photo_dir, tmp_path, monkeypatch):
    import polycap.batch

    jobs = []

    def spy_job(cfg):
        jobs.append(cfg)
        raise _Stop("stop")

    monkeypatch.setattr(polycap.batch, "run_job", spy_job)
    argv = ["batch", str(photo_dir), "-o", str(tmp_path / "o.jsonl"), "-m", "polycap-tiny-random", *_all_flags()]
    assert main(argv) == 2
    (cfg,) = jobs
    assert cfg.options == _expected()


def test_flags_not_given_keep_the_command_defaults_or_the_model_s(photo_dir, spy_model):
    """Only the command's declared defaults are passed; any other option is left to the model."""
    from polycap.cli.gen_flags import CAPTION_DEFAULTS

    assert main(["caption", str(photo_dir / "img0.png"), "-m", "polycap-tiny-random", "-q"]) == 2
    (kwargs,) = spy_model
    assert {k: v for k, v in kwargs.items() if k != "lang"} == CAPTION_DEFAULTS
    assert set(CAPTION_DEFAULTS) < {f.name for f in OPTIONS}


def test_a_given_zero_is_passed_not_mistaken_for_unset(photo_dir, spy_model):
    """0 == False in Python: ``--no-repeat-ngram-size 0`` must still turn the model's default off."""
    ints = [f.name for f in OPTIONS if _base_type(f.name) is int and f.default is not None]
    name = next(n for n in ints if n not in ("max_new_tokens", "num_beams", "num_return_sequences"))
    assert main(["caption", str(photo_dir / "img0.png"), "-m", "polycap-tiny-random", "-q", flag_name(name), "0"]) == 2
    (kwargs,) = spy_model
    assert kwargs[name] == 0


def test_generation_flags_refuses_a_command_that_declares_an_option_itself():
    def command(lang: str | None = None, num_beams: int = 1, generation: dict | None = None) -> None: ...

    with pytest.raises(TypeError, match="num_beams"):
        generation_flags({})(command)


# ---- the REST parser ----------------------------------------------------------------------
def test_server_parser_takes_every_option_as_form_text_and_as_json():
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    from polycap.serve.parsing import parse_options

    for f in OPTIONS:
        value = _value(f.name)
        text = "true" if value is True else str(value)
        assert parse_options({f.name: text}, from_text=True) == {f.name: value}, f.name
        assert parse_options({f.name: value}, from_text=False) == {f.name: value}, f.name


def test_server_api_documents_every_option():
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    from polycap.serve.parsing import openapi_request_body

    body = openapi_request_body()
    schemas = [c["schema"]["properties"] for c in body["content"].values()]
    for f in OPTIONS:
        for props in schemas:
            assert f.name in props and props[f.name]["description"], f.name


def test_option_help_comes_from_generation_options():
    """The help text each interface shows is the field's own, declared once in types.py."""
    assert all(f.metadata.get("help") for f in OPTIONS), [f.name for f in OPTIONS if not f.metadata.get("help")]
