"""``python -m noodlecore.database``: the noodlecore-db command (see noodlecore.database.cli)."""

import sys

from .cli.main import main

if __name__ == "__main__":
    sys.exit(main())
