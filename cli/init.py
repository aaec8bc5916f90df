"""`nanogpt init [DIR]`: a workspace of your own, anywhere, for nanogpt installed the way Python tools are.

    nanogpt init            # ./my-gpt: the skeletons, a README on the loop, nanogpt.toml
    nanogpt init ~/gpt      # anywhere else
    cd my-gpt && nanogpt status

Every `nanogpt` command run in the folder (or below it) then uses its files as the `student` set.
"""

from __future__ import annotations

import click

from nanogpt_cli.errors import debug_option
from nanogpt_core.files import display_path
from nanogpt_core.learn.workspace import DEFAULT_WORKSPACE, init_workspace


@click.command("init")
@click.argument("directory", required=False, default=DEFAULT_WORKSPACE, metavar="[DIR]")
@debug_option
def init_command(directory: str) -> None:
    """Create a learner workspace in DIR (default ./my-gpt): one skeleton per component, a README, nanogpt.toml.

    Inside it (or any folder below it) every nanogpt command uses those files as the `student` set. It never
    overwrites a file: an existing workspace, or a folder that already has one of its files, is refused.
    """
    result = init_workspace(directory)
    where = display_path(result.directory)
    components = [p.name for p in result.written if p.suffix == ".py"]
    click.echo(f"Created a nanogpt workspace in {where}: {len(components)} component skeletons "
               f"({', '.join(components)}), README.md and nanogpt.toml.")
    click.echo("Every nanogpt command run in that folder uses your files there as the `student` set. Next:")
    if where != ".":
        click.echo(f"  cd {where}")
    click.echo("  nanogpt status")
