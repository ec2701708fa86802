"""`qunbot campaign`: campaigns from the command line — add, edit, list, show, summary, remove — the posts in
them (attach, detach; or `qunbot push add --campaign NAME --phase 爆发`) and the lotteries counted in them.

Every change goes through storage.campaign (the functions the console, the chat commands and the config file
use) and is written to the audit log with source "cli" and the OS user as actor.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from datetime import date

from bot.cli import UsageProblem, open_database
from bot.cli.common import cli_actor, problem, record
from bot.cli.push import resolve_group
from bot.config import Config
from storage import audit as audit_store
from storage import campaign as store
from storage.db import Database, utcnow
from storage.groups import Group

DEFAULT_WORDS = {"default", "默认"}


def register(sub: argparse._SubParsersAction) -> None:
    campaign = sub.add_parser("campaign", help="campaigns: posts in phases with dates, countdowns, reminders, summary")
    csub = campaign.add_subparsers(dest="campaign_command", required=True, metavar="CAMPAIGN_COMMAND")

    add = csub.add_parser("add", help="add a campaign")
    add.add_argument("--name", required=True, help="what to call it in commands (unique among live campaigns)")
    _definition(add, new=True)
    add.set_defaults(handler=_add)

    edit = csub.add_parser("edit", help="change a campaign: only what the options say (its posts, runs and "
                                        "reminders stay consistent)")
    edit.add_argument("campaign", help="its name or number")
    edit.add_argument("--name", help="a new name")
    _definition(edit, new=False)
    edit.add_argument("--drop-phase", action="append", metavar="PHASE", help="remove a phase (it may have no posts)")
    edit.add_argument("--drop-date", action="append", metavar="NAME", help="remove an extra named date")
    edit.set_defaults(handler=_edit)

    attach = csub.add_parser("attach", help="make a post one of the campaign's (or move it to another phase)")
    attach.add_argument("campaign", help="the campaign's name or number")
    attach.add_argument("post", help="the post's number or name")
    attach.add_argument("--phase", help="its phase (预热 爆发 长尾 复盘): it fires only on those days; "
                                        "without: on every day of the campaign")
    attach.set_defaults(handler=_attach)

    detach = csub.add_parser("detach", help="take a post out of the campaign (it then fires on every day again)")
    detach.add_argument("campaign", help="the campaign's name or number")
    detach.add_argument("post", help="the post's number or name")
    detach.set_defaults(handler=_detach)

    listing = csub.add_parser("list", help="list campaigns with their phase and countdown")
    listing.add_argument("--removed", action="store_true", help="include removed campaigns")
    listing.set_defaults(handler=_list)

    show = csub.add_parser("show", help="a campaign: phases, dates, groups, posts, lotteries, reminders")
    show.add_argument("campaign", help="its name or number")
    show.set_defaults(handler=_show)

    summary = csub.add_parser("summary", help="the campaign's figures for the review")
    summary.add_argument("campaign", help="its name or number")
    summary.add_argument("--group", metavar="[CHANNEL:]GROUP", help="only this group's figures")
    summary.add_argument("--channel", default="simulator", help="the door of a bare --group id (default simulator)")
    summary.set_defaults(handler=_summary)

    remove = csub.add_parser("remove", help="remove a campaign and its posts (history stays for the summary)")
    remove.add_argument("campaign", help="its name or number")
    remove.set_defaults(handler=_remove)

    lottery = csub.add_parser("lottery", help="count a lottery in a campaign's summary, or stop counting it")
    lsub = lottery.add_subparsers(dest="lottery_command", required=True, metavar="LOTTERY_COMMAND")
    for name, text in (("add", "count the lottery in the campaign"), ("remove", "stop counting it")):
        p = lsub.add_parser(name, help=text)
        p.add_argument("campaign", help="the campaign's name or number")
        p.add_argument("lottery", type=int, help="the lottery's number")
        p.set_defaults(handler=_lottery)


def _definition(parser: argparse.ArgumentParser, *, new: bool) -> None:
    """The options of a campaign's definition: all of them for `add` (some required), each optional for `edit`."""
    parser.add_argument("--title", required=new, help="its title in texts ({campaign} in posts)")
    parser.add_argument("--timezone", help="the timezone its dates are read in (default: the bot's timezone)")
    targets = parser.add_mutually_exclusive_group(required=new)
    targets.add_argument("--group", action="append", metavar="[CHANNEL:]GROUP",
                         help="a group taking part (repeat for several); a bare id is on --channel")
    targets.add_argument("--tag", help="every live group with this tag (qunbot push tag add)")
    targets.add_argument("--all", action="store_true", help="every live group")
    parser.add_argument("--channel", help="the door of bare --group ids (default simulator); with --tag/--all, "
                                          "only groups on this door")
    parser.add_argument("--key-date", required=new, help="the key date (launch day), e.g. 2026-11-11")
    parser.add_argument("--key-name", default=store.DEFAULT_KEY_NAME if new else None,
                        help=f"what the key date is called, e.g. 开售 (default {store.DEFAULT_KEY_NAME})")
    parser.add_argument("--phase", action="append", required=new, metavar="PHASE=DAYS",
                        help="a phase and its days, e.g. 预热=2026-11-01..2026-11-07 (phases: 预热 爆发 长尾 复盘 "
                             "or warmup burst longtail review; repeat for each)" + ("" if new else
                             "; a phase not named keeps its days"))
    parser.add_argument("--date", action="append", metavar="NAME=DAY", help="an extra named date for "
                        "{days_until:NAME}, e.g. 直播=2026-11-10 (repeatable)")
    parser.add_argument("--owner", default="" if new else None, help="the ops contact shown in reminders and summaries")
    parser.add_argument("--ops", default="" if new else None,
                        help="platform user ids of ops to @-mention or message one to one, comma-separated")
    parser.add_argument("--remind-to", metavar="CHANNEL:GROUP",
                        help="where its reminders go, e.g. robot:ops or wecom:@direct (default campaign.reminder_target"
                             + ("" if new else "; \"default\" to go back to it") + ")")
    parser.add_argument("--remind-days", metavar="N,N", help="days before the key date to remind on, e.g. 7,3,1 "
                        "(default campaign.reminder_days_before; \"\" for none" + ("" if new else
                        "; \"default\" to go back to it") + ")")


