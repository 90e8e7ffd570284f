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
    ],
)
def test_invalid_options_are_refused_with_a_clear_message(kwargs, message):
    with pytest.raises(OptionError) as e:
        GenerationOptions(**kwargs)
    assert message in str(e.value)


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
