"""The ``svsicc`` command line: argparse lives here and nowhere else."""
