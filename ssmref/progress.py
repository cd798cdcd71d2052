"""Progress of long commands on stderr, throttled: ``label: 3/8 (37%), 41 s, about 70 s left``.

Long commands (``adapt``, ``vectors --certify``, ``evaluate``) report where they are so that a
user does not wait minutes in silence; the lines go to stderr (stdout keeps the results) and at
most one every ``every`` seconds (default 5), the first after ``every`` seconds, so a short run
prints none.
"""

import sys
import time


class Progress:
    """``Progress(label, total)``; call :meth:`update` with the number of units done.

    ``stream``: where the lines go (default ``sys.stderr``, looked up at each line so that a
    test's captured stderr receives them); ``every``: seconds between lines (0: every update;
    default :attr:`EVERY`)."""

    EVERY = 5.0

    def __init__(self, label, total, *, every=None, stream=None, clock=time.monotonic):
        self.label, self.total = label, max(int(total), 1)
        self.every = float(self.EVERY if every is None else every)
        self.stream, self.clock = stream, clock
        self.start = self.last = clock()
        self.lines = 0

    def update(self, done, note=""):
        """Print ``label: done/total (p%), elapsed, about N s left`` if ``every`` seconds have
        passed since the last line (or the start); returns whether a line was printed."""
        now = self.clock()
        if now - self.last < self.every:
            return False
        self.last = now
        elapsed = now - self.start
        line = f"{self.label}: {done}/{self.total} ({100 * done / self.total:.0f}%), {elapsed:.0f} s"
        if 0 < done < self.total:
            line += f", about {elapsed * (self.total - done) / done:.0f} s left"
        if note:
            line += f" ({note})"
        print(line, file=self.stream or sys.stderr, flush=True)
        self.lines += 1
        return True
