"""帮助 (/help): list the commands the caller may use, or explain one command."""

from __future__ import annotations

from bot.dispatcher import Context, Registry, normalize_command_word
from bot.events import Command, Reply


def setup(registry: Registry) -> None:
    @registry.command("帮助", "/help", "help", "菜单", description="查看我能做什么", usage="帮助 [命令]")
    async def show_help(event: Command, ctx: Context) -> Reply:
        role = await ctx.role()
        commands = ctx.runtime.registry.commands
        if event.args:
            word = event.args.split(" ")[0]
            spec = commands.get(normalize_command_word(word))
            if spec is None or spec.role > role:
                return Reply(ctx.templates.render("help.unknown", name=word))
            return Reply(ctx.templates.render("help.detail", name=spec.name, aliases=_aliases(spec.aliases),
                                              description=spec.description, usage=spec.usage or spec.name))
        lines = [ctx.templates.raw("help.header")]
        for spec in ctx.runtime.registry.unique_commands():
            if spec.role > role:
                continue
            lines.append(ctx.templates.render("help.line", name=spec.name, aliases=_aliases(spec.aliases),
                                              description=spec.description))
        return Reply("\n".join(lines))


def _aliases(aliases: tuple[str, ...]) -> str:
    slash = " / ".join(a for a in aliases if a.startswith("/"))
    return f"（{slash}）" if slash else ""
