"""config.json persistence shared by the dataclass configs of local model folders (native, clipcap), and
``typed``: a dataclass from a plain mapping, unknown keys named (training configs use it too)."""

from __future__ import annotations

import json
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path
from typing import Any

from polycap.errors import PolycapError, check_keys


def typed(cls: type, values: dict[str, Any], what: str, known: list[str] | None = None) -> Any:
    """``cls(**values)``, with a mapping given for a dataclass-valued field (one whose default factory is
    a dataclass, such as ``ClipCapConfig.mapper``) typed the same way. A key outside ``known`` (default:
    every field) is an error: "unknown {what}: ...". Nested fields are named ``{what}.{field}``."""
    defaults = {f.name: f.default_factory for f in fields(cls)}
    check_keys(values, defaults if known is None else known, what)
    out = dict(values)
    for key, value in values.items():
        sub = defaults[key]
        if isinstance(value, dict) and isinstance(sub, type) and is_dataclass(sub):
            out[key] = typed(sub, value, f"{what}.{key}")
    return cls(**out)


class JsonConfig:
    """Mixin for dataclasses: ``to_dict``, ``save(folder)`` and ``load(folder)`` of ``config.json``.
    Subclasses implement ``from_dict`` (their own key checks)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    def save(self, folder: str | Path) -> None:
        path = Path(folder) / "config.json"
        path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        raise NotImplementedError

    @classmethod
    def load(cls, folder: str | Path) -> Any:
        path = Path(folder) / "config.json"
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as e:
            raise PolycapError(f"cannot read {path}: {e}") from e
