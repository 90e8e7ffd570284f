"""config.json persistence shared by the dataclass configs of local model folders (native, clipcap)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from polycap.errors import PolycapError


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
