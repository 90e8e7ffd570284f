import pytest

from polycap import Caption, GenerationOptions, OptionError


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_beams": 0}, "num_beams must be >= 1"),
        ({"num_beams": 1.5}, "num_beams must be an integer"),
        ({"max_new_tokens": 0}, "max_new_tokens must be >= 1"),
        ({"min_new_tokens": 5, "max_new_tokens": 3}, "must not exceed"),
        ({"temperature": 0}, "temperature must be > 0"),
        ({"top_p": 1.5}, "top_p must be in (0, 1]"),
        ({"top_k": 0}, "top_k must be >= 1"),
        ({"num_return_sequences": 2}, "num_beams >= 2 or do_sample=True"),
        ({"lang": ""}, "lang must be a non-empty"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"no_repeat_ngram_size": True}, "must be an integer"),
        # bounds (issue 18): absurd values are refused up front, not run (or failed per item)
        ({"seed": 99999999999999999999999}, "seed must be <= 2147483647, got 99999999999999999999999"),
        ({"seed": 2**31}, "seed must be <= 2147483647"),
        ({"seed": 10**5000}, "seed must be <= 2147483647, got a number too large to print"),
        ({"temperature": float("inf")}, "temperature must be > 0 and <= 100, got inf"),
        ({"temperature": float("nan")}, "temperature must be > 0 and <= 100, got nan"),
        ({"temperature": 10**400}, "temperature must be > 0 and <= 100, got 1000000000000000000000000000000000000..."),
        ({"temperature": 101.0}, "temperature must be > 0 and <= 100"),
        ({"temperature": True}, "temperature must be > 0"),
        ({"top_p": float("nan")}, "top_p must be in (0, 1], got nan"),
        ({"top_p": float("inf")}, "top_p must be in (0, 1]"),
        ({"length_penalty": float("inf")}, "length_penalty must be a number from -10 to 10, got inf"),
        ({"length_penalty": float("nan")}, "length_penalty must be a number from -10 to 10, got nan"),
        ({"length_penalty": -11}, "length_penalty must be a number from -10 to 10"),
        ({"num_beams": 1000}, "num_beams must be <= 16, got 1000"),
        ({"num_beams": 17}, "num_beams must be <= 16"),
        ({"max_new_tokens": 1025}, "max_new_tokens must be <= 1024"),
        ({"min_new_tokens": 2000, "max_new_tokens": 1024}, "min_new_tokens must be <= 1024"),
        ({"no_repeat_ngram_size": 10**9}, "no_repeat_ngram_size must be <= 1024"),
        ({"num_return_sequences": 17, "do_sample": True}, "num_return_sequences must be <= 16"),
        ({"top_k": 10**7}, "top_k must be <= 1000000"),
    ],
)
def test_invalid_options_are_refused_with_a_clear_message(kwargs, message):
    with pytest.raises(OptionError) as e:
        GenerationOptions(**kwargs)
    assert message in str(e.value)


def test_the_documented_maxima_are_accepted():
    opts = GenerationOptions(
        max_new_tokens=1024, min_new_tokens=1024, num_beams=16, num_return_sequences=16, top_k=1_000_000,
        temperature=100, top_p=1.0, length_penalty=-10.0, no_repeat_ngram_size=1024, seed=2**31 - 1,
    )  # fmt: skip
    assert opts.num_beams == 16 and opts.seed == 2147483647
    assert GenerationOptions(length_penalty=10, temperature=1e-6, seed=0).length_penalty == 10


def test_valid_options_and_unknown_keyword():
    opts = GenerationOptions(num_beams=3, num_return_sequences=3, lang="de")
    assert opts.to_dict()["num_beams"] == 3
    assert GenerationOptions(do_sample=True, num_return_sequences=4).num_return_sequences == 4
    with pytest.raises(OptionError, match="unknown generation option.*beams"):
        GenerationOptions.from_kwargs(beams=3)
    assert GenerationOptions.from_kwargs(opts, lang="fr").num_beams == 3


def test_caption_record_failed():
    c = Caption.failed("boom", "en", "m", "x.jpg")
    assert not c.ok and c.text == "" and c.to_dict()["error"] == "boom"
