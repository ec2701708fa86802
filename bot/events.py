"""Common events and replies: what handlers see and return, whatever door a message came through."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, ClassVar


@dataclass(frozen=True)
class Person:
    """A member as the platform names them."""

    user: str
    name: str = ""
    # Per-member join details where the platform gives them (e.g. WeCom groupchat/get).
    scene: str | None = None
    inviter: str | None = None
    kind: str | None = None
    # The member's standing in the group as the platform reports it: "owner", "admin" or "member";
    # None where the door does not say.
    role: str | None = None


@dataclass
class Event:
    """Base of every event. `key` is the platform's message identity used for deduplication."""

    channel: str
    key: str
    group: str | None
    at: datetime
    # The group's display name where the door knows it.
    group_name: str | None = field(default=None, kw_only=True)
    # Set once the inbox has accepted the event; used in logs.
    id: int | None = field(default=None, kw_only=True)
    type_name: ClassVar[str] = "event"


@dataclass
class TextMessage(Event):
    sender: Person = field(default_factory=lambda: Person(""))
    text: str = ""
    # True when the bot was @-mentioned (the only way some doors deliver group messages).
    mentioned: bool = False
    type_name: ClassVar[str] = "text"


@dataclass
class Command(TextMessage):
    """A text message that names a bot command (e.g. 签到, /help)."""

    name: str = ""
    args: str = ""
    type_name: ClassVar[str] = "command"


@dataclass
class MemberJoined(Event):
    members: list[Person] = field(default_factory=list)
    inviter: str | None = None
    # Platform-neutral: "invited", "link", "qrcode", or None when unknown.
    scene: str | None = None
    # The group's owner and admins where the door fetched them (user id → "owner"/"admin"); None if unknown.
    admins: dict[str, str] | None = None
    type_name: ClassVar[str] = "member_joined"


@dataclass
class MemberLeft(Event):
    members: list[Person] = field(default_factory=list)
    # "left", "removed", or None when unknown.
    scene: str | None = None
    type_name: ClassVar[str] = "member_left"


@dataclass
class GroupCreated(Event):
    name: str = ""
    type_name: ClassVar[str] = "group_created"


@dataclass
class GroupDismissed(Event):
    type_name: ClassVar[str] = "group_dismissed"


@dataclass
class ChatEntered(Event):
    """A member opened their 1:1 chat with the bot (WeCom smart bot enter_chat, at most daily); the door
    shows the answer as a greeting."""

    sender: Person = field(default_factory=lambda: Person(""))
    type_name: ClassVar[str] = "chat_entered"


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type_name: cls
    for cls in (TextMessage, Command, MemberJoined, MemberLeft, GroupCreated, GroupDismissed, ChatEntered)
}


def event_to_json(event: Event) -> str:
    """The event as stored in the inbox (shallow copies: dataclasses.asdict deep-copies and is 10× slower)."""
    data = dict(vars(event))
    data.pop("id", None)
    data["at"] = event.at.astimezone(UTC).isoformat()
    if "sender" in data:
        data["sender"] = dict(vars(data["sender"]))
    if "members" in data:
        data["members"] = [dict(vars(m)) for m in data["members"]]
    return _encode(data)


# One encoder for every event (json.dumps with options builds a new one per call).
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode  # events hold no cycles


def event_from_json(type_name: str, payload: str, *, event_id: int | None = None) -> Event:
    cls = EVENT_TYPES[type_name]
    data: dict[str, Any] = json.loads(payload)
    data["at"] = datetime.fromisoformat(data["at"])
    names = {f.name for f in fields(cls)}
    for key in ("sender",):
        if key in data and isinstance(data[key], dict):
            data[key] = Person(**data[key])
    if "members" in data:
        data["members"] = [Person(**m) for m in data["members"]]
    event = cls(**{k: v for k, v in data.items() if k in names})
    event.id = event_id
    return event


@dataclass
class Reply:
    """Something the bot says in answer (or on its own). Channels render it as well as they can."""

    text: str
    mentions: list[str] = field(default_factory=list)
    markdown: bool = False
    # An image or news card for doors that render them (Capabilities.images / news), with `text` as its
    # caption: {"kind": "image", "url": …} or {"kind": "image", "base64": …, "md5": …}, or
    # {"kind": "news", "articles": [{"title", "url", "description", "picurl"}, …]}.
    attachment: dict[str, Any] | None = None