# -- helpers ---------------------------------------------------------------------------------------------


async def _problem(db: Database, args: argparse.Namespace, command: str, message: str) -> UsageProblem:
    return await problem(db, args, f"campaign {command}", message)


async def _record(db: Database, args: argparse.Namespace, command: str, result: str, detail: str) -> None:
    await record(db, args, f"campaign {command}", result, detail)


async def load_plan(db: Database, ref: str, *, include_removed: bool = False) -> store.Plan:
    """The campaign named or numbered `ref`, with its phases and dates; UsageProblem if there is none."""
    async with db.read_session() as session:
        campaign = await store.get_campaign(session, ref, include_removed=include_removed)
        if campaign is None:
            raise UsageProblem(f"no campaign {ref!r}")
        return await store.load_plan(session, campaign)


def _pairs(values: list[str] | None, what: str) -> list[tuple[str, str]]:
    pairs = []
    for value in values or []:
        name, sep, rest = value.partition("=")
        if not sep or not name.strip() or not rest.strip():
            raise store.CampaignError(what, f"--{what} wants NAME=VALUE, got {value!r}", text=value)
        pairs.append((name.strip(), rest.strip()))
    return pairs


def plan_phases(fields: store.CampaignFields) -> list[tuple[str, tuple[date, date]]]:
    return [(p, fields.phases[p]) for p in store.PHASES if p in fields.phases]


def _day(day: date) -> str:
    return day.isoformat()


def _span(first: date, last: date) -> str:
    return _day(first) if first == last else f"{_day(first)}..{_day(last)}"


def _where(plan: store.Plan, day: date) -> str:
    phase = plan.phase_on(day)
    if phase is not None:
        return f"phase {store.phase_label(phase)} ({phase})"
    return {"before": "not started", "after": "over", "during": "between phases"}[plan.state_on(day)]


def _countdown(plan: store.Plan, day: date) -> str:
    left = plan.days_left(day)
    key = f"{plan.campaign.key_name} {_day(plan.campaign.key_date)}"
    return f"{left} day(s) to {key}" if left > 0 else f"{key} is today" if left == 0 else f"{key} was {-left} day(s) ago"


