from nanogpt_cli.main import cli

cli(prog_name="nanogpt")
