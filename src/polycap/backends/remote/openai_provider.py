"""OpenAI chat completions with image content parts: ``openai:<model>`` and ``openai-compatible:<model>``.

``openai-compatible`` is the same wire format sent to another server (vLLM, Ollama, LM Studio,
llama.cpp, a proxy): the base URL comes from ``base_url=`` / ``--base-url`` or
``POLYCAP_OPENAI_BASE_URL``. Its key is optional and read from ``POLYCAP_OPENAI_API_KEY``, never
from ``OPENAI_API_KEY``, so an OpenAI key is not sent to a third-party server by accident.
"""

from __future__ import annotations

import base64
import os
from typing import Any, ClassVar

from polycap.backends.remote.base import CallParams, RemoteCaptioner, RemoteSettings, Reply, require
from polycap.errors import OptionError

BASE_URL_ENV = "POLYCAP_OPENAI_BASE_URL"
COMPATIBLE_KEY_ENV = "POLYCAP_OPENAI_API_KEY"
_PLACEHOLDER_KEY = "not-needed"  # the SDK insists on a key; local servers ignore it


class OpenAICaptioner(RemoteCaptioner):
    provider: ClassVar[str] = "openai"
    key_env: ClassVar[tuple[str, ...]] = ("OPENAI_API_KEY",)
    example: ClassVar[str] = "gpt-4o-mini"
    token_param: ClassVar[str] = "max_completion_tokens"  # newer OpenAI models refuse max_tokens

    def _make_client(self, api_key: str | None) -> Any:
        openai = require("openai", "openai", f"{self.provider} models")
        return openai.OpenAI(
            api_key=api_key or _PLACEHOLDER_KEY,
            base_url=self.settings.base_url,
            max_retries=0,  # polycap retries (retry.py), the same way for every provider
            timeout=self.settings.timeout,
        )

    def _send(self, prompt: str, image: bytes | None, params: CallParams) -> Reply:
        content: Any = prompt
        if image is not None:
            url = "data:image/jpeg;base64," + base64.b64encode(image).decode("ascii")
            content = [{"type": "text", "text": prompt}, {"type": "image_url", "image_url": {"url": url}}]
        request: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            self.token_param: params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": params.seed,
        }
        return parse_chat_completion(self._client.chat.completions.create(**params.apply_extra(request, as_body=True)))


class OpenAICompatibleCaptioner(OpenAICaptioner):
    provider: ClassVar[str] = "openai-compatible"
    key_env: ClassVar[tuple[str, ...]] = (COMPATIBLE_KEY_ENV,)
    key_required: ClassVar[bool] = False
    example: ClassVar[str] = "llava"
    token_param: ClassVar[str] = "max_tokens"  # what vLLM, Ollama, LM Studio and llama.cpp all accept

    @classmethod
    def configure(cls, settings: RemoteSettings, who: str) -> RemoteSettings:
        settings.base_url = settings.base_url or os.environ.get(BASE_URL_ENV, "").strip() or None
        if not settings.base_url:
            raise OptionError(
                f"{who} needs the server's base URL: pass base_url= (CLI: --base-url) or set {BASE_URL_ENV}, "
                "e.g. http://localhost:11434/v1 for Ollama or http://localhost:8000/v1 for vLLM"
            )
        return settings


def parse_chat_completion(resp: Any) -> Reply:
    """Text, usage and refusal of a chat completion (``content_filter`` or a ``refusal`` field)."""
    usage = getattr(resp, "usage", None)
    tokens_in = getattr(usage, "prompt_tokens", None)
    tokens_out = getattr(usage, "completion_tokens", None)
    choices = getattr(resp, "choices", None) or []
    if not choices:
        return Reply(None, tokens_in, tokens_out, "no choices")
    choice = choices[0]
    message = getattr(choice, "message", None)
    finish = getattr(choice, "finish_reason", None)
    refusal = getattr(message, "refusal", None)
    if finish == "content_filter":
        refusal = f"content_filter: {refusal}" if refusal else "content_filter"
    text = getattr(message, "content", None)
    return Reply(text if isinstance(text, str) else None, tokens_in, tokens_out, finish, refusal or None)
