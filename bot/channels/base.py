"""What every channel adapter is: a door into the bot with declared capabilities."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bot.events import Event, Reply

if TYPE_CHECKING:
    from aiohttp import web

    from bot.runtime import Runtime

log = logging.getLogger("qunbot.channels")

@dataclass(frozen=True)
class Capabilities:
    """What a door can do; features consult these instead of knowing which door they serve."""

    can_reply: bool = False
    can_post_proactively: bool = False
    sees_joins: bool = False
    # Can the bot post its own message into the group when someone joins?
    posts_welcome: bool = False
    # Does the platform send a welcome itself from a template we keep in sync?
    welcome_template: bool = False
    # Does the door report a member opening a 1:1 chat (smart bot enter_chat, Official Account follow)?
    greets: bool = False
    mentions: bool = False
    markdown: bool = False
    images: bool = False
    # Can it post link cards (news articles: title, description, url, picture)?
    news: bool = False
    # Can it queue posts that a person confirms before they go out (WeCom customer groups: an add_msg_template
    # task the group owner sends from the WeCom client)? Scheduled posts use it (`Channel.queue_post`);
    # features that must post at once (lottery winners) do not.
    confirmed_posts: bool = False


class PostFailed(Exception):
    """What `Channel.post` raises when the platform refused or could not take a post.

    `permanent`: retrying cannot help (bad webhook key, the bot is out of the group, content refused);
    otherwise it is transient and retried with backoff. `retry_after` (seconds): the platform asked us to
    slow down (rate limit); the retry waits that long and does not count as a failed attempt. Any other
    exception from `post` counts as transient.
    """

    def __init__(self, reason: str, *, permanent: bool = False, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.retry_after = retry_after


class PostSkipped(Exception):
    """What `Channel.queue_post` raises when a post must not go out at all (a platform's per-period cap was
    reached, the target is no group): the delivery is recorded as skipped with the reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class QueuedPost:
    """A scheduled post's delivery handed to `Channel.queue_post`: the outbox holds its lease (`holder`)."""

    delivery_id: int
    run_id: int
    group_id: int
    # The platform's group id.
    group: str
    holder: str
    now: datetime


class Channel:
    """Base class: parse platform payloads into events at the edge, deliver replies back."""

    name: str = "base"
    # How the README's capability table names the door, and how members reach the bot through it.
    title: str = "base"
    reaches: str = ""
    capabilities = Capabilities()

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._tasks: set[asyncio.Task[object]] = set()
        # Messages this process is processing, by message key: a platform retry arriving meanwhile waits for
        # the same work instead of starting its own. Only a shortcut: what a retry answers comes from the
        # database, so a retry reaching another process is answered the same.
        self._working: dict[str, asyncio.Task[Any]] = {}

    def spawn(self, coro: Coroutine[object, object, object], *, name: str) -> asyncio.Task[object]:
        """Run background work owned by this channel; it is cancelled when the channel stops."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def work_on(self, key: str, coro: Coroutine[object, object, Any], *, name: str) -> asyncio.Task[Any]:
        """Process an accepted message in the background, findable by its key until it is done.

        Register it before anything else awaits, so a retry accepted in the same batch finds the work.
        """
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._working[key] = task
        task.add_done_callback(lambda done: self._working.pop(key, None) if self._working.get(key) is done else None)
        return task

    async def wait_for_work(self, key: str, deadline: float) -> bool:
        """Wait (until the loop time `deadline`) for this process's work on `key`; False if there is none here."""
        work = self._working.get(key)
        if work is None:
            return False
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining > 0:
            await asyncio.wait({work}, timeout=remaining)
        return True

    async def drain(self) -> None:
        """Wait until every message this process is working on is processed (tests, shutdown)."""
        while self._working:
            await asyncio.gather(*list(self._working.values()), return_exceptions=True)

    async def cancel_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def add_routes(self, app: web.Application) -> None:
        """Register this door's HTTP endpoints."""

    async def start(self) -> None:
        """Start background work (connections, syncs)."""

    async def stop(self) -> None:
        """Let messages being processed finish (bounded), then stop background work."""
        if self._working:
            try:
                await asyncio.wait_for(self.drain(), self.runtime.config.server.shutdown_timeout_seconds)
            except TimeoutError:
                log.warning("door stopping with messages still being processed; the inbox recovers them",
                            extra={"channel": self.name, "running": len(self._working)})
                for task in list(self._working.values()):
                    task.cancel()
        await self.cancel_tasks()

    async def enrich(self, event: Event) -> Event:
        """Complete an event with platform data (names, join details) before dispatch."""
        return event

    async def deliver(self, event: Event, replies: list[Reply]) -> None:
        """Send the replies produced for `event` back through this door."""
        raise NotImplementedError

    async def post(self, group: str, replies: list[Reply]) -> None:
        """Post into a group on the bot's own initiative (announcements, scheduled posts); only where
        can_post_proactively. Raises PostFailed when the platform refuses (see there)."""
        raise NotImplementedError(f"the {self.name} door cannot post into a group on its own")

    def posts_directly(self, group: str) -> bool:
        """Can `post` put a message straight into this group? What the door declares, unless some of its groups
        differ (the WeCom app posts into the app chats it created, not into customer groups)."""
        return self.capabilities.can_post_proactively

    async def queue_post(self, post: QueuedPost, replies: list[Reply]) -> str:
        """Queue a scheduled post for a person to confirm (doors with `confirmed_posts`, for groups they cannot
        post into directly). Returns the note recorded with the delivery, which then waits in state `awaiting`
        until the door records its outcome (sent once confirmed; failed when refused or never confirmed).
        Raises PostSkipped when it must not go out at all, PostFailed like `post`."""
        raise NotImplementedError(f"the {self.name} door cannot queue posts for confirmation")
