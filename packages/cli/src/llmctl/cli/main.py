"""`llmctl` entry point: build the click group from plugins, turn user errors into one line + exit 2."""

from __future__ import annotations

import io
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
    if is_torchrun_worker():
        quiet_other_ranks()
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


class _RankPrefixed(io.TextIOBase):
    """A text stream that writes each line to `stream` prefixed with `[rank N] `."""

    def __init__(self, stream, rank: str):
        self.stream, self.prefix, self.at_line_start = stream, f"[rank {rank}] ", True

    @property
    def encoding(self):
        return self.stream.encoding

    @property
    def errors(self):
        return self.stream.errors

    def write(self, text: str) -> int:
        if not isinstance(text, str):  # a text stream (click tells binary streams by this)
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        for piece in text.splitlines(keepends=True):
            if self.at_line_start:
                self.stream.write(self.prefix)
            self.stream.write(piece)
            self.at_line_start = piece.endswith("\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def quiet_other_ranks() -> None:
    """Under torchrun the rank that logs (global rank 0) prints the command's output once: the run's summary
    lines (`done: ...`, `wrote ...`) and its errors. Every other rank prints only what goes to stderr
    (errors, tracebacks, warnings), each line prefixed with its rank so a failure names where it happened."""
    rank = os.environ.get("RANK", "0")
    if rank == "0" or isinstance(sys.stderr, _RankPrefixed):
        return
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (this process's stdout from here on)
    sys.stderr = _RankPrefixed(sys.stderr, rank)


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
