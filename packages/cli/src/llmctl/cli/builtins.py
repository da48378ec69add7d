"""llmctl-cli's own plugin: `llmctl quickstart`, which strings the other plugins' commands together, and
`llmctl doctor`, which says what the install has."""

from __future__ import annotations

from llmctl.core.plugins import hookimpl


@hookimpl
def register_commands(cli):
    from .doctor import doctor_command
    from .quickstart import quickstart_command

    cli.add_command(quickstart_command)
    cli.add_command(doctor_command)
