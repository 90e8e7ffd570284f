"""Anthropic messages with a base64 image block: ``anthropic:<model>`` (key: ``ANTHROPIC_API_KEY``)."""

from __future__ import annotations

import base64
from typing import Any, ClassVar

from polycap.backends.remote.base import CallParams, RemoteCaptioner, Reply, require


class AnthropicCaptioner(RemoteCaptioner):
    provider: ClassVar[str] = "anthropic"
    key_env: ClassVar[tuple[str, ...]] = ("ANTHROPIC_API_KEY",)
    example: ClassVar[str] = "claude-haiku-4-5"

    def _make_client(self, api_key: str | None) -> Any:
        anthropic = require("anthropic", "anthropic", "Anthropic models")
        return anthropic.Anthropic(
            api_key=api_key, base_url=self.settings.base_url, max_retries=0, timeout=self.settings.timeout
        )

    def _send(self, prompt: str, image: bytes | None, params: CallParams) -> Reply:
        content: list[dict[str, Any]] = []
        if image is not None:  # Anthropic recommends the image before the text
            data = base64.b64encode(image).decode("ascii")
            content.append({"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": data}})
        content.append({"type": "text", "text": prompt})
        # No sampling parameters: current Claude models and SDKs no longer take temperature/top_p
        # (and have no seed); extra_params={"temperature": ...} still sends one for older models.
        messages = [{"role": "user", "content": content}]
        request = {"model": self.model, "max_tokens": params.max_tokens, "messages": messages}
        return parse_message(self._client.messages.create(**params.apply_extra(request, as_body=True)))


def parse_message(resp: Any) -> Reply:
    """Text blocks joined; ``stop_reason == "refusal"`` is a content-policy refusal."""
    usage = getattr(resp, "usage", None)
    blocks = getattr(resp, "content", None) or []
    text = "".join(getattr(b, "text", "") for b in blocks if getattr(b, "type", None) == "text")
    stop = getattr(resp, "stop_reason", None)
    return Reply(
        text or None,
        getattr(usage, "input_tokens", None),
        getattr(usage, "output_tokens", None),
        stop,
        "refusal" if stop == "refusal" else None,
    )
