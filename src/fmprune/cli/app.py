"""The ``fmprune`` command group and its entry point, which turns every user error into one line."""

from __future__ import annotations

import sys

import click

from ..atomic import WRITE_ERRORS, write_error_text
from ..errors import FmpruneError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fmprune")
def cli() -> None:
    """fmprune: feature-map pruning of convolutional networks.

    Typical use: `fmprune train`, then `fmprune prune --criterion taylor --normalize l2`.
    """


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit status 2."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted: what was written so far is kept; rerun the same command to resume (a pruning run "
                   "that retrains continues from its last saved step, others start over)", err=True)
        sys.exit(130)
    except click.ClickException as e:   # bad flags too: one line, and where the help is
        ctx = getattr(e, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        click.echo(f"fmprune: error: {e.format_message()}{hint}", err=True)
        sys.exit(e.exit_code)
    except FmpruneError as e:
        click.echo(f"fmprune: error: {e}", err=True)
        sys.exit(2)
    except OSError as e:
        if e.errno not in WRITE_ERRORS:
            raise
        click.echo(f"fmprune: error: {write_error_text(e)}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted: what was written so far is kept", err=True)
        sys.exit(130)
