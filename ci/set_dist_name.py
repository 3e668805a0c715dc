#!/usr/bin/env python3
"""Rename the distribution in a pyproject.toml for one CUDA major: ioattn -> ioattn-cu<major>.

The wheels of each CUDA major are separate distributions of the one ``ioattn`` module (README
"Install"). PEP 621 keeps ``name`` static, so the wheel builders (noxfile.py ``wheel`` on an
unpacked sdist; cibuildwheel's before-build on its copy of the project) rewrite it before the
build. Idempotent; refuses a pyproject.toml that already names another CUDA major.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

NAME = re.compile(r'^name = "ioattn(-cu\d+)?"$', re.MULTILINE)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cuda", required=True, help="CUDA version of the build, e.g. 12.9 or 13.0")
    ap.add_argument("pyproject", nargs="?", type=Path, default=Path("pyproject.toml"))
    args = ap.parse_args()
    major = args.cuda.split(".")[0]
    if not major.isdigit():
        ap.error(f"--cuda {args.cuda!r}: expected MAJOR or MAJOR.MINOR")
    text = args.pyproject.read_text()
    match = NAME.search(text)
    if match is None:
        raise SystemExit(f'{args.pyproject}: no `name = "ioattn"` line in [project]')
    wanted = f"-cu{major}"
    if match.group(1) not in (None, wanted):
        raise SystemExit(f"{args.pyproject}: already renamed to ioattn{match.group(1)}")
    args.pyproject.write_text(NAME.sub(f'name = "ioattn{wanted}"', text, count=1))
    print(f"{args.pyproject}: distribution ioattn{wanted}")


if __name__ == "__main__":
    main()
