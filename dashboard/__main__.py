"""``python -m histoxai.dashboard [--params FILE] [--set KEY=VALUE] ...`` = ``histoxai dashboard ...``."""

import sys

from histoxai.cli import main

if __name__ == "__main__":
    sys.exit(main(["dashboard", *sys.argv[1:]]))
