"""The `nanogpt` group's error handling: exit codes and one-line messages for every kind of failure."""

from __future__ import annotations

import click
from click.testing import CliRunner

from nanogpt_cli.main import NanoGPTGroup
from nanogpt_core.errors import ConfigError


def make_group() -> click.Group:
    @click.group(cls=NanoGPTGroup)
    def group() -> None:
        pass

    @group.command()
    def interrupted() -> None:
        raise KeyboardInterrupt  # click turns this into Abort; the shell convention is 130

    @group.command()
    def aborted() -> None:
        raise click.Abort()

    @group.command()
    def user_error() -> None:
        raise ConfigError("depth must be a positive integer, got 0; try --depth 4.")

    @group.command()
    def bug() -> None:
        raise RuntimeError("something broke")

    return group


def test_ctrl_c_in_any_command_exits_130():
    result = CliRunner().invoke(make_group(), ["interrupted"])
    assert result.exit_code == 130 and "Interrupted." in result.output


def test_a_plain_abort_exits_1():
    result = CliRunner().invoke(make_group(), ["aborted"])
    assert result.exit_code == 1 and "Aborted." in result.output


def test_a_user_error_is_one_line_and_exit_2():
    result = CliRunner().invoke(make_group(), ["user-error"])
    assert result.exit_code == 2
    assert result.output.strip() == "Error: depth must be a positive integer, got 0; try --depth 4."


def test_an_unexpected_error_is_one_line_with_the_debug_hint():
    result = CliRunner().invoke(make_group(), ["bug"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: RuntimeError: something broke (run again with --debug for the traceback)"
    ]