async def _targets_text(db: Database, campaign: store.Campaign) -> str:
    if campaign.target_kind == store.GROUPS:
        async with db.read_session() as session:
            groups = await store.listed_groups(session, campaign.id)  # type: ignore[arg-type]
        return "groups " + ", ".join(f"{g.channel}/{g.external_id}" for g in groups)
    where = f" on {campaign.target_channel}" if campaign.target_channel else ""
    return (f"tag {campaign.target_tag}" if campaign.target_kind == store.TAG else "all groups") + where


# -- commands --------------------------------------------------------------------------------------------


def _phases(values: list[str] | None, into: dict[str, tuple[date, date]] | None = None) -> dict[str, tuple[date, date]]:
    """--phase PHASE=DAYS options, over `into` (an edit's current phases): a phase named twice is a mistake."""
    phases = dict(into or {})
    seen: set[str] = set()
    for name, span in _pairs(values, "phase"):
        phase = store.parse_phase(name)
        if phase in seen:
            raise store.CampaignError("phase", f"phase {name} given twice", text=name)
        seen.add(phase)
        phases[phase] = store.parse_span(span)
    return phases


def _ops(text: str) -> tuple[str, ...]:
    return tuple(u for u in (w.strip() for w in text.replace("，", ",").split(",")) if u)


async def _group_ids(db: Database, refs: list[str], channel: str | None) -> tuple[int, ...]:
    ids: list[int] = []
    for ref in refs:
        group = await resolve_group(db, ref, channel)
        if group.external_id == store.DIRECT_SCOPE:
            raise store.CampaignError("targets", f"{ref}: a door's 1:1 scope is not a group")
        ids.append(group.id)  # type: ignore[arg-type]
    return tuple(ids)


async def _add(config: Config, args: argparse.Namespace) -> int:
    from sqlalchemy.exc import IntegrityError

    now = utcnow()
    async with open_database(config) as db:
        try:
            fields = store.CampaignFields(
                name=args.name, title=args.title, timezone=args.timezone or config.timezone,
                key_date=store.parse_day(args.key_date), phases=_phases(args.phase),
                target_kind=store.GROUPS if args.group else store.TAG if args.tag else store.ALL,
                target_tag=args.tag, target_channel=args.channel if not args.group else None,
                key_name=args.key_name, dates={name: store.parse_day(day) for name, day in _pairs(args.date, "date")},
                owner=args.owner, ops_users=_ops(args.ops), reminder_target=args.remind_to or None,
                reminder_days=None if args.remind_days is None else store.parse_days_list(args.remind_days))
            fields.group_ids = await _group_ids(db, args.group or [], args.channel)
            fields.check()
            async with db.session() as session:
                campaign = await store.create_campaign(session, fields, created_by=cli_actor(), now=now)
        except store.CampaignError as exc:
            raise await _problem(db, args, "add", str(exc)) from None
        except IntegrityError:
            raise await _problem(db, args, "add", f"a live campaign is already named {args.name!r}") from None
        await _record(db, args, "add", audit_store.OK, f"added campaign {campaign.id} {campaign.name}")
    print(f"campaign {campaign.id} {campaign.name} added: {campaign.title} ({campaign.timezone}), "
          f"{campaign.key_name} {_day(campaign.key_date)}")
    print("phases: " + "; ".join(f"{store.phase_label(p)} {_span(*s)}" for p, s in plan_phases(fields)))
    print(f"add its posts with: qunbot push add --campaign {campaign.name} --phase 爆发 --schedule ... --text ...")
    return 0


