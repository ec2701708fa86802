"""Every door is listed once, declares its capabilities, and the README's tables say what they declare."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.channels import DOORS, door_class
from bot.channels.base import Channel
from bot.channels.table import BEGIN, END, capability_markdown, replace_block
from bot.config import Config

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_capability_tables_match_the_doors() -> None:
    text = README.read_text(encoding="utf-8")
    assert replace_block(text, capability_markdown()) == text, (
        "README capability tables are stale: run `python -m bot.channels.table --write README.md`")


@pytest.mark.parametrize("name", list(DOORS))
def test_each_door_is_a_channel_with_its_own_config_section(name: str) -> None:
    cls = door_class(name)
    assert issubclass(cls, Channel)
    assert cls.name == name
    assert cls.title != Channel.title and cls.reaches, f"{name}: give the door a title and say how members reach it"
    assert name in Config.model_fields, f"{name}: no [{name}] config section"
    assert hasattr(getattr(Config(), name), "enabled")


def test_a_door_that_cannot_post_says_so_instead_of_posting() -> None:
    for name in DOORS:
        cls = door_class(name)
        if not cls.capabilities.can_post_proactively:
            assert "in the group" not in [line for line in capability_markdown().splitlines()
                                          if line.startswith(f"| {cls.title} |")][-1]


def test_table_block_markers_are_required() -> None:
    with pytest.raises(ValueError):
        replace_block("no markers here", capability_markdown())
    assert BEGIN in README.read_text(encoding="utf-8") and END in README.read_text(encoding="utf-8")
