"""`python -m llmctl.core.train --config ...`: the pretrain command without the CLI package (the supervisor
launches its child this way, since core never depends on llmctl-cli)."""

from __future__ import annotations

import sys

import click

from ..commands.pretrain import pretrain_command
from ..errors import UserError


def main() -> None:
    try:
        code = pretrain_command.main(prog_name="llmctl pretrain", standalone_mode=False)
    except UserError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
