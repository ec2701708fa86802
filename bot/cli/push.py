"""`qunbot push`: scheduled posts from the command line — add, list, pause, resume, remove, preview, runs —
plus group tags (targets) and per-group limits (quiet hours, daily cap).

Changes go to the database; running bots pick them up at their next sync (`push.sync_interval_seconds`).
Every change is written to the audit log with source "cli" and the OS user as actor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from bot.cli import UsageProblem, open_database
from bot.cli.common import cli_actor, problem, record
from bot.config import Config
from bot.push_spec import (
    KINDS,
    SpecError,
    check_content,
    check_payload,
    check_timezone,
    format_quiet_hours,
    parse_group_ref,
    parse_quiet_hours,
    parse_schedule,
)
from bot.templates import Templates
from storage import audit as audit_store
from storage import push as store
from storage.db import Database, utcnow
from storage.groups import Group, ensure_group

MAX_DAILY_CAP = 10_000


def register(sub: argparse._SubParsersAction) -> None:
    push = sub.add_parser("push", help="scheduled posts: add, list, pause, resume, remove, preview, runs, tags, limits")
    psub = push.add_subparsers(dest="push_command", required=True, metavar="PUSH_COMMAND")

    add = psub.add_parser("add", help="add a scheduled post")
    add.add_argument("--name", help="a name to refer to it by (unique among live posts)")
    add.add_argument("--schedule", required=True,
                     help='"0 9 * * *" (cron), "every 30m" / "每2小时", "每天 09:00", "工作日 8:30", '
                          '"每周一 10:00", or once: "2026-05-01 09:00", "明天 9:00"')
    add.add_argument("--timezone", help="the schedule's timezone (default: the campaign's, else the bot's timezone)")
    targets = add.add_mutually_exclusive_group()
    targets.add_argument("--group", action="append", metavar="[CHANNEL:]GROUP",
                         help="a target group (repeat for several); a bare id is on --channel")
    targets.add_argument("--tag", help="every live group with this tag (qunbot push tag add)")
    targets.add_argument("--all", action="store_true", help="every live group")
    add.add_argument("--channel", help="the door of bare --group ids (default simulator); with --tag/--all, "
                                       "only groups on this door")
    add.add_argument("--kind", choices=KINDS, default="text", help="text (default), markdown, image or news")
    content = add.add_mutually_exclusive_group()
    content.add_argument("--text", help="the content, with {date} {weekday} {group_name} {member_count} "
                                        "{yesterday_checkins} {days_until:2026-12-31}")
    content.add_argument("--file", help="read the content from this UTF-8 file")
    add.add_argument("--payload", help='JSON for image ({"url": …}) or news ({"articles": [{"title", "url"}]})')
    add.add_argument("--paused", action="store_true", help="add it switched off")
    add.add_argument("--campaign", help="the campaign it belongs to (qunbot campaign add); without targets it "
                                        "takes the campaign's groups; adds {campaign} {phase} {days_left}")
    add.add_argument("--phase", help="its phase in the campaign (预热 爆发 长尾 复盘): it fires only on those days")
    add.set_defaults(handler=_add)

    listing = psub.add_parser("list", help="list the posts with their schedules, targets and next run")
    listing.add_argument("--removed", action="store_true", help="include removed posts")
    listing.set_defaults(handler=_list)

    for name, text in (("pause", "switch a post off"), ("resume", "switch a post on again (from now on)"),
                       ("remove", "remove a post (its runs stay; pending deliveries are skipped)")):
        p = psub.add_parser(name, help=text)
        p.add_argument("post", help="the post's number or name")
        p.set_defaults(handler=_switch)

    preview = psub.add_parser("preview", help="the next run times and the content as a target group gets it")
    preview.add_argument("post", help="the post's number or name")
    preview.add_argument("--count", type=int, default=5, help="how many run times (default 5)")
    preview.add_argument("--group", metavar="[CHANNEL:]GROUP", help="render for this group (default: its first target)")
    preview.add_argument("--channel", default="simulator", help="the door of a bare --group id (default simulator)")
    preview.set_defaults(handler=_preview)

    runs = psub.add_parser("runs", help="every run with each delivery's state and reason, and a summary")
    runs.add_argument("post", nargs="?", help="only this post (number or name)")
    runs.add_argument("--limit", type=int, default=20, help="the latest N runs (default 20)")
    runs.add_argument("--state", choices=store.DELIVERY_STATES, help="only deliveries in this state")
    runs.set_defaults(handler=_runs)

    tag = psub.add_parser("tag", help="group tags, for posts that target a tag")
    tsub = tag.add_subparsers(dest="tag_command", required=True, metavar="TAG_COMMAND")
    for name, text in (("add", "tag groups"), ("remove", "untag groups")):
        p = tsub.add_parser(name, help=text)
        p.add_argument("tag", help="the tag")
        p.add_argument("--group", action="append", required=True, metavar="[CHANNEL:]GROUP", help="a group (repeat)")
        p.add_argument("--channel", default="simulator", help="the door of bare --group ids (default simulator)")
        p.set_defaults(handler=_tag)
    tlist = tsub.add_parser("list", help="tags and their groups")
    tlist.add_argument("tag", nargs="?", help="only this tag")
    tlist.set_defaults(handler=_tag_list)

    limits = psub.add_parser("limits", help="a group's quiet hours and daily cap (show, or set with the options)")
    limits.add_argument("--group", required=True, metavar="[CHANNEL:]GROUP", help="the group")
    limits.add_argument("--channel", default="simulator", help="the door of a bare --group id (default simulator)")
    limits.add_argument("--quiet-hours", help='"22:00-08:00", "off" for none, or "default" (push.quiet_hours)')
    limits.add_argument("--daily-cap", help='posts per local day, 0 for no cap, or "default" (push.daily_cap)')
    limits.set_defaults(handler=_limits)


# -- helpers ---------------------------------------------------------------------------------------------


async def resolve_group(db: Database, ref: str, channel: str | None) -> Group:
    """A group named on the command line (`channel:id` or an id on `channel`), created if new."""
    try:
        chan, external = parse_group_ref(ref, channel or "simulator")
    except SpecError as exc:
        raise UsageProblem(str(exc)) from None
    async with db.session() as session:
        return await ensure_group(session, chan, external)


async def _load(db: Database, ref: str) -> store.PushPost:
    async with db.read_session() as session:
        post = await store.get_post(session, ref)
    if post is None:
        raise UsageProblem(f"no post {ref!r}")
    return post


def _local(at: datetime, tz: str) -> str:
    local = at.astimezone(ZoneInfo(tz))
    return f"{local:%Y-%m-%d %H:%M} {tz} ({at.astimezone(UTC):%Y-%m-%d %H:%M} UTC)"


async def _targets_text(db: Database, post: store.PushPost) -> str:
    if post.target_kind == store.GROUPS:
        async with db.read_session() as session:
            groups = await store.listed_groups(session, post.id)  # type: ignore[arg-type]
        return "groups " + ", ".join(f"{g.channel}/{g.external_id}" for g in groups)
    where = f" on {post.target_channel}" if post.target_channel else ""
    return (f"tag {post.target_tag}" if post.target_kind == store.TAG else "all groups") + where


# -- commands --------------------------------------------------------------------------------------------


async def _add(config: Config, args: argparse.Namespace) -> int:
    from bot.cli.campaign import campaign_post_fields
    from storage.campaign import CampaignError

    now = utcnow()
    async with open_database(config) as db:
        plan = None
        phase = None
        try:
            if args.campaign:
                plan, phase = await campaign_post_fields(db, args.campaign, args.phase)
            elif args.phase:
                raise CampaignError("phase", "--phase needs --campaign")
            if not (args.group or args.tag or args.all or plan):
                raise CampaignError("targets", "give --group, --tag or --all (or --campaign to take its groups)")
        except CampaignError as exc:
            raise await problem(db, args, "push add", str(exc)) from None
        tz = args.timezone or (plan.campaign.timezone if plan else config.timezone)
        try:
            check_timezone(tz)
            schedule = parse_schedule(args.schedule, tz=tz, now=now)
            if args.file:
                text = await asyncio.to_thread(Path(args.file).read_text, encoding="utf-8")
            else:
                text = args.text or ""
            payload = check_payload(args.kind, args.payload or {})
            if args.kind in ("text", "markdown") and not text.strip():
                raise SpecError("content", "give the content with --text or --file")
            if plan is not None:
                check_content(text, {**config.push.dates, **plan.named_dates()}, campaign=True)
            else:
                check_content(text, config.push.dates)
        except SpecError as exc:
            raise await problem(db, args, "push add", str(exc)) from None
        except OSError as exc:
            raise await problem(db, args, "push add", f"cannot read {args.file}: {exc.strerror}") from None
        group_ids: list[int] = []
        for ref in args.group or []:
            group = await resolve_group(db, ref, args.channel)
            if group.external_id == store.DIRECT_SCOPE:
                raise await problem(db, args, "push add", f"{ref}: a door's 1:1 scope is not a group to post into")
            group_ids.append(group.id)  # type: ignore[arg-type]
        kind = store.GROUPS if args.group else store.TAG if args.tag else store.ALL
        targets = {"target_kind": kind, "target_tag": args.tag, "group_ids": tuple(group_ids),
                   "target_channel": args.channel if kind != store.GROUPS else None}
        if plan is not None and not (args.group or args.tag or args.all):
            from storage.campaign import post_targets

            async with db.read_session() as session:
                targets = await post_targets(session, plan.campaign)
        fields = store.PostFields(schedule=schedule, schedule_text=" ".join(args.schedule.split()), timezone=tz,
                                  content=text, kind=args.kind, payload=payload, name=args.name,
                                  enabled=not args.paused, campaign_id=plan.id if plan else None, phase=phase,
                                  **targets)
        from sqlalchemy.exc import IntegrityError

        try:
            async with db.session() as session:
                post = await store.create_post(session, fields, source=store.CLI, created_by=cli_actor(),
                                               now=now)
        except IntegrityError:
            raise await problem(db, args, "push add", f"a live post is already named {args.name!r}") from None
        detail = f"added post {post.id} ({schedule.describe(tz)}, {tz})"
        if plan is not None:
            detail += f" to campaign {plan.campaign.name}" + (f", phase {phase}" if phase else "")
        await record(db, args, "push add", audit_store.OK, detail)
        print(f"post {post.id} added: {schedule.describe(tz)} in {tz} -> {await _targets_text(db, post)}")
        if plan is not None:
            from storage.campaign import phase_label

            first, last = plan.phases[phase] if phase else plan.span()
            print(f"campaign {plan.campaign.name}, {f'phase {phase_label(phase)}' if phase else 'all its phases'}: "
                  f"fires only from {first} to {last} ({plan.campaign.timezone})")
        return await _preview_post(db, config, post, 3, None)


async def _list(config: Config, args: argparse.Namespace) -> int:
    from scheduler.push import next_runs

    now = utcnow()
    async with open_database(config) as db:
        async with db.read_session() as session:
            posts = await store.list_posts(session, include_removed=args.removed)
        from storage.campaign import post_window

        for post in posts:
            state = "removed" if post.removed_at else "on" if post.enabled else "paused"
            async with db.read_session() as session:
                window = await post_window(session, post)
            upcoming = next_runs(post, 1, now, window) if post.enabled and not post.removed_at else []
            nxt = _local(upcoming[0], post.timezone) if upcoming else "-"
            label = f" {post.name}" if post.name else ""
            content = " ".join(post.content.split())
            print(f"{post.id}{label}\t{state}\t{post.schedule.describe(post.timezone)} ({post.timezone})\t"
                  f"{await _targets_text(db, post)}\tnext {nxt}\t{post.kind}: {content[:60]}\t[{post.source}]")
        if not posts:
            print("(no posts)")
    return 0


async def _switch(config: Config, args: argparse.Namespace) -> int:
    now = utcnow()
    async with open_database(config) as db:
        post = await _load(db, args.post)
        assert post.id is not None
        async with db.session() as session:
            if args.push_command == "remove":
                done = await store.remove_post(session, post.id, now)
            else:
                done = await store.set_enabled(session, post.id, args.push_command == "resume", now)
        what = {"pause": "paused", "resume": "resumed", "remove": "removed"}[args.push_command]
        detail = f"post {post.id} {what}" if done else f"post {post.id} was already {what}"
        if post.source == store.CONFIG and done:
            detail += " (declared in the config file: the next start-up applies the file again)"
        await record(db, args, f"push {args.push_command}", audit_store.OK, detail)
    print(detail)
    return 0


async def _preview(config: Config, args: argparse.Namespace) -> int:
    async with open_database(config) as db:
        post = await _load(db, args.post)
        group = await resolve_group(db, args.group, args.channel) if args.group else None
        return await _preview_post(db, config, post, max(1, min(args.count, 100)), group)


async def _preview_post(db: Database, config: Config, post: store.PushPost, count: int, group: Group | None) -> int:
    from scheduler.push import next_runs, render_post
    from storage.campaign import post_window

    async with db.read_session() as session:
        window = await post_window(session, post)
    upcoming = next_runs(post, count, utcnow(), window)
    print(f"next runs of post {post.id} ({post.schedule.describe(post.timezone)}, {post.timezone}):")
    for at in upcoming:
        print(f"  {_local(at, post.timezone)}")
    if not upcoming:
        print("  (none: it will not fire again)")
    if group is None:
        group = await _first_target(db, post)
    if group is None:
        print("(no target group yet: the content below uses an example group)")
        group = Group(channel="", external_id="(example)", name="示例群")
    templates = Templates(config.templates.file or None)
    reply = await render_post(db, config, templates, kind=post.kind, content=post.content, payload=post.payload_data,
                              scheduled_at=upcoming[0] if upcoming else utcnow(), group=group,
                              campaign_id=post.campaign_id, phase=post.phase)
    print(f"content for {group.channel}/{group.external_id} ({group.name or '-'}), {post.kind}:")
    print(reply.text)
    if reply.attachment:
        print(json.dumps(reply.attachment, ensure_ascii=False))
    return 0


async def _first_target(db: Database, post: store.PushPost) -> Group | None:
    from sqlalchemy import select

    async with db.read_session() as session:
        if post.target_kind == store.GROUPS:
            groups = await store.listed_groups(session, post.id)  # type: ignore[arg-type]
            return groups[0] if groups else None
        query = select(Group).where(*store.target_conditions(post)).order_by(Group.id).limit(1)
        return (await session.execute(query)).scalar_one_or_none()


async def _runs(config: Config, args: argparse.Namespace) -> int:
    async with open_database(config) as db:
        post = await _load(db, args.post) if args.post else None
        post_id = post.id if post else None
        async with db.read_session() as session:
            rows = await store.runs_of(session, post_id, limit=max(1, args.limit))
            deliveries = await store.deliveries_of(session, [r.id for r, _ in rows])  # type: ignore[misc]
            by_state = await store.delivery_counts(session, post_id)
            counts = await store.run_counts(session, post_id)
    by_run: dict[int, list[store.DeliveryView]] = {}
    for d in deliveries:
        by_run.setdefault(d.run_id, []).append(d)
    for run, p in rows:
        label = f" {p.name}" if p.name else ""
        flags = " skipped: " + run.reason if run.status == store.RUN_SKIPPED else " LATE" if run.late else ""
        print(f"run {run.id}  post {p.id}{label}  {_local(run.scheduled_at, p.timezone)}  "
              f"{run.targets} target(s){flags}")
        for d in by_run.get(run.id, []):  # type: ignore[arg-type]
            if args.state and d.status != args.state:
                continue
            when = f" at {d.sent_at:%Y-%m-%d %H:%M:%S} UTC" if d.sent_at else (
                f" next {d.next_attempt_at:%Y-%m-%d %H:%M:%S} UTC" if d.status == store.PENDING else "")
            name = f" ({d.group_name})" if d.group_name else ""
            reason = f"  {d.reason}" if d.reason else ""
            print(f"  {d.channel}/{d.group}{name}\t{d.status}\tattempts {d.attempts}{when}{reason}")
    if not rows:
        print("(no runs)")
    total = sum(by_state.values())
    states = ", ".join(f"{by_state.get(s, 0)} {s}" for s in store.DELIVERY_STATES)
    scope = f"post {post_id}" if post_id else "all posts"
    print(f"summary ({scope}): {counts['runs']} runs ({counts['late']} late, {counts['skipped']} skipped); "
          f"{total} deliveries: {states}")
    return 0


async def _tag(config: Config, args: argparse.Namespace) -> int:
    tag = args.tag.strip()
    if not tag or len(tag) > 64:
        raise UsageProblem("a tag is 1 to 64 characters")
    async with open_database(config) as db:
        lines = []
        for ref in args.group:
            group = await resolve_group(db, ref, args.channel)
            async with db.session() as session:
                if args.tag_command == "add":
                    done = await store.add_tag(session, group.id, tag)  # type: ignore[arg-type]
                else:
                    done = await store.remove_tag(session, group.id, tag)  # type: ignore[arg-type]
            verb = "tagged" if args.tag_command == "add" else "untagged"
            lines.append(f"{group.channel}/{group.external_id} {verb} {tag}" + ("" if done else " (no change)"))
        await record(db, args, f"push tag {args.tag_command}", audit_store.OK, "; ".join(lines))
    print("\n".join(lines))
    return 0


async def _tag_list(config: Config, args: argparse.Namespace) -> int:
    async with open_database(config) as db, db.read_session() as session:
        rows = await store.tagged(session, args.tag)
    for tag, group in rows:
        dismissed = " (dismissed)" if group.dismissed_at else ""
        print(f"{tag}\t{group.channel}/{group.external_id}\t{group.name}{dismissed}")
    if not rows:
        print("(no tags)")
    return 0


async def _limits(config: Config, args: argparse.Namespace) -> int:
    cfg = config.push
    async with open_database(config) as db:
        group = await resolve_group(db, args.group, args.channel)
        assert group.id is not None
        values: dict[str, object] = {}
        try:
            if args.quiet_hours is not None:
                values["quiet_hours"] = (None if args.quiet_hours.strip().lower() == "default"
                                         else format_quiet_hours(parse_quiet_hours(args.quiet_hours)))
            if args.daily_cap is not None:
                raw = args.daily_cap.strip().lower()
                if raw != "default" and not (raw.isdigit() and int(raw) <= MAX_DAILY_CAP):
                    raise SpecError("cap", f"--daily-cap must be 0..{MAX_DAILY_CAP} or default")
                values["daily_cap"] = None if raw == "default" else int(raw)
        except SpecError as exc:
            raise await problem(db, args, "push limits", str(exc)) from None
        if values:
            async with db.session() as session:
                await store.set_group_settings(session, group.id, utcnow(), **values)
            await record(db, args, "push limits", audit_store.OK, f"set {values}", group.channel, group.external_id)
        async with db.read_session() as session:
            settings = await store.group_settings(session, group.id)
    quiet = settings.quiet_hours if settings and settings.quiet_hours is not None else None
    cap = settings.daily_cap if settings and settings.daily_cap is not None else None
    tz = group.timezone or config.timezone
    print(f"{group.channel}/{group.external_id}: quiet hours "
          f"{(quiet or 'none') if quiet is not None else (cfg.quiet_hours or 'none') + ' (default)'} ({tz}); "
          f"daily cap {(cap or 'none') if cap is not None else str(cfg.daily_cap or 'none') + ' (default)'}")
    return 0

