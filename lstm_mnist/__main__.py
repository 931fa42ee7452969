import sys

from .cli import main
from .tools import cli as tools

# Guarded: worker processes started with "spawn" import this module again.
if __name__ == "__main__":
    sys.exit(main(make_parser=tools.parser))  # the harness's commands and the tools' (tools/cli.py)
