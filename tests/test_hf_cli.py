"""``polycap caption`` with Hugging Face models: ``--prompt`` as the caption prefix, ``--translator``.

Tiny random GIT/BLIP and Marian/M2M100 models built locally (hf_tiny.py); no downloads.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")

import hf_tiny  # noqa: E402
import polycap  # noqa: E402
from polycap.cli import main  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def registered():
    with hf_tiny.offline_registry("translate") as registry:
        yield registry


@pytest.fixture(scope="module")
def folders(tmp_path_factory, registered):
    root = tmp_path_factory.mktemp("hf-cli")
    return {
        "git": hf_tiny.build_git(root / "git"),
        "blip": hf_tiny.build_blip(root / "blip"),
        "marian": hf_tiny.build_marian(root / "opus-mt-en-de"),
        "m2m": hf_tiny.build_m2m100(root / "m2m100"),
    }


def _records(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def _run(argv: list[str]) -> int:
    return main(["caption", *argv, "--device", "cpu", "-q", "-f", "jsonl"])


@pytest.mark.parametrize("family", ["git", "blip"])
def test_prompt_reaches_hf_models_as_the_caption_prefix(family, folders, photo_dir, capsys):
    photo = photo_dir / "img0.png"
    assert _run([str(photo), "--model", f"hf:{folders[family]}", "--prompt", "a photo of", "--max-tokens", "4"]) == 0
    rec = _records(capsys)[0]
    assert rec["meta"]["prompt"] == "a photo of" and rec["error"] is None
    api = polycap.load(f"hf:{folders[family]}", device="cpu", prompt="a photo of")
    assert rec["caption"] == api.caption(photo, max_new_tokens=4).text  # the same conditioned caption as the API's
    assert _run([str(photo), "--model", f"hf:{folders[family]}", "--max-tokens", "4"]) == 0
    assert "prompt" not in _records(capsys)[0].get("meta", {})


def test_prompt_file_reaches_hf_models(folders, photo_dir, tmp_path, capsys):
    prompt = tmp_path / "prefix.txt"
    prompt.write_text("a photography of\n")
    assert _run([str(photo_dir / "img1.png"), "--model", f"hf:{folders['git']}", "--prompt-file", str(prompt)]) == 0
    assert _records(capsys)[0]["meta"]["prompt"] == "a photography of"


def test_prompt_is_still_refused_where_no_model_takes_it(photo_dir, capsys):
    code = main(["caption", str(photo_dir / "img0.png"), "--model", "polycap-tiny-random", "--prompt", "a photo of"])
    assert code == 2 and "hf: models" in capsys.readouterr().err


def test_translator_from_the_cli(folders, photo_dir, capsys):
    photo = str(photo_dir / "img0.png")
    marian = f"hf:{folders['marian']}"
    assert _run([photo, "--model", f"translate:hf:{folders['git']}", "--translator", marian, "--lang", "en,de"]) == 0
    en, de = _records(capsys)
    assert en["lang"] == "en" and de["lang"] == "de" and de["error"] is None
    assert de["meta"]["source_caption"] == en["caption"] and de["meta"]["translator"] == marian
    api = polycap.load(f"translate:hf:{folders['git']}", device="cpu", translator=marian)
    assert de["caption"] == api.caption(photo, lang="de", max_new_tokens=30).text
    # a plain captioner is wrapped, and --prompt still reaches the captioner inside the pipeline
    argv = [photo, "--model", f"hf:{folders['git']}", "--translator", marian, "--lang", "de", "--prompt", "a photo of"]
    assert _run([*argv, "--max-tokens", "4"]) == 0
    rec = _records(capsys)[0]
    prompted = polycap.load(f"hf:{folders['git']}", device="cpu", prompt="a photo of")
    assert rec["model"] == f"translate:hf:{folders['git']}"
    assert rec["meta"]["source_caption"] == prompted.caption(photo, max_new_tokens=4).text


def test_translator_per_language_and_multilingual_targets(folders, photo_dir, capsys):
    photo = str(photo_dir / "img0.png")
    pairs = f"de=hf:{folders['marian']},fr=hf:{folders['m2m']}"
    assert _run([photo, "--model", f"hf:{folders['git']}", "--translator", pairs, "--lang", "de,fr"]) == 0
    de, fr = _records(capsys)
    assert (de["lang"], fr["lang"]) == ("de", "fr")
    assert de["meta"]["translator"].endswith("opus-mt-en-de") and fr["meta"]["translator"].endswith("m2m100")
    # one multilingual model: the targets are the --lang codes
    assert _run([photo, "--model", f"hf:{folders['git']}", "--translator", str(folders["m2m"]), "--lang", "fr"]) == 0
    assert _records(capsys)[0]["lang"] == "fr"


def test_translator_errors_are_usage_errors(folders, photo_dir, capsys):
    photo = str(photo_dir / "img0.png")
    git, marian = f"hf:{folders['git']}", f"hf:{folders['marian']}"
    assert _run([photo, "--model", git, "--translator", marian, "--lang", "fr"]) == 2
    assert "into 'de' only" in capsys.readouterr().err
    assert _run([photo, "--model", git, "--translator", "de=", "--lang", "de"]) == 2
    assert "LANG=NAME" in capsys.readouterr().err
    assert _run([photo, "--model", git, "--translator", marian, "--rewriter", "openai:gpt-4o-mini"]) == 2
    assert "cannot be combined" in capsys.readouterr().err