async def _edit(config: Config, args: argparse.Namespace) -> int:
    from sqlalchemy.exc import IntegrityError

    from scheduler.campaign import settings_of

    now = utcnow()
    async with open_database(config) as db:
        plan = await load_plan(db, args.campaign)
        if plan.campaign.created_by == store.CONFIG_MAKER:
            raise await _problem(db, args, "edit", f"campaign {plan.campaign.name} is declared in the config file "
                                                   "([[campaigns]]): change it there (start-up applies the file)")
        try:
            async with db.read_session() as session:
                current = await store.fields_of(session, plan)
            wanted = replace(current, phases=_phases(args.phase, current.phases), dates=dict(current.dates))
            for word in args.drop_phase or []:
                if wanted.phases.pop(store.parse_phase(word), None) is None:
                    raise store.CampaignError("phase", f"campaign {plan.campaign.name} has no {word} phase", text=word)
            for name in args.drop_date or []:
                if wanted.dates.pop(name, None) is None:
                    raise store.CampaignError("date_name", f"campaign {plan.campaign.name} has no date {name!r}",
                                              text=name)
            wanted.dates.update({name: store.parse_day(day) for name, day in _pairs(args.date, "date")})
            for attr, value in (("name", args.name), ("title", args.title), ("timezone", args.timezone),
                                ("key_name", args.key_name), ("owner", args.owner)):
                if value is not None:
                    setattr(wanted, attr, value)
            if args.key_date is not None:
                wanted.key_date = store.parse_day(args.key_date)
            if args.ops is not None:
                wanted.ops_users = _ops(args.ops)
            if args.remind_to is not None:
                wanted.reminder_target = None if args.remind_to.strip().lower() in DEFAULT_WORDS else args.remind_to
            if args.remind_days is not None:
                wanted.reminder_days = (None if args.remind_days.strip().lower() in DEFAULT_WORDS
                                        else store.parse_days_list(args.remind_days))
            if args.group or args.tag or args.all:
                wanted.target_kind = store.GROUPS if args.group else store.TAG if args.tag else store.ALL
                wanted.target_tag = args.tag
                wanted.target_channel = args.channel if not args.group else None
                wanted.group_ids = await _group_ids(db, args.group or [], args.channel)
            elif args.channel is not None and wanted.target_kind != store.GROUPS:
                wanted.target_channel = args.channel or None
            async with db.session() as session:
                edit = await store.update_campaign(session, plan.id, wanted, now=now, settings=settings_of(config))
        except store.CampaignError as exc:
            raise await _problem(db, args, "edit", str(exc)) from None
        except IntegrityError:
            raise await _problem(db, args, "edit", f"a live campaign is already named {args.name!r}") from None
        await _record(db, args, "edit", audit_store.OK, edit.detail)
        fresh = await load_plan(db, str(plan.id))
    print(edit.detail)
    print("phases: " + "; ".join(f"{store.phase_label(p)} {_span(*s)}" for p, s in fresh.phases.items()))
    return 0


async def _post_ref(db: Database, ref: str) -> int:
    from storage import push as push_store

    async with db.read_session() as session:
        post = await push_store.get_post(session, ref)
    if post is None:
        raise UsageProblem(f"no post {ref!r}")
    return post.id  # type: ignore[return-value]


async def _attach(config: Config, args: argparse.Namespace) -> int:
    now = utcnow()
    async with open_database(config) as db:
        plan = await load_plan(db, args.campaign)
        post_id = await _post_ref(db, args.post)
        try:
            phase = store.parse_phase(args.phase) if args.phase else None
            async with db.session() as session:
                post, changed = await store.attach_post(session, plan.id, post_id, phase, now=now)
        except store.CampaignError as exc:
            raise await _problem(db, args, "attach", str(exc)) from None
        first, last = plan.phases[phase] if phase else plan.span()
        where = f"phase {store.phase_label(phase)}" if phase else "all its phases"
        detail = (f"post {post.id} in campaign {plan.id} {plan.campaign.name}, {where}: fires only from {first} to "
                  f"{last} ({plan.campaign.timezone})") + ("" if changed else " (no change)")
        await _record(db, args, "attach", audit_store.OK, detail)
    print(detail)
    return 0


async def _detach(config: Config, args: argparse.Namespace) -> int:
    from scheduler.campaign import settings_of

    now = utcnow()
    async with open_database(config) as db:
        plan = await load_plan(db, args.campaign)
        post_id = await _post_ref(db, args.post)
        try:
            async with db.session() as session:
                post, changed = await store.detach_post(session, post_id, now=now, settings=settings_of(config),
                                                        campaign_id=plan.id)
        except store.CampaignError as exc:
            raise await _problem(db, args, "detach", str(exc)) from None
        detail = f"post {post.id} taken out of campaign {plan.id} {plan.campaign.name}" + (
            "" if changed else " (it was in no campaign)")
        await _record(db, args, "detach", audit_store.OK, detail)
    print(detail)
    return 0


