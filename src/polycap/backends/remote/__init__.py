"""Remote vision-language APIs behind the one Captioner contract (a plugin like any other).

Schemes: ``openai:<model>``, ``anthropic:<model>``, ``gemini:<model>`` and
``openai-compatible:<model>`` (vLLM, Ollama, LM Studio, llama.cpp; base URL via ``base_url=`` or
``POLYCAP_OPENAI_BASE_URL``). The SDKs (extra ``[remote]``) are imported only when a model is
loaded, so registering costs nothing. See docs/remote.md.
"""

from __future__ import annotations

import importlib
from typing import Any

# scheme -> (module, class, description)
PROVIDERS: dict[str, tuple[str, str, str]] = {
    "openai": ("openai_provider", "OpenAICaptioner", "OpenAI vision models (OPENAI_API_KEY)"),
    "openai-compatible": (
        "openai_provider",
        "OpenAICompatibleCaptioner",
        "any OpenAI-compatible server: vLLM, Ollama, LM Studio, llama.cpp (POLYCAP_OPENAI_BASE_URL)",
    ),
    "anthropic": ("anthropic_provider", "AnthropicCaptioner", "Anthropic Claude models (ANTHROPIC_API_KEY)"),
    "gemini": ("gemini_provider", "GeminiCaptioner", "Google Gemini models (GEMINI_API_KEY or GOOGLE_API_KEY)"),
}


def provider_class(scheme: str) -> Any:
    module, cls, _ = PROVIDERS[scheme]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def _loader(scheme: str):
    def load(ref: str, *, device: str = "auto", name: str | None = None, **kwargs: Any):
        # ``device`` does not apply: the model runs on the provider's machines.
        return provider_class(scheme).load(ref, name=name, **kwargs)

    load.__name__ = f"load_{scheme.replace('-', '_')}"
    return load


def register(registry) -> None:
    for scheme, (_, _, description) in PROVIDERS.items():
        registry.add_backend(scheme, _loader(scheme), schemes=(scheme,), description=description)
