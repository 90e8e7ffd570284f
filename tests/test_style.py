"""Styled captions: the describe-then-rewrite pipeline (``style:<describer>``) and its rewriters.

Rewriters under test: a remote model in text-only mode (the fake server, OpenAI-compatible wire
format), a plain Python TextGenerator, and a tiny random transformers Llama built from a config
with a tiny tokenizer saved to a temporary folder (no downloads).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import pytest
from PIL import Image

import polycap
from fake_vlm_server import FAKE_KEY, KEY_VARS, SDK_ENV, FakeVLMServer, Reply, register_remote_plugins
from polycap import Caption, GenerationOptions, OptionError
from polycap.backends.base import Capabilities, Captioner
from polycap.backends.compose import StyledCaptioner, TextGenerator
from polycap.backends.remote import prompts
from polycap.registry import get_registry

DESCRIPTION = "a brown dog runs across the green grass"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # the parent package is missing
        return False


needs_sdks = pytest.mark.skipif(not all(map(_installed, ("openai", "google.genai"))), reason="needs [remote]")


class FakeDescriber(Captioner):
    """Describes every image with DESCRIPTION; a pure black image fails (per item)."""

    def __init__(self, name: str = "fake-describer"):
        super().__init__(name, Capabilities(languages=("en",), beam_search=False, sampling=False))
        self.seen: list[GenerationOptions] = []

    def caption_batch(self, images: Sequence[Image.Image], options: GenerationOptions) -> list[Caption]:
        self.seen.append(options)
        return [
            Caption.failed("too dark to see", options.lang, self.name)
            if im.getextrema() == ((0, 0), (0, 0), (0, 0))
            else Caption(DESCRIPTION, options.lang, self.name)
            for im in images
        ]


class EchoRewriter:
    """A TextGenerator that records prompts and answers with a fixed (messy) text."""

    name = "echo"

    def __init__(self, answer: str = "Sunny zoomies! 🐶"):
        self.answer = answer
        self.prompts: list[str] = []

    def generate(self, prompt: str, options: GenerationOptions) -> str:
        self.prompts.append(prompt)
        return self.answer


@pytest.fixture(scope="module", autouse=True)
def _plugins() -> None:
    register_remote_plugins()
    registry = get_registry()
    registry.add_backend("fake-describer", lambda ref, **kw: FakeDescriber(), schemes=("fake-describer",))


@pytest.fixture(autouse=True)
def env(monkeypatch, tmp_path) -> None:
    for var in KEY_VARS:
        monkeypatch.setenv(var, FAKE_KEY)
    for var in SDK_ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("POLYCAP_CACHE_DIR", str(tmp_path / "cache"))


def photo(colour=(120, 90, 40)) -> Image.Image:
    return Image.new("RGB", (32, 24), colour)


# ---- the pipeline with a plain TextGenerator -------------------------------------------------


def test_pipeline_keeps_description_and_styled_caption():
    describer, rewriter = FakeDescriber(), EchoRewriter('Here is your caption:\n"Sunny zoomies! 🐶"')
    styled = StyledCaptioner(describer, rewriter, style="social")
    cap = styled.caption(photo(), lang="de")
    assert cap.ok and cap.text == "Sunny zoomies! 🐶" and cap.lang == "de"
    assert cap.meta["description"] == DESCRIPTION and cap.meta["style"] == "social"
    assert cap.meta["describer"] == "fake-describer" and cap.meta["rewriter"] == "echo"
    (prompt,) = rewriter.prompts
    assert DESCRIPTION in prompt and "German" in prompt
    assert prompts.style_instruction("social") in prompt
    assert "Do not add people, names, places" in prompt  # faithfulness is part of every rewrite
    assert describer.seen[0].lang == "en" and describer.seen[0].style is None  # described plainly, in English


def test_per_call_style_overrides_default_and_free_instructions_work():
    rewriter = EchoRewriter("Arr, a hound on the green!")
    styled = StyledCaptioner(FakeDescriber(), rewriter, style="social")
    cap = styled.caption(photo(), style="like a pirate")
    assert cap.meta["style"] == "like a pirate"
    assert "Follow this style instruction: like a pirate" in rewriter.prompts[0]
    plain = StyledCaptioner(FakeDescriber(), rewriter).caption(photo())  # no style at all: the default one
    assert plain.ok and prompts.style_instruction(None) in rewriter.prompts[1]


def test_alt_text_is_concise_and_loses_image_of():
    styled = StyledCaptioner(FakeDescriber(), EchoRewriter("Image of a brown dog running on grass."), style="alt-text")
    assert styled.caption(photo()).text == "A brown dog running on grass."


def test_describe_and_rewrite_failures_are_per_item():
    class Flaky(EchoRewriter):
        def generate(self, prompt: str, options: GenerationOptions) -> str:
            if len(self.prompts) == 1:
                self.prompts.append(prompt)
                raise RuntimeError("rewriter crashed")
            return super().generate(prompt, options)

    styled = StyledCaptioner(FakeDescriber(), Flaky(), style="social", max_concurrency=1)
    caps = styled.caption_many([photo(), photo((0, 0, 0)), photo(), EchoRewriter()], batch_size=4)
    assert [c.ok for c in caps] == [True, False, False, False]
    assert "describing failed: too dark to see" in caps[1].error
    assert "rewriting failed: RuntimeError: rewriter crashed" in caps[2].error
    assert caps[2].meta["description"] == DESCRIPTION  # what it was rewriting is kept
    assert "unsupported input type" in caps[3].error  # bad input: the base class isolates it
    assert StyledCaptioner(FakeDescriber(), EchoRewriter("  ")).caption(photo()).error.startswith("rewriting failed")


def test_style_pipeline_refuses_a_rewriter_that_cannot_write():
    with pytest.raises(OptionError, match="generate"):
        StyledCaptioner(FakeDescriber(), object())  # type: ignore[arg-type]
    with pytest.raises(OptionError, match="num_return_sequences"):
        StyledCaptioner(FakeDescriber(), EchoRewriter()).caption(photo(), do_sample=True, num_return_sequences=2)
    with pytest.raises(OptionError, match="needs rewriter"):
        polycap.load("style:fake-describer:x")
    with pytest.raises(OptionError, match="cannot rewrite text"):
        polycap.load("style:fake-describer:x", rewriter="fake-describer:y")


# ---- a remote rewriter through polycap.load -------------------------------------------------


@needs_sdks
def test_remote_rewriter_via_style_scheme():
    with FakeVLMServer(text="Zoomies on the lawn today! 🐕") as server:
        styled = polycap.load(
            "style:fake-describer:any",
            rewriter="openai-compatible:rewriter-llm",
            rewriter_options={"base_url": server.base_url("openai-compatible")},
            style="social",
        )
        assert isinstance(styled.rewriter, TextGenerator)
        caps = styled.caption_many([photo(), photo()], lang="fr", batch_size=2)
        again = styled.caption(photo(), lang="fr")
        assert all(c.ok and c.text == "Zoomies on the lawn today! 🐕" for c in [*caps, again])
        assert len(server.requests) == 1  # same description + prompt: the rewrite is cached
        (req,) = server.requests
        assert req.images() == [] and DESCRIPTION in req.text() and "French" in req.text()
        meta = caps[0].meta
        assert meta["description"] == DESCRIPTION and meta["style"] == "social"
        assert meta["rewrite"]["provider"] == "openai-compatible" and meta["rewrite"]["usage"]["output_tokens"] == 7
        rec = caps[0].to_dict()
        assert rec["meta"]["description"] and rec["text"]


@needs_sdks
def test_remote_rewriter_errors_are_per_item_and_keep_the_description():
    with FakeVLMServer() as server:
        server.script(Reply("status", status=400, echo_key=True))
        styled = polycap.load(
            "style:fake-describer:any",
            rewriter="openai:rewriter",
            rewriter_options={"base_url": server.base_url("openai"), "cache": False},
        )
        cap = styled.caption(photo())
        assert not cap.ok and "rewriting failed" in cap.error and "HTTP 400" in cap.error
        assert FAKE_KEY not in cap.error and cap.meta["description"] == DESCRIPTION


@needs_sdks
def test_remote_vision_model_styles_in_one_call():
    with FakeVLMServer(text="#dog #grass #sunny") as server:
        model = polycap.load("gemini:vision", base_url=server.base_url("gemini"), style="hashtags")
        cap = model.caption(photo())
        assert cap.ok and cap.text == "#dog #grass #sunny" and cap.meta["style"] == "hashtags"
        assert prompts.style_instruction("hashtags") in server.requests[0].text()
        assert len(server.requests[0].images()) == 1  # one call, image included


# ---- a local transformers rewriter -------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    """A random 1-layer Llama with a 20-word tokenizer and a chat template, saved like a real model."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["a", "dog", "runs", "on", "the", "green", "grass", "brown", "sunny", "day", "park", "happy", "ball",
             "plays", "with", "friend"]
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[BOS]", "[EOS]", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]"
    )
    fast.chat_template = (
        "{% for m in messages %}{{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}caption{% endif %}"
    )
    folder = tmp_path_factory.mktemp("tiny-lm")
    fast.save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=512, bos_token_id=2, eos_token_id=3, pad_token_id=0,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def test_local_causal_lm_rewriter_end_to_end(tiny_lm):
    from polycap.backends.compose import LocalTextGenerator

    styled = polycap.load("style:fake-describer:any", rewriter=str(tiny_lm), style="hashtags", device="cpu")
    assert isinstance(styled.rewriter, LocalTextGenerator)
    opts = {"lang": "fr", "min_new_tokens": 3, "max_new_tokens": 8}
    first, second = styled.caption(photo(), **opts), styled.caption(photo(), **opts)
    assert first.ok and first.text and first.meta["description"] == DESCRIPTION
    assert first.text == second.text  # greedy decoding is deterministic
    assert len(first.text.split()) <= 64
    sampled = styled.caption(photo(), do_sample=True, seed=3, **opts)
    assert sampled.ok and sampled.text == styled.caption(photo(), do_sample=True, seed=3, **opts).text


def test_local_rewriter_with_a_polycap_describer(tiny_lm):
    pytest.importorskip("torch")
    styled = polycap.load("style:polycap-tiny-random", rewriter=str(tiny_lm), device="cpu")
    cap = styled.caption(photo(), lang="ar", min_new_tokens=2)
    assert cap.ok and cap.meta["describer"] == "polycap-tiny-random" and cap.meta["description"]


# ---- CLI -------------------------------------------------------------------------------------------


@needs_sdks
def test_cli_rewriter(photo_dir, tmp_path):
    import json

    from polycap.cli import main

    with FakeVLMServer(text="Bright colours, happy vibes!") as server:
        out = tmp_path / "styled.jsonl"
        args = ["caption", str(photo_dir / "img0.png"), "-m", "fake-describer:x", "--style", "social"]
        args += ["--rewriter", "openai-compatible:rw", "--base-url", server.base_url("openai-compatible")]
        assert main([*args, "-f", "jsonl", "-o", str(out), "-l", "de"]) == 0
        (rec,) = [json.loads(line) for line in out.read_text().splitlines()]
        assert rec["caption"] == "Bright colours, happy vibes!" and rec["meta"]["description"] == DESCRIPTION
        assert rec["model"] == "style:fake-describer:x"
