"""Remote backends through the real SDKs against a fake server on 127.0.0.1 (no internet).

Every provider is loaded through ``polycap.load("<provider>:<model>", base_url=...)``, so the
tests cover the registry, the SDK's request building and response parsing, and polycap's own
retry, cache, concurrency, cleanup and key-scrubbing logic together.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from email.utils import formatdate
from pathlib import Path

import pytest
from PIL import Image

import polycap
from fake_vlm_server import (
    DEFAULT_TEXT,
    FAKE_KEY,
    KEY_VARS,
    SDK_ENV,
    FakeVLMServer,
    Reply,
    register_remote_plugins,
)
from polycap import OptionError
from polycap.backends.remote import prompts
from polycap.backends.remote.base import MissingKeyError
from polycap.backends.remote.retry import RetryPolicy, classify, parse_retry_after

for _sdk in ("openai", "anthropic", "google.genai"):  # the [remote] extra
    pytest.importorskip(_sdk)

PROVIDERS = ["openai", "openai-compatible", "anthropic", "gemini"]
SDK_LOGGERS = ("openai", "anthropic", "google_genai", "google", "httpx2", "httpcore2", "httpx", "httpcore")


@pytest.fixture(scope="module", autouse=True)
def _plugins() -> None:
    register_remote_plugins()


@pytest.fixture(autouse=True)
def env(monkeypatch, tmp_path) -> Path:
    """Fake keys in every key variable, a private cache root, and no SDK redirections."""
    for var in KEY_VARS:
        monkeypatch.setenv(var, FAKE_KEY)
    for var in SDK_ENV:
        monkeypatch.delenv(var, raising=False)
    cache_root = tmp_path / "cache-root"
    monkeypatch.setenv("POLYCAP_CACHE_DIR", str(cache_root))
    return cache_root


@pytest.fixture
def server():
    with FakeVLMServer() as s:
        yield s


@pytest.fixture
def sleeps() -> list[float]:
    return []


def load(provider: str, server: FakeVLMServer, sleeps: list[float] | None = None, **kwargs):
    """A captioner of ``provider`` pointed at the fake server, with waits recorded, not slept."""
    record = sleeps if sleeps is not None else []
    kwargs.setdefault("retry", RetryPolicy(max_retries=3, base_delay=0.001, max_delay=0.01, sleep=record.append))
    return polycap.load(f"{provider}:test-model", base_url=server.base_url(provider), **kwargs)


def red(size=(64, 48)) -> Image.Image:
    return Image.new("RGB", size, (200, 30, 30))


# ---- success and wire format -----------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_success_records_provider_usage_latency(provider, server):
    cap = load(provider, server).caption(red(), lang="de")
    assert cap.ok, cap.error
    assert cap.text == DEFAULT_TEXT and cap.lang == "de" and cap.model == f"{provider}:test-model"
    meta = cap.meta
    assert meta["provider"] == provider and meta["model"] == "test-model"
    assert meta["usage"] == {"input_tokens": 11, "output_tokens": 7}
    assert meta["latency_s"] >= 0 and meta["cached"] is False and meta["attempts"] == 1
    (req,) = server.requests
    assert req.provider == ("openai" if provider == "openai-compatible" else provider)
    assert req.api_key == FAKE_KEY  # the key reached the server, through the SDK only
    assert "German" in req.text() and "no preamble" in req.text()
    (img,) = req.images()
    assert img.format == "JPEG" and img.size == (64, 48)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_exif_orientation_kept_and_max_side_applied(provider, server, tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, displayed rotated 90 degrees: portrait
    Image.new("RGB", (600, 300), (10, 200, 10)).save(path, exif=exif)
    captioner = load(provider, server, max_side=200)
    assert captioner.caption(path).ok
    assert captioner.caption(red((3000, 1000))).ok
    sizes = [r.images()[0].size for r in server.requests]
    assert sizes == [(100, 200), (200, 67)]


def test_sampling_options_and_extra_params_map_to_the_request(server):
    captioner = load("openai", server, extra_params={"reasoning_effort": "low"})
    captioner.caption(red(), do_sample=True, temperature=0.7, top_p=0.9, seed=5)
    captioner.caption(red())
    sampled, greedy = (r.body for r in server.requests)
    assert (sampled["temperature"], sampled["top_p"], sampled["seed"]) == (0.7, 0.9, 5)
    assert sampled["reasoning_effort"] == "low" and sampled["max_completion_tokens"] >= 30
    assert greedy["temperature"] == 0 and "top_p" not in greedy and "seed" not in greedy
    load("openai", server, extra_params={"temperature": None}, cache=False).caption(red())
    assert "temperature" not in server.requests[-1].body  # None removes a parameter
    load("openai-compatible", server, cache=False).caption(red())
    assert "max_tokens" in server.requests[-1].body  # what local servers understand


# ---- retries -----------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_429_with_retry_after_then_success(provider, server, sleeps):
    server.script(Reply("status", status=429, headers={"retry-after": "7"}))
    cap = load(provider, server, sleeps).caption(red())
    assert cap.ok and cap.meta["attempts"] == 2
    assert sleeps == [7.0]  # the server's Retry-After, not the (tiny) backoff
    assert len(server.requests) == 2


@pytest.mark.parametrize("provider", PROVIDERS)
def test_500_then_success_backs_off(provider, server, sleeps):
    server.script(Reply("status", status=500), Reply("status", status=503))
    cap = load(provider, server, sleeps).caption(red())
    assert cap.ok and cap.meta["attempts"] == 3
    assert len(sleeps) == 2 and all(0 <= s <= 0.01 for s in sleeps)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_retries_exhausted_is_a_per_item_error_and_not_cached(provider, server, sleeps):
    server.script(*[Reply("status", status=503)] * 4)
    captioner = load(provider, server, sleeps, max_concurrency=1)  # one at a time: the first item fails
    failed, fine = captioner.caption_many([red(), red((10, 10))], batch_size=2)
    assert not failed.ok and "HTTP 503" in failed.error and "after 4 attempts" in failed.error
    assert fine.ok and len(sleeps) == 3
    assert captioner.caption(red()).ok  # the failure was not cached: the server is asked again
    assert len(server.requests) == 4 + 1 + 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_non_retryable_status_fails_at_once(provider, server, sleeps):
    server.script(Reply("status", status=400))
    cap = load(provider, server, sleeps).caption(red())
    assert not cap.ok and "HTTP 400" in cap.error
    assert sleeps == [] and len(server.requests) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_timeout_is_retried_then_reported(provider, server, sleeps):
    server.script(Reply(delay=2.0), Reply(delay=2.0))
    captioner = load(provider, server, sleeps, timeout=0.2, retry=RetryPolicy(max_retries=1, sleep=sleeps.append))
    start = time.perf_counter()
    cap = captioner.caption(red())
    assert not cap.ok and "timed out" in cap.error and "after 2 attempts" in cap.error
    assert time.perf_counter() - start < 1.9  # the client gave up; it did not wait for the server
    server.script(Reply(delay=2.0))
    assert captioner.caption(red()).ok  # one timeout, then success


def test_connection_error_is_retried(sleeps):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    policy = RetryPolicy(max_retries=2, sleep=sleeps.append)
    captioner = polycap.load("openai:m", base_url=f"http://127.0.0.1:{port}/v1", retry=policy, timeout=2)
    cap = captioner.caption(red())
    assert not cap.ok and "connection error" in cap.error and len(sleeps) == 2


# ---- bad answers -------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_malformed_json_is_a_per_item_error(provider, server, sleeps):
    server.script(Reply("malformed"))
    caps = load(provider, server, sleeps).caption_many([red(), red((20, 20))], batch_size=2)
    assert sorted(c.ok for c in caps) == [False, True]
    assert "JSONDecodeError" in next(c.error for c in caps if not c.ok)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_empty_response_is_a_per_item_error(provider, server):
    server.script(Reply("empty"))
    cap = load(provider, server).caption(red())
    assert not cap.ok and "empty response" in cap.error


REFUSALS = [
    ("openai", "refusal", "I can't help"),
    ("openai", "filtered", "content_filter"),
    ("openai-compatible", "filtered", "content_filter"),
    ("anthropic", "refusal", "refusal"),
    ("gemini", "refusal", "prompt blocked: SAFETY"),
    ("gemini", "filtered", "finish reason SAFETY"),
]


@pytest.mark.parametrize(("provider", "kind", "reason"), REFUSALS)
def test_content_policy_refusal_names_the_reason(provider, kind, reason, server, sleeps):
    server.script(Reply(kind))
    captioner = load(provider, server, sleeps)
    cap = captioner.caption(red())
    assert not cap.ok and "content policy" in cap.error and reason in cap.error
    assert sleeps == []  # a refusal is an answer, not a transient failure
    assert captioner.caption(red()).ok and len(server.requests) == 2  # and it was not cached


@pytest.mark.parametrize(
    ("answer", "style", "expected"),
    [
        ('Sure! Here is a caption for the image:\n\n"A red bus on a bridge."', None, "A red bus on a bridge."),
        ("Caption: A red bus.", None, "A red bus."),
        ("**A red bus.**", None, "A red bus."),
        ("“Ein roter Bus.”", None, "Ein roter Bus."),
        ("A red bus.\n\nAlternatively: A bus in red.", None, "A red bus."),
        ("Image of a red bus parked by a lake.", "alt-text", "A red bus parked by a lake."),
        ("#bus #red #travel", "hashtags", "#bus #red #travel"),
        ('He said "hi" and "bye"', None, 'He said "hi" and "bye"'),
        ("A red bus.\n\nNote: I could not see the number plate.", None, "A red bus."),
    ],
)
def test_clean_caption(answer, style, expected):
    assert prompts.clean_caption(answer, style) == expected


def test_answer_empty_after_cleanup_is_an_error_and_not_cached(server):
    server.script(Reply(text='Caption: ""'))
    captioner = load("openai", server)
    failed, retried = captioner.caption(red()), captioner.caption(red())
    assert not failed.ok and "no caption after cleanup" in failed.error
    assert retried.ok and len(server.requests) == 2


def test_preamble_and_quotes_stripped_end_to_end(server):
    server.script(Reply(text='Here is the alt text:\n"Image of a dog on grass."'))
    cap = load("anthropic", server).caption(red(), style="alt-text")
    assert cap.text == "A dog on grass." and cap.meta["style"] == "alt-text"


# ---- keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "variables"),
    [("openai", "OPENAI_API_KEY"), ("anthropic", "ANTHROPIC_API_KEY"), ("gemini", "GEMINI_API_KEY or GOOGLE_API_KEY")],
)
def test_missing_key_names_the_variable(provider, variables, monkeypatch):
    for var in KEY_VARS:
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(MissingKeyError, match=variables):
        polycap.load(f"{provider}:some-model")


def test_gemini_accepts_google_api_key(monkeypatch, server):
    monkeypatch.delenv("GEMINI_API_KEY")
    assert load("gemini", server).caption(red()).ok
    assert server.requests[0].api_key == FAKE_KEY


def test_openai_compatible_needs_a_base_url_but_no_key(monkeypatch, server):
    for var in KEY_VARS:
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(OptionError, match="POLYCAP_OPENAI_BASE_URL"):
        polycap.load("openai-compatible:llava")
    monkeypatch.setenv("POLYCAP_OPENAI_BASE_URL", server.base_url("openai-compatible"))
    assert polycap.load("openai-compatible:llava").caption(red()).ok
    assert server.requests[0].api_key != FAKE_KEY  # OPENAI_API_KEY is never sent to other servers


@pytest.mark.parametrize("provider", PROVIDERS)
def test_key_never_appears_in_logs_errors_reprs_or_cache(provider, server, caplog, capsys, env):
    caplog.set_level(logging.DEBUG)
    for name in SDK_LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    server.script(Reply("status", status=401, echo_key=True), Reply("status", status=429, headers={"retry-after": "0"}))
    captioner = load(provider, server)
    failed = captioner.caption(red())
    ok = captioner.caption(red())
    assert server.requests[0].api_key == FAKE_KEY  # it was sent, and the server echoed it back
    assert not failed.ok and "***" in failed.error  # ... and polycap scrubbed it
    assert ok.ok
    texts = [
        caplog.text,
        "\n".join(r.getMessage() for r in caplog.records),
        json.dumps(failed.to_dict()),
        json.dumps(ok.to_dict()),
        repr(captioner),
        str(captioner),
        json.dumps(captioner.info()),
        repr(captioner.settings),
        *capsys.readouterr(),
        *(p.read_text() for p in env.rglob("*") if p.is_file()),
    ]
    assert len(list(env.rglob("*.json"))) == 1  # the one success was cached
    assert all(FAKE_KEY not in t for t in texts)


# ---- cache -------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_cache_hit_sends_one_request_for_two_identical_calls(provider, server, env):
    first = load(provider, server).caption(red())
    second = load(provider, server).caption(red())  # a new captioner: the cache is on disk
    assert len(server.requests) == 1
    assert first.text == second.text and first.meta["cached"] is False and second.meta["cached"] is True
    assert second.meta["usage"] == first.meta["usage"]
    (entry,) = env.rglob("*.json")
    assert entry.parent.parent == env / "remote"
    load(provider, server).caption(red(), lang="fr")  # another prompt: another key
    load(provider, server, cache=False).caption(red())  # --no-cache
    assert len(server.requests) == 3


def test_duplicates_in_one_batch_cost_one_request(server):
    caps = load("openai", server, max_concurrency=4).caption_many([red(), red(), red(), red()], batch_size=4)
    assert all(c.ok for c in caps) and len(server.requests) == 1
    assert sorted(c.meta["cached"] for c in caps) == [False, True, True, True]


def test_cache_dir_kwarg_and_corrupt_entry(server, tmp_path):
    cache_dir = tmp_path / "mine"
    load("openai", server, cache_dir=cache_dir).caption(red())
    (entry,) = cache_dir.rglob("*.json")
    entry.write_text("{not json")
    assert load("openai", server, cache_dir=cache_dir).caption(red()).ok  # a miss, not a crash
    assert len(server.requests) == 2 and json.loads(entry.read_text())["text"] == DEFAULT_TEXT


# ---- concurrency -------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_concurrency_limit_is_respected(provider, server):
    server.script(*[Reply(delay=0.15)] * 6)
    captioner = load(provider, server, max_concurrency=2, cache=False)
    images = [Image.new("RGB", (16, 16), (i * 40, 0, 0)) for i in range(6)]
    caps = captioner.caption_many(images, batch_size=6)
    assert all(c.ok for c in caps) and len(server.requests) == 6
    assert server.max_in_flight == 2  # parallel, but never more than the limit


# ---- options, prompts, languages ------------------------------------------------------------


def test_prompt_template_override_inline_and_file(server, tmp_path):
    load("openai", server, prompt="Describe for children, in ${language}. ${style_instruction}").caption(
        red(), lang="fr", style="a pirate's voice"
    )
    assert server.requests[-1].text().startswith("Describe for children, in French. Follow this style instruction:")
    template = tmp_path / "prompt.txt"
    template.write_text("Caption this in ${language} {not a placeholder}")
    load("gemini", server, prompt_file=template).caption(red(), lang="cs")
    assert server.requests[-1].text() == "Caption this in Czech {not a placeholder}"
    with pytest.raises(OptionError, match="either prompt or prompt_file"):
        load("openai", server, prompt="x", prompt_file=template)
    with pytest.raises(OptionError, match="cannot read the prompt file"):
        load("openai", server, prompt_file=tmp_path / "missing.txt")


@pytest.mark.parametrize("style", ["social", "alt-text", "detailed", "hashtags"])
def test_named_styles_use_their_template_in_one_call(style, server):
    cap = load("openai", server).caption(red(), style=style)
    assert cap.ok and cap.meta["style"] == style
    assert prompts.style_instruction(style) in server.requests[0].text()


def test_language_names():
    assert prompts.language_name("de") == "German"
    assert prompts.language_name("pt-BR") == "Brazilian Portuguese"
    assert prompts.language_name("de_AT") == "German (de_AT)"
    assert prompts.language_name("xx") == "the language with code 'xx'"
    for code in ("en", "de", "ar", "fr", "cs", "ru", "es", "it"):
        assert not prompts.language_name(code).startswith("the language")


def test_bad_options_fail_clearly(server):
    with pytest.raises(OptionError, match="unknown option.*max_sidez"):
        load("openai", server, max_sidez=10)
    with pytest.raises(OptionError, match="max_concurrency"):
        load("openai", server, max_concurrency=0)
    captioner = load("openai", server)
    with pytest.raises(OptionError, match="beam search"):
        captioner.caption(red(), num_beams=2)
    with pytest.raises(OptionError, match="num_return_sequences"):
        captioner.caption(red(), do_sample=True, num_return_sequences=2)
    with pytest.raises(polycap.ModelNotFoundError, match="needs a model name"):
        polycap.load("openai:")
    assert server.requests == []


def test_any_language_is_accepted(server):
    caps = load("anthropic", server).caption_many([red()], langs=["en", "sw", "zh-TW"])
    assert [c.lang for c in caps] == ["en", "sw", "zh-TW"] and all(c.ok for c in caps)
    # Requests run concurrently, so their order is not fixed: look for each language's prompt.
    texts = [r.text() for r in server.requests]
    assert any("Traditional Chinese" in t for t in texts) and any("Swahili" in t for t in texts)


# ---- retry policy units --------------------------------------------------------------------------


def test_retry_after_parsing():
    assert parse_retry_after({"retry-after": "2.5"}) == 2.5
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert 55 <= parse_retry_after({"retry-after": formatdate(time.time() + 60, usegmt=True)}) <= 60
    assert parse_retry_after({"retry-after": formatdate(time.time() - 60, usegmt=True)}) == 0.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_backoff_is_full_jitter_and_capped():
    policy = RetryPolicy(base_delay=1.0, max_delay=5.0, max_retry_after=10.0)
    waits = [policy.wait(n, None) for n in range(8) for _ in range(50)]
    assert all(0 <= w <= 5.0 for w in waits) and max(waits) > 2.5
    assert policy.wait(0, 3600) == 10.0  # a huge Retry-After is capped


def test_classify_duck_types_sdk_exceptions():
    class Resp:
        headers = {"retry-after": "4"}

    class StatusError(Exception):
        status_code, response = 429, Resp()

    class ReadTimeout(Exception):
        pass

    assert classify(StatusError()).retryable and classify(StatusError()).retry_after == 4.0
    assert classify(ReadTimeout()).kind == "timeout"
    assert not classify(ValueError("x")).retryable


# ---- CLI ---------------------------------------------------------------------------------------


def test_cli_caption_with_a_remote_model(server, photo_dir, tmp_path, monkeypatch):
    from polycap.cli import main

    monkeypatch.setenv("POLYCAP_OPENAI_BASE_URL", server.base_url("openai-compatible"))
    out = tmp_path / "out.jsonl"
    args = ["caption", str(photo_dir), "-m", "openai-compatible:llava", "--style", "social", "-l", "en,de"]
    assert main([*args, "-f", "jsonl", "-o", str(out), "-q"]) == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(recs) == 6 and all(r["caption"] == DEFAULT_TEXT and r["error"] is None for r in recs)
    assert recs[0]["meta"]["provider"] == "openai-compatible" and recs[0]["meta"]["style"] == "social"


_CLI_HAS_REMOTE_FLAGS = "--base-url" in (Path(__file__).parents[1] / "src/polycap/cli/gen_flags.py").read_text()


@pytest.mark.skipif(not _CLI_HAS_REMOTE_FLAGS, reason="caption.py does not have the remote flags yet")
def test_cli_remote_flags(server, photo_dir, capsys):
    from polycap.cli import main

    args = ["caption", str(photo_dir / "img0.png"), "-m", "openai-compatible:llava", "-f", "jsonl"]
    flags = ["--base-url", server.base_url("openai-compatible"), "--no-cache", "--max-side", "40",
             "--prompt", "One caption in ${language}."]
    assert main([*args, *flags]) == 0
    assert main([*args, *flags]) == 0
    assert len(server.requests) == 2  # --no-cache
    assert server.requests[0].text() == "One caption in English." and max(server.requests[0].images()[0].size) == 40
    assert main(["caption", str(photo_dir), "-m", "polycap-tiny-random", "--base-url", "http://x"]) == 2
    assert "apply to remote models" in capsys.readouterr().err


def test_remote_opts_maps_flags_to_load_kwargs():
    from polycap.cli.remote_opts import load_kwargs

    assert load_kwargs("openai:gpt-4o-mini") == ("openai:gpt-4o-mini", {})
    name, kw = load_kwargs("openai-compatible:llava", base_url="http://h/v1", no_cache=True, max_side=512, prompt="p")
    assert name == "openai-compatible:llava"
    assert kw == {"base_url": "http://h/v1", "cache": False, "max_side": 512, "prompt": "p"}
    name, kw = load_kwargs("polycap-tiny-random", rewriter="openai:gpt-4o-mini", no_cache=True, prompt="p")
    assert name == "style:polycap-tiny-random"
    assert kw == {"rewriter": "openai:gpt-4o-mini", "prompt": "p", "rewriter_options": {"cache": False}}
    with pytest.raises(OptionError, match="--prompt apply to remote models"):
        load_kwargs("polycap-tiny-random", prompt="p")
    with pytest.raises(OptionError, match="--max-side applies to remote models"):
        load_kwargs("polycap-tiny-random", rewriter="openai:x", max_side=10)
