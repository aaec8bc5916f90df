"""Entry point of the `nanogpt` command."""

from __future__ import annotations

import sys

import click

from nanogpt_cli.check import check_command
from nanogpt_cli.compare import compare_command
from nanogpt_cli.components import components_command
from nanogpt_cli.data import data_group
from nanogpt_cli.diff import diff_command
from nanogpt_cli.errors import EXIT_INTERRUPTED, Invocation, report_exception
from nanogpt_cli.eval import eval_command
from nanogpt_cli.experiment import experiment_command
from nanogpt_cli.hint import hint_command
from nanogpt_cli.init import init_command
from nanogpt_cli.inspect import inspect_command
from nanogpt_cli.interop import export_group, import_group, pretrained_compare_command
from nanogpt_cli.reset import reset_command
from nanogpt_cli.sample import sample_command
from nanogpt_cli.show import show_command
from nanogpt_cli.status import status_command
from nanogpt_cli.tokenizer import tokenizer_group
from nanogpt_cli.train import train_command


class NanoGPTGroup(click.Group):
    """A click group that turns every failure into one clear line and an exit code (traceback behind --debug)."""

    def main(self, args=None, *rest, **kwargs):
        kwargs["standalone_mode"] = False  # we print errors ourselves
        argv = list(sys.argv[1:] if args is None else args)
        invocation = Invocation(argv)  # filled in by the --use/--debug options as click parses them
        kwargs["obj"] = invocation
        try:
            result = super().main(argv, *rest, **kwargs)
        except click.ClickException as exc:  # bad flags: click's own one-line usage error
            exc.show()
            sys.exit(exc.exit_code)
        except click.exceptions.Abort as exc:
            if isinstance(exc.__context__, KeyboardInterrupt):  # click turns Ctrl-C into Abort: keep the shell's 130
                click.echo("Interrupted.", err=True)
                sys.exit(EXIT_INTERRUPTED)
            click.echo("Aborted.", err=True)
            sys.exit(1)
        # Not standalone, click raises no SystemExit of its own: one that escapes a command is code (a plugin, a
        # component) calling sys.exit(), a failure to report, not an exit code to pass on.
        except (Exception, KeyboardInterrupt, SystemExit) as exc:
            sys.exit(report_exception(exc, invocation))
        sys.exit(result if isinstance(result, int) else 0)


@click.group(cls=NanoGPTGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="nanogpt")
def cli() -> None:
    """nanogpt: a small, exact GPT whose every component is a plugin you can rewrite yourself.

    Start with `nanogpt train` (trains a small GPT on the built-in corpus) or `nanogpt components`; to write your
    own, `nanogpt init` makes a workspace of skeletons (`cd my-gpt`, then `nanogpt status`).
    """


cli.add_command(components_command)
cli.add_command(experiment_command)
cli.add_command(import_group)
cli.add_command(export_group)
cli.add_command(pretrained_compare_command)
cli.add_command(compare_command)
cli.add_command(train_command)
cli.add_command(sample_command)
cli.add_command(eval_command)
cli.add_command(inspect_command)
cli.add_command(data_group)
cli.add_command(tokenizer_group)
cli.add_command(init_command)
cli.add_command(reset_command)
cli.add_command(status_command)
cli.add_command(check_command)
cli.add_command(hint_command)
cli.add_command(show_command)
cli.add_command(diff_command)


if __name__ == "__main__":
    cli()
