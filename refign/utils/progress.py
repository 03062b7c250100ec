"""Progress bars that read well both in a terminal and in a log file: tqdm's in-place redraws (``\\r``),
written into a file or a pipe (a cluster job's log), pile up on one line of many kilobytes, so outside a
terminal a bar prints a whole line, at most one every ``LINE_EVERY_S`` seconds, and a last one when it closes.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm

# a line every half minute: a 20-minute run logs about 40 lines per bar
LINE_EVERY_S = 30.0


class LineProgress(tqdm):
    """tqdm that prints whole lines: the first state, then at most one line every ``LINE_EVERY_S`` seconds
    (``set_postfix`` included), and the final state when it closes."""

    _last_line = float("-inf")

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        # tqdm's documented hook for another front end; close() sets ``disable`` first, then asks for the
        # final state (``msg=None``, and ends the line itself) or, for ``leave=False``, to clear it (``msg=""``)
        if self.disable:
            self.fp.write(str(self) + ("" if msg is None else "\n"))
            self.fp.flush()
            return False  # nothing drawn that close() must clear with a "\r"
        now = self._time()
        if now - self._last_line >= LINE_EVERY_S:
            self._last_line = now
            self.fp.write(str(self) + "\n")
            self.fp.flush()
        return True


def progress_bar(iterable: Iterable | None = None, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)`` in a terminal; a ``LineProgress`` when the bar's stream (``file``,
    standard error by default) is not one."""
    stream = kwargs.get("file") or sys.stderr
    if stream.isatty():
        return tqdm(iterable, **kwargs)
    # tqdm's own throttle at the same pace (``miniters=1``: no adaptive skipping), no unicode blocks
    return LineProgress(iterable, **{"mininterval": LINE_EVERY_S, "miniters": 1, "ascii": True, **kwargs})
