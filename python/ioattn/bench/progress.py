"""A live progress line on stderr: tqdm when it is installed and stderr is a terminal, else a
plain counter (rewritten in place on a terminal; on a pipe or a log file, one line every
``every`` seconds and at the end, so logs stay short)."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class ProgressBar:
    """``bar(done, total, label)`` after each finished row; ``close()`` at the end."""

    def __init__(
        self, stream: TextIO | None = None, use_tqdm: bool | None = None, every: float = 30.0
    ) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = every
        self._last = 0.0
        self._tqdm: Any = None
        self._want_tqdm = self.tty if use_tqdm is None else use_tqdm
        self._width = 0
        self._start = time.monotonic()

    def _make_tqdm(self, total: int) -> Any:
        try:
            from tqdm import tqdm
        except ImportError:
            return None
        return tqdm(total=total, file=self.stream, dynamic_ncols=True, unit="cell")

    def __call__(self, done: int, total: int, label: str) -> None:
        if self._want_tqdm and self._tqdm is None:
            self._tqdm = self._make_tqdm(total)
            self._want_tqdm = self._tqdm is not None
        if self._tqdm is not None:
            self._tqdm.set_postfix_str(label, refresh=False)
            self._tqdm.update(done - self._tqdm.n)
            return
        elapsed = time.monotonic() - self._start
        text = f"[{done}/{total} {100 * done // max(total, 1)}% {elapsed:.0f}s] {label}"
        if self.tty:
            text = text[:159]
            self.stream.write("\r" + text.ljust(self._width))
            self._width = len(text)
        elif done == total or elapsed - self._last >= self.every or done == 1:
            self._last = elapsed
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
        elif self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()
