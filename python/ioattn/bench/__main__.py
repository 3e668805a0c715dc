"""``python -m ioattn.bench``: the same as ``python -m ioattn bench``."""

import sys

from ioattn.bench import main

if __name__ == "__main__":
    sys.exit(main())
