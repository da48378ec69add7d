"""`llmctl` entry point: build the click group from plugins, turn user errors into one line + exit 2."""

from __future__ import annotations

import logging
import os
import sys

import click

from llmctl.core import __version__
from llmctl.core.errors import UserError
from llmctl.core.plugins import get_bus


class LlmctlGroup(click.Group):
    """A click group that reports UserError as `error: ...` with exit code 2 instead of a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(e.exit_code)


def build_cli() -> click.Group:
    @click.group(cls=LlmctlGroup, context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(__version__, prog_name="llmctl")
    def cli():
        """llmctl: train small LLMs end to end, from a laptop CPU to many GPUs/NPUs.

        \b
        Example:
          llmctl quickstart            # the whole pipeline at toy scale on CPU
          llmctl plugins               # what is installed and what it registered
        """

    get_bus().commands(cli)
    return cli


def main(argv: list[str] | None = None) -> None:
    try:
        cli = build_cli()
    except UserError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    try:
        cli.main(args=argv, prog_name="llmctl")
    except SystemExit as e:
        if e.code in (0, None) and is_torchrun_worker():
            leave_finished_worker()
        raise


def is_torchrun_worker() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ


def leave_finished_worker() -> None:
    """A torchrun worker whose command succeeded leaves without the interpreter's teardown. By then its
    files are written (atomically), its logs closed and its process groups destroyed; what teardown would
    still do is free C++ objects in no set order, and gloo's worker threads can abort a finished process
    there ("terminate called without an active exception", exit -6), which torchrun reports as a failed run.
    Output streams and logging handlers are flushed first."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