async def _list(config: Config, args: argparse.Namespace) -> int:
    now = utcnow()
    async with open_database(config) as db:
        async with db.read_session() as session:
            plans = [await store.load_plan(session, c)
                     for c in await store.list_campaigns(session, include_removed=args.removed)]
        for plan in plans:
            c = plan.campaign
            today = plan.local_day(now)
            state = "removed" if c.removed_at else _where(plan, today)
            print(f"{c.id} {c.name}\t{c.title}\t{state}\t{_countdown(plan, today)}\t{_span(*plan.span())} "
                  f"({c.timezone})\t{await _targets_text(db, c)}")
        if not plans:
            print("(no campaigns)")
    return 0


async def _show(config: Config, args: argparse.Namespace) -> int:
    from scheduler.push import next_runs

    now = utcnow()
    async with open_database(config) as db:
        plan = await load_plan(db, args.campaign, include_removed=True)
        c = plan.campaign
        today = plan.local_day(now)
        async with db.read_session() as session:
            posts = await store.posts_of(session, plan.id)
            reminders = await store.reminders_of(session, plan.id)
            groups = await store.groups_of(session, c)
            figures = await store.summary(session, plan, today=today)
        state = f"removed {c.removed_at:%Y-%m-%d %H:%M} UTC" if c.removed_at else _where(plan, today)
        print(f"campaign {c.id} {c.name}: {c.title}  [{state}]" + (
            " (declared in the config file)" if c.created_by == store.CONFIG_MAKER else ""))
        print(f"timezone {c.timezone}; key date {c.key_name} {_day(c.key_date)}: {_countdown(plan, today)}")
        for phase, (first, last) in plan.phases.items():
            print(f"  {store.phase_label(phase)} ({phase})\t{_span(first, last)}")
        for name, day in plan.dates.items():
            print(f"  date {name}\t{_day(day)}")
        print(f"targets: {await _targets_text(db, c)} ({len(groups)} group(s) now)")
        print(f"owner: {c.owner or '-'}; ops: {', '.join(c.ops) or '-'}; reminders to: "
              f"{c.reminder_target or (config.campaign.reminder_target or '-') + ' (default)'}; days before: "
              f"{c.reminder_days if c.reminder_days is not None else ','.join(map(str, config.campaign.reminder_days_before)) + ' (default)'}")
        print(f"posts ({len(posts)}):")
        for post in posts:
            window = plan.window(post.phase) or (store.plan_epoch(), store.plan_epoch())
            live = post.enabled and post.removed_at is None and c.removed_at is None
            upcoming = next_runs(post, 1, now, window) if live else []
            nxt = f"{upcoming[0]:%Y-%m-%d %H:%M} UTC" if upcoming else "-"
            status = "removed" if post.removed_at else "on" if post.enabled else "paused"
            text = " ".join(post.content.split())[:50]
            print(f"  {post.id}\t{store.phase_label(post.phase) or '(all phases)'}\t{status}\t"
                  f"{post.schedule.describe(post.timezone)}\tnext {nxt}\t{text}")
        print(f"lotteries ({len(figures.lotteries)}):")
        for lot in figures.lotteries:
            print(f"  {lot.id}\t{lot.title}\t{lot.group}\t{lot.status}\t{lot.entrants} entrant(s), {lot.winners} winner(s)")
        print(f"reminders ({len(reminders)}):")
        for r in reminders:
            local = r.due_at.astimezone(plan.zone)
            where = f"{r.channel}:{r.target}" if r.channel else "-"
            print(f"  {r.milestone}\t{local:%Y-%m-%d %H:%M} {c.timezone}\t{where}\t{r.status}\tattempts {r.attempts}"
                  + (f"\t{r.reason}" if r.reason else ""))
    return 0


async def _summary(config: Config, args: argparse.Namespace) -> int:
    now = utcnow()
    async with open_database(config) as db:
        plan = await load_plan(db, args.campaign, include_removed=True)
        group = await resolve_group(db, args.group, args.channel) if args.group else None
        today = plan.local_day(now)
        async with db.read_session() as session:
            figures = await store.summary(session, plan, today=today, group_id=group.id if group else None)
    print(summary_lines(figures, group))
    return 0


