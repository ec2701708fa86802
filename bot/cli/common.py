"""What the feature sub-commands share: who the operator is, how their action goes to the audit log, and
a mistake that is audited before it is reported.

Every CLI admin action is an audit entry with source "cli" and the operator's OS user as actor:

    from bot.cli.common import audit, cli_actor, problem, record

    await record(db, args, "lottery draw", audit_store.OK, detail, channel=g.channel, group=g.external_id)
    raise await problem(db, args, "push add", "a live post is already named …")   # audited as USAGE
    await audit(session, "faq add", detail=…, args=question)   # inside the change's own transaction
    created_by = cli_actor()                                      # "cli:<OS user>"
"""

from __future__ import annotations

import argparse
import getpass

from bot.cli import UsageProblem
from storage import audit as audit_store
from storage.db import Database

# Parsed arguments that say nothing about the action: the handler and the global options. Every
# sub-command selector (dest "…_command": lottery_command, tag_command …) is left out as well.
_NOT_ARGUMENTS = frozenset({"handler", "command", "config", "log_level"})


def operator() -> str:
    """The OS user running the command: the actor of its audit entries."""
    return getpass.getuser()


def cli_actor() -> str:
    """How rows made from the command line name their maker ("cli:<OS user>")."""
    return f"cli:{operator()}"


def args_text(args: argparse.Namespace) -> str:
    """The options given, as `name=value` sorted by name, for the audit log (unset options left out)."""
    return " ".join(f"{key}={value}" for key, value in sorted(vars(args).items())
                    if key not in _NOT_ARGUMENTS and not key.endswith("_command")
                    and value is not None and value is not False and value != "")


async def audit(session, command: str, *, result: str = audit_store.OK, args: str = "",  # noqa: ANN001 - AsyncSession
                detail: str = "", channel: str = "", group: str = "") -> None:
    """An audit entry for a CLI action, written in the caller's transaction (with the change it records)."""
    await audit_store.record(session, source="cli", actor=operator(), command=command, result=result,
                             channel=channel, group=group, args=args, detail=detail)


async def record(db: Database, args: argparse.Namespace, command: str, result: str, detail: str = "",
                 channel: str = "", group: str = "") -> None:
    """An audit entry for a CLI action in a transaction of its own; its arguments are `args_text(args)`."""
    async with db.session() as session:
        await audit(session, command, result=result, args=args_text(args), detail=detail, channel=channel,
                    group=group)


async def problem(db: Database, args: argparse.Namespace, command: str, message: str, channel: str = "",
                  group: str = "") -> UsageProblem:
    """Audit a refused command (result USAGE) and return the UsageProblem to raise: `raise await problem(…)`."""
    await record(db, args, command, audit_store.USAGE, message, channel, group)
    return UsageProblem(message)
