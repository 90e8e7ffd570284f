"""Gemini generateContent with inline image data: ``gemini:<model>``.

Key: ``GEMINI_API_KEY``, else ``GOOGLE_API_KEY``. Always the Gemini Developer API (never Vertex
AI, whatever ``GOOGLE_GENAI_USE_VERTEXAI`` says), so the key is the only credential involved.
"""

from __future__ import annotations

from typing import Any, ClassVar

from polycap.backends.remote.base import CallParams, RemoteCaptioner, Reply, require

# Finish reasons that mean "blocked by policy", not "nothing to say".
BLOCKED = frozenset({"SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "IMAGE_SAFETY", "RECITATION"})


class GeminiCaptioner(RemoteCaptioner):
    provider: ClassVar[str] = "gemini"
    key_env: ClassVar[tuple[str, ...]] = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
    example: ClassVar[str] = "gemini-2.5-flash"

    def _make_client(self, api_key: str | None) -> Any:
        genai = require("google.genai", "google-genai", "Gemini models")
        types = genai.types
        http = types.HttpOptions(
            base_url=self.settings.base_url,
            timeout=max(1, round(self.settings.timeout * 1000)),  # milliseconds
            retry_options=types.HttpRetryOptions(attempts=1),  # polycap retries (retry.py)
        )
        return genai.Client(vertexai=False, api_key=api_key, http_options=http)

    def _send(self, prompt: str, image: bytes | None, params: CallParams) -> Reply:
        types = require("google.genai", "google-genai", "Gemini models").types
        contents: list[Any] = []
        if image is not None:
            contents.append(types.Part.from_bytes(data=image, mime_type="image/jpeg"))
        contents.append(prompt)
        config = params.apply_extra(
            {"max_output_tokens": params.max_tokens, "temperature": params.temperature, "top_p": params.top_p,
             "seed": params.seed}
        )
        resp = self._client.models.generate_content(
            model=self.model, contents=contents, config=types.GenerateContentConfig(**config)
        )
        return parse_response(resp)


def _name(value: Any) -> str | None:
    """Enum or string -> its name ("SAFETY"); the SDK returns enums, raw JSON has strings."""
    if value is None:
        return None
    return str(getattr(value, "name", None) or getattr(value, "value", None) or value)


def parse_response(resp: Any) -> Reply:
    """Text of the first candidate (thoughts skipped); blocked prompts or candidates are refusals."""
    usage = getattr(resp, "usage_metadata", None)
    tokens_in = getattr(usage, "prompt_token_count", None)
    out = [getattr(usage, "candidates_token_count", None), getattr(usage, "thoughts_token_count", None)]
    tokens_out = sum(n for n in out if n) if any(out) else None
    block = _name(getattr(getattr(resp, "prompt_feedback", None), "block_reason", None))
    candidates = getattr(resp, "candidates", None) or []
    if not candidates:
        return Reply(None, tokens_in, tokens_out, "no candidates", f"prompt blocked: {block}" if block else None)
    cand = candidates[0]
    finish = _name(getattr(cand, "finish_reason", None))
    parts = getattr(getattr(cand, "content", None), "parts", None) or []
    text = "".join(p.text for p in parts if getattr(p, "text", None) and not getattr(p, "thought", False))
    refusal = f"prompt blocked: {block}" if block else (f"finish reason {finish}" if finish in BLOCKED else None)
    return Reply(text or None, tokens_in, tokens_out, finish, refusal)
