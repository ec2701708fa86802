"""帮助 (/help): list the commands the bot understands."""

from __future__ import annotations

from bot.dispatcher import Context, Registry
from bot.events import Command, Reply


def setup(registry: Registry) -> None:
    @registry.command("帮助", "/help", "help", "菜单", description="查看我能做什么")
    async def show_help(event: Command, ctx: Context) -> Reply:
        lines = [ctx.templates.raw("help.header")]
        for spec in ctx.runtime.registry.unique_commands():
            aliases = " / ".join(a for a in spec.aliases if a.startswith("/"))
            suffix = f"（{aliases}）" if aliases else ""
            lines.append(ctx.templates.render("help.line", name=spec.name, aliases=suffix,
                                              description=spec.description))
        return Reply("\n".join(lines))
