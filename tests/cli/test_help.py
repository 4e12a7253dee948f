"""Every option's --help says what it does and what happens when it is not given."""

import click
import pytest

from fmprune.cli import cli


def commands(group: click.Group, prefix: str = "fmprune"):
    for name, command in sorted(group.commands.items()):
        yield f"{prefix} {name}", command
        if isinstance(command, click.Group):
            yield from commands(command, f"{prefix} {name}")


def options():
    for path, command in commands(cli):
        for param in command.params:
            if isinstance(param, click.Option) and param.name not in ("help", "version"):
                yield pytest.param(param, id=f"{path} {param.opts[0]}")


def says_its_default(option: click.Option) -> bool:
    """Shown by click ([default: x], [required]), or said in the text (e.g. "default: all maps")."""
    if option.required or "default" in (option.help or "").lower():
        return True
    shown = option.show_default and option.default is not None
    return bool(shown and not (option.is_flag and not option.secondary_opts and option.default is False))


@pytest.mark.parametrize("option", list(options()))
def test_every_option_says_what_it_does_and_its_default(option):
    assert option.help and len(option.help.split()) >= 2, f"{option.opts[0]}: no help text"
    assert says_its_default(option), f"{option.opts[0]}: --help does not say the default"
