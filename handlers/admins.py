"""管理员 (/admins): list a group's admins; group and bot admins add or remove the ones the bot keeps."""

from __future__ import annotations

from bot.dispatcher import Context, Registry, UsageError
from bot.events import Command, Reply
from bot.permissions import Role
from storage import admins as admin_store
from storage import groups as group_store

ADD_WORDS = {"添加", "增加", "设置", "add"}
REMOVE_WORDS = {"移除", "删除", "取消", "remove", "del"}


def setup(registry: Registry) -> None:
    @registry.command("管理员", "/admins", description="查看本群管理员", usage="管理员 [添加|移除 @成员]",
                      role=Role.MEMBER, audited=False)
    async def admins(event: Command, ctx: Context) -> Reply:
        words = event.args.split(" ") if event.args else []
        if not words:
            return Reply(await render_admin_list(ctx))
        action, targets = words[0].lower(), words[1:]
        if action not in ADD_WORDS | REMOVE_WORDS or not targets:
            raise UsageError("")
        # Changing admins is an admin action: checked and audited like one.
        return await _change(event, ctx, add=action in ADD_WORDS, targets=targets)


async def render_admin_list(ctx: Context) -> str:
    t = ctx.templates
    assert ctx.group_row is not None
    async with ctx.db.session() as session:
        rows = await admin_store.list_admins(session, ctx.group_row.id)  # type: ignore[arg-type]
    if not rows:
        return t.raw("admin.list_empty")
    lines = [t.raw("admin.list_header")]
    seen: set[int] = set()
    for member, row in rows:
        if member.id in seen:
            continue
        seen.add(member.id)  # type: ignore[arg-type]
        source = f"source_{row.source}_{row.detail}" if row.source == admin_store.PLATFORM else "source_manual"
        lines.append(t.render("admin.list_line", name=member.name or member.external_id, source=t.raw(f"admin.{source}")))
    return "\n".join(lines)


async def _change(event: Command, ctx: Context, *, add: bool, targets: list[str]) -> Reply:
    from storage import audit as audit_store

    t = ctx.templates
    role = await ctx.role()
    command = f"管理员 {'添加' if add else '移除'}"
    if role < Role.GROUP_ADMIN:
        text = t.render("command.refused", name=command, role=t.raw("roles.group_admin"))
        result, detail = audit_store.REFUSED, f"caller is {role.label}"
    else:
        assert ctx.group_row is not None
        lines = []
        async with ctx.db.session() as session:
            for who in targets:
                member = await group_store.find_member_in_group(session, ctx.group_row, who)
                if member is None:
                    lines.append(t.render("admin.unknown_member", who=who.lstrip("@")))
                    continue
                name = member.name or member.external_id
                if add:
                    done = await admin_store.add_admin(session, ctx.group_row.id, member.id,  # type: ignore[arg-type]
                                                       detail=event.sender.user)
                    lines.append(t.render("admin.added" if done else "admin.already", name=name))
                else:
                    done = await admin_store.remove_admin(session, ctx.group_row.id, member.id)  # type: ignore[arg-type]
                    lines.append(t.render("admin.removed" if done else "admin.not_admin", name=name))
        text, result, detail = "\n".join(lines), audit_store.OK, "\n".join(lines)
    async with ctx.db.session() as session:
        await audit_store.record(session, source="chat", channel=event.channel, group=ctx.group_row.external_id
                                 if ctx.group_row else "", actor=event.sender.user, command=command,
                                 args=" ".join(targets), result=result, detail=detail, at=event.at)
    return Reply(text)
