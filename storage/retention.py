"""Forgetting finished bookkeeping: processed inbox rows and what only mattered while they could come back.

The inbox keeps every accepted event so that a platform's retry (minutes later at most) or a second process
finds it and stops. Once an event is done and older than `inbox.keep_days`, nothing will ask for it again;
neither for the per-event keys kept for exactly-once counting (`faq_counted_events`) nor for the callback
doors' reply rows, which a retry of the same message reads. Without this they grow by one row per message
forever. Events still pending, processing or failed are kept (failed ones are the record of what went
wrong); so is everything members and operators see (activity, check-ins, lotteries, posts).

Rows go in pages of a few thousand, each page its own short transaction, so a large first cleanup neither
holds a lock for long nor builds one huge transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from storage import fastsql
from storage.db import Database
from storage.inbox import DONE
from storage.replies import DELIVERED, FAILED

PAGE = 2000


@dataclass(frozen=True)
class Rule:
    table: str
    key: str  # the primary key column
    at: str  # the time column compared with the cutoff
    where: str = ""  # a further condition (constant SQL)


SETTLED = f"status IN ('{DELIVERED}', '{FAILED}')"  # a reply row nobody will hand over again
RULES = (
    Rule("inbox", "id", "received_at", f"status = '{DONE}'"),
    Rule("faq_counted_events", "event_id", "counted_at"),
    Rule("smartbot_replies", "id", "created_at", SETTLED),
    Rule("robot_replies", "id", "created_at", SETTLED),
    Rule("official_account_replies", "id", "created_at"),
)


async def prune(db: Database, older_than: datetime, *, page: int = PAGE) -> dict[str, int]:
    """Delete what the rules say is finished and older than `older_than`; {table: rows deleted}."""
    deleted: dict[str, int] = {}
    for rule in RULES:
        condition = f"{rule.at} < ?" + (f" AND {rule.where}" if rule.where else "")
        sql = (f"DELETE FROM {rule.table} WHERE {rule.key} IN "  # noqa: S608 - constant names, placeholders only
               f"(SELECT {rule.key} FROM {rule.table} WHERE {condition} ORDER BY {rule.key} LIMIT ?) "
               f"RETURNING {rule.key}")
        total = 0
        while True:
            rows = await fastsql.fetch(db, sql, [older_than, page])
            total += len(rows)
            if len(rows) < page:
                break
        deleted[rule.table] = total
    return deleted
