"""The last bytes of one container's output, as lines (pure)."""

from __future__ import annotations

from collections import deque
from typing import Any

from ccserver.livelogs.stream import Line

#: a tail of ``limit`` bytes keeps at most ``limit // LINE_SHARE`` lines: each kept line costs
#: an object besides its text, so that many one-character lines cannot cost much more memory
#: than ``limit`` suggests
LINE_SHARE = 16


class LogTail:
    """Lines, oldest first, holding at most ``limit`` bytes (text and newline of each line)
    and ``limit // LINE_SHARE`` lines; older lines are dropped and :attr:`truncated` says so.
    A single line longer than the limit keeps its last ``limit - 1`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.max_lines = max(1, limit // LINE_SHARE)
        self._lines: deque[tuple[Line, int]] = deque()
        self.size = 0
        #: output was dropped (or the engine gave only its last lines)
        self.truncated = False
        #: the time of the newest line, for ``since=`` when a connection is opened again
        self.last_ns = 0

    def add(self, line: Line) -> None:
        size = line.size()
        if size > self.limit:
            data = line.text.encode("utf-8", "replace")[-(self.limit - 1) :]
            line = Line(line.time_ns, line.stream, data.decode("utf-8", "ignore"))
            size = line.size()
            self.truncated = True
        self._lines.append((line, size))
        self.size += size
        while self.size > self.limit or len(self._lines) > self.max_lines:
            _, dropped = self._lines.popleft()
            self.size -= dropped
            self.truncated = True
        if line.time_ns > self.last_ns:
            self.last_ns = line.time_ns

    def __len__(self) -> int:
        return len(self._lines)

    def lines(self, since: float | None = None, tail: int | None = None) -> list[Line]:
        """The kept lines with a time after ``since`` (epoch seconds), the last ``tail`` of them."""
        found = [line for line, _ in self._lines]
        if since is not None:
            found = [line for line in found if line.time > since]
        if tail is not None:
            found = found[-tail:] if tail > 0 else []
        return found

    def to_document(self) -> dict[str, Any]:
        """What is stored in the container's document when it ended (``log_tail``)."""
        return {
            "truncated": self.truncated,
            "lines": [{"time": line.time, "stream": line.stream, "text": line.text} for line, _ in self._lines],
        }


def select(lines: list[dict[str, Any]], since: float | None, tail: int | None) -> list[dict[str, Any]]:
    """:meth:`LogTail.lines` for lines stored as documents."""
    if since is not None:
        lines = [line for line in lines if float(line.get("time") or 0) > since]
    if tail is not None:
        lines = lines[-tail:] if tail > 0 else []
    return lines
