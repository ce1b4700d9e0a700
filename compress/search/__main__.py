"""``python -m compress.search ...``: the search command line (see :mod:`compress.search.cli`)."""

import argparse
import sys

from .cli import DESCRIPTION, add_arguments, main

parser = argparse.ArgumentParser(prog="python -m compress.search", description=DESCRIPTION)
add_arguments(parser)
sys.exit(main(parser.parse_args()))
