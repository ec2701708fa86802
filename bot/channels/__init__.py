"""The doors into the bot. Each door is a channel adapter with declared capabilities.

`DOORS` lists every door qunbot knows, in the order the README's capability table shows them: the
door's name (which is also its config section and its `Channel.name`) and where its class lives. A door
is started when its config section says `enabled = true`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.channels.base import Channel

DOORS: dict[str, str] = {
    "simulator": "bot.channels.simulator:SimulatorChannel",
    "wecom": "bot.channels.wecom:WeComAppChannel",
    "smartbot": "bot.channels.smartbot:SmartbotChannel",
    "smartbot_ws": "bot.channels.smartbot_ws:SmartbotWsChannel",
    "robot": "bot.channels.robot:RobotChannel",
    "official_account": "bot.channels.official_account:OfficialAccountChannel",
    "gateway": "bot.channels.gateway:GatewayChannel",
}


def door_class(name: str) -> type[Channel]:
    """The channel class of a door, imported on first use (doors that are off cost nothing)."""
    module, _, attr = DOORS[name].partition(":")
    cls: type[Channel] = getattr(import_module(module), attr)
    return cls
