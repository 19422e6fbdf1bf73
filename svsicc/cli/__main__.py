"""``python -m svsicc.cli``: the command line."""

from svsicc.cli.main import run

run()
