"""polycap's own captioners. Registers the ``native`` backend and its models (a plugin like any other)."""

from __future__ import annotations

from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2] / "models" / "polycap-base"


def _base_available() -> bool:
    return (BASE_DIR / "model.safetensors").is_file()


def _load(ref: str, **kwargs):
    from polycap.backends.native.backend import load_native  # torch is imported only here

    return load_native(ref, **kwargs)


def register(registry) -> None:
    from polycap.registry import ModelSpec

    registry.add_backend("native", _load, schemes=("native",), description="polycap's own models")
    registry.add_model(
        ModelSpec(
            name="polycap-tiny-random",
            backend="native",
            ref="tiny-random",
            description="tiny random model for tests: real architecture, random words",
            languages=("en", "de", "ar", "fr", "cs"),
            default=not _base_available(),
        )
    )
    if _base_available():
        registry.add_model(
            ModelSpec(
                name="polycap-base",
                backend="native",
                ref=str(BASE_DIR),
                description="polycap's default multilingual captioner (EfficientNet-Lite2 + small decoder)",
                languages=("en", "de", "ar", "fr", "cs"),
                default=True,
            )
        )
