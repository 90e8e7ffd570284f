"""The multilingual subword tokenizer of polycap's own models (HF ``tokenizers``, tokenizer.json).

The target language is chosen by a language token (``<en>``, ``<de>``, ...) that starts every
sequence; ``</s>`` ends it. Padding is masked by the attention mask and labels -100, never by
comparing ids, so ``<pad>`` never collides with a real token's id.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from polycap.errors import UnsupportedLanguageError

PAD, UNK, EOS = "<pad>", "<unk>", "</s>"
SPECIALS = [PAD, UNK, EOS]


def lang_token(lang: str) -> str:
    return f"<{lang}>"


class CaptionTokenizer:
    """Wraps a ``tokenizers.Tokenizer`` with polycap's language-token conventions."""

    def __init__(self, tokenizer, languages: Iterable[str]):
        self.tok = tokenizer
        self.languages = tuple(languages)
        self.pad_id = self._id(PAD)
        self.eos_id = self._id(EOS)
        self.lang_ids = {lang: self._id(lang_token(lang)) for lang in self.languages}

    def _id(self, token: str) -> int:
        i = self.tok.token_to_id(token)
        if i is None:
            raise ValueError(f"tokenizer has no {token!r} token")
        return i

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size()

    def lang_id(self, lang: str) -> int:
        if lang not in self.lang_ids:
            raise UnsupportedLanguageError(lang, self.languages)
        return self.lang_ids[lang]

    def encode(self, text: str, lang: str, max_length: int) -> list[int]:
        """``<lang> tokens... </s>``, truncated so that ``</s>`` always fits."""
        ids = self.tok.encode(text, add_special_tokens=False).ids[: max_length - 2]
        return [self.lang_id(lang), *ids, self.eos_id]

    def decode(self, ids: Iterable[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=True).strip()

    # ---- persistence / construction --------------------------------------------------------
    def save(self, folder: str | Path) -> None:
        self.tok.save(str(Path(folder) / "tokenizer.json"))

    @classmethod
    def load(cls, folder: str | Path, languages: Iterable[str]) -> CaptionTokenizer:
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(Path(folder) / "tokenizer.json")), languages)

    @classmethod
    def train(
        cls, texts: Iterable[str], languages: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2
    ) -> CaptionTokenizer:
        """Train a byte-level-free BPE on caption texts (NFKC, lowercase, Metaspace pre-tokenizer).

        Metaspace (SentencePiece-style) keeps words whole across scripts (Arabic, Cyrillic,
        Latin with diacritics) and decodes back to the original spacing.
        """
        from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

        languages = tuple(languages)
        tok = Tokenizer(models.BPE(unk_token=UNK))
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation()])
        tok.decoder = decoders.Metaspace()
        specials = SPECIALS + [lang_token(lang) for lang in languages]
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=specials,
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok, languages)
