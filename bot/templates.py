"""User-facing text: defaults shipped in bot/templates/zh/*.toml (one file per feature), overridable by the
operator's own file."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

DEFAULTS = Path(__file__).parent / "templates" / "zh"


class Templates:
    """Looks up text by dotted key ("welcome.default") and fills its placeholders."""

    def __init__(self, override_file: str | Path | None = None) -> None:
        self._data = load_defaults()
        if override_file:
            overrides = _flatten(tomllib.loads(Path(override_file).read_text(encoding="utf-8")))
            unknown = sorted(set(overrides) - set(self._data))
            if unknown:
                raise KeyError(f"unknown template keys in {override_file}: {', '.join(unknown)}")
            self._data.update(overrides)

    def raw(self, key: str) -> str:
        return self._data[key]

    def render(self, key: str, **values: Any) -> str:
        return render_text(self._data[key], **values)


def load_defaults(directory: Path = DEFAULTS) -> dict[str, str]:
    """Every default text; the same key in two files is a packaging mistake and fails loudly."""
    data: dict[str, str] = {}
    for file in sorted(directory.glob("*.toml")):
        texts = _flatten(tomllib.loads(file.read_text(encoding="utf-8")))
        clash = sorted(set(texts) & set(data))
        if clash:
            raise KeyError(f"template keys defined twice ({file.name}): {', '.join(clash)}")
        data.update(texts)
    return data


class _Missing(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def render_text(template: str, **values: Any) -> str:
    """Fill {placeholders}; unknown ones are left as written so an operator sees the typo."""
    try:
        return template.format_map(_Missing(values))
    except (ValueError, IndexError):
        # A stray brace in operator text: show it literally rather than lose the message.
        return template


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = str(value)
    return out
