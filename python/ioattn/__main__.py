"""``python -m ioattn``: see :mod:`ioattn._cli`."""

import sys

from ioattn._cli import main

if __name__ == "__main__":
    sys.exit(main())
