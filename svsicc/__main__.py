"""``python -m svsicc``: the command line."""

from svsicc.cli.main import run

run()
