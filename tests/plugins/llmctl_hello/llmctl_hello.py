"""A third-party llmctl plugin: one command and one template, registered through the public hooks."""

import click
from llmctl.core.plugins import hookimpl


@click.command("hello")
@click.option("--name", default="world")
def hello_command(name: str) -> None:
    """Say hello from a third-party plugin.

    \b
    Example:
      llmctl hello --name you
    """
    click.echo(f"hello, {name}, from a third-party plugin")


@hookimpl
def register_commands(cli):
    cli.add_command(hello_command)


@hookimpl
def register_templates(register):
    register("hello", "{prompt}")