def summary_lines(figures: store.Summary, group: Group | None = None) -> str:
    """The summary as `qunbot campaign summary` prints it."""
    plan, total = figures.plan, figures.total
    c = plan.campaign
    scope = f"group {group.channel}/{group.external_id}" if group else f"{figures.groups} group(s)"
    lines = [f"campaign {c.id} {c.name}: {c.title} — {scope}, as of {_day(figures.today)} ({c.timezone})",
             f"posts: {figures.posts}, runs: {figures.runs} ({figures.runs_skipped} skipped: missed or superseded)",
             f"deliveries: {total.sent} sent ({total.late} late), {total.failed} failed, {total.skipped} skipped, "
             f"{total.pending} pending"]
    for phase, part in figures.by_phase.items():
        lines.append(f"  {store.phase_label(phase) or '(no phase)'}: {part.sent} sent ({part.late} late), "
                     f"{part.failed} failed, {part.skipped} skipped, {part.pending} pending")
    lines.append(f"lotteries: {len(figures.lotteries)}, {figures.entrants} entries by {figures.unique_entrants} "
                 f"member(s), {figures.winners} winner(s)")
    for lot in figures.lotteries:
        lines.append(f"  {lot.id} {lot.title} ({lot.group}, {lot.status}): {lot.entrants} entrant(s), "
                     f"{lot.winners} winner(s)")
    before = figures.before
    lines.append(f"before ({_span(before.first, before.last)}, {before.days} days): {before.checkins} check-ins by "
                 f"{before.checkin_members} member(s), {before.checkins_per_day:.1f}/day; {before.active_members} "
                 f"active member(s), {before.messages} message(s)")
    during = figures.during
    if during is None:
        lines.append("during: not started")
    else:
        change = store.change_text(during.checkins_per_day, before.checkins_per_day)
        lines.append(f"during ({_span(during.first, during.last)}, {during.days} days): {during.checkins} check-ins by "
                     f"{during.checkin_members} member(s), {during.checkins_per_day:.1f}/day ({change} per day); "
                     f"{during.active_members} active member(s), {during.messages} message(s)")
    return "\n".join(lines)


async def _remove(config: Config, args: argparse.Namespace) -> int:
    now = utcnow()
    async with open_database(config) as db:
        plan = await load_plan(db, args.campaign)
        async with db.session() as session:
            posts = await store.remove_campaign(session, plan.id, now)
        detail = f"campaign {plan.id} {plan.campaign.name} removed" + (
            f" with its post(s) {', '.join(map(str, posts))}" if posts else "")
        if plan.campaign.created_by == store.CONFIG_MAKER:
            detail += " (declared in the config file: the next start-up applies the file again)"
        await _record(db, args, "remove", audit_store.OK, detail)
    print(detail)
    return 0


async def _lottery(config: Config, args: argparse.Namespace) -> int:
    async with open_database(config) as db:
        plan = await load_plan(db, args.campaign)
        try:
            async with db.session() as session:
                if args.lottery_command == "add":
                    done = await store.link_lottery(session, plan.id, args.lottery)
                else:
                    done = await store.unlink_lottery(session, plan.id, args.lottery)
        except store.CampaignError as exc:
            raise await _problem(db, args, f"lottery {args.lottery_command}", str(exc)) from None
        verb = "counted in" if args.lottery_command == "add" else "no longer counted in"
        detail = f"lottery {args.lottery} {verb} campaign {plan.id} {plan.campaign.name}" + ("" if done else " (no change)")
        await _record(db, args, f"lottery {args.lottery_command}", audit_store.OK, detail)
    print(detail)
    return 0


# -- posts of a campaign (qunbot push add --campaign) ----------------------------------------------------


async def campaign_post_fields(db: Database, campaign_ref: str, phase_text: str | None,
                               ) -> tuple[store.Plan, str | None]:
    """The campaign and phase a new post joins (bot.cli.push); CampaignError says what is wrong."""
    async with db.read_session() as session:
        campaign = await store.get_campaign(session, campaign_ref)
        if campaign is None:
            raise store.CampaignError("not_found", f"no live campaign {campaign_ref!r}", name=campaign_ref)
        plan = await store.load_plan(session, campaign)
    phase = store.parse_phase(phase_text) if phase_text else None
    store.check_phase(plan, phase)
    return plan, phase
