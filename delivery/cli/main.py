"""The `delivery` command group.

Subcommands live one group per module and are imported only when invoked, so that
`delivery --help` stays fast and a command's dependencies load only when it runs.
"""

from __future__ import annotations

import importlib

import click

__all__ = ["main"]

# command name -> "module:attribute" of the click command or group.
COMMANDS: dict[str, str] = {
    "serve": "delivery.cli.serve:serve",
    "eval": "delivery.cli.eval:eval_command",
    "get": "delivery.cli.objects:get_command",
    "create": "delivery.cli.objects:create_command",
    "update": "delivery.cli.objects:update_command",
    "delete": "delivery.cli.objects:delete_command",
    "query": "delivery.cli.objects:query_command",
    "harness": "delivery.cli.harness:harness",
    "send": "delivery.cli.send:send_command",
    "queue": "delivery.cli.queue:queue",
    "explain": "delivery.cli.explain:explain_command",
}


class LazyGroup(click.Group):
    """A click group that imports each subcommand's module on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        command = getattr(importlib.import_module(module_name), attribute)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="delivery")
def main() -> None:
    """Outbound SMTP delivery engine: strategies, STARTTLS/DANE/MTA-STS, JMAP management."""
