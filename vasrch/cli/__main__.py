"""`python -m vasrch.cli`: the `vasrch` command."""

import sys

from vasrch.cli import main

if __name__ == "__main__":
    sys.exit(main())
