"""``python -m nas.cli COMMAND ...`` (how ``search --workers N`` starts its workers)."""
import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
