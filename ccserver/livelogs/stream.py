"""Docker's log stream, parsed incrementally (pure: bytes in, lines out).

A container without a TTY answers ``GET /containers/{id}/logs`` with a *multiplexed* stream:
frames of an 8-byte header (stream byte: 1 stdout, 2 stderr; three zero bytes; the payload
size, 4 bytes big-endian) and the payload.  With ``timestamps=1`` every log message of the
payload starts with its RFC 3339 time (nanoseconds) and a space.  A message without its
newline (the last output of a program, or a part of a very long line: the engine cuts lines
at 16 KiB) ends with its frame.  Chunks from the network may split a frame anywhere, even
inside the header; :class:`LogStreamParser` keeps what it has seen and emits complete lines.
A container with a TTY sends the raw text (``multiplexed=False``): one stream, stdout.
"""

from __future__ import annotations

import calendar
import struct
from dataclasses import dataclass

STREAMS = {0: "stdout", 1: "stdout", 2: "stderr"}
HEADER = 8
#: a line longer than this is cut (and the rest of it dropped), so that a program writing
#: without newlines cannot make the parser hold more than this
MAX_LINE_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Line:
    """One line of output: ``time_ns`` from the engine (0 when it gave none), the stream
    and the text without its newline."""

    time_ns: int
    stream: str
    text: str

    @property
    def time(self) -> float:
        return self.time_ns / 1e9

    def size(self) -> int:
        """What the line counts against a tail's byte budget: its text and newline."""
        return len(self.text.encode("utf-8", "replace")) + 1


def parse_timestamp(stamp: bytes) -> int | None:
    """``2026-12-02T01:32:51.123456789Z`` (or with ``+HH:MM``) as nanoseconds since the epoch."""
    try:
        text = stamp.decode("ascii")
        date, clock = text[:10], text[11:19]
        if text[10] != "T" or len(clock) != 8:
            return None
        rest = text[19:]
        fraction = ""
        if rest.startswith("."):
            digits = len(rest) - len(rest[1:].lstrip("0123456789"))
            fraction, rest = rest[1:digits], rest[digits:]
        offset = 0
        if rest in ("Z", "z"):
            pass
        elif len(rest) == 6 and rest[0] in "+-" and rest[3] == ":":
            offset = (int(rest[1:3]) * 3600 + int(rest[4:6]) * 60) * (1 if rest[0] == "+" else -1)
        else:
            return None
        year, month, day = (int(p) for p in date.split("-"))
        hour, minute, second = (int(p) for p in clock.split(":"))
        seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)) - offset
        nanos = int((fraction + "000000000")[:9]) if fraction else 0
        return seconds * 1_000_000_000 + nanos
    except (ValueError, IndexError):
        return None


class LogStreamParser:
    """Feed it the bytes of a log stream as they come (:meth:`feed`); it returns the lines
    completed by them.  :meth:`end` returns what was left unterminated."""

    def __init__(self, multiplexed: bool = True, timestamps: bool = True) -> None:
        self.multiplexed = multiplexed
        self.timestamps = timestamps
        self._header = b""
        #: payload bytes still to come in the current frame
        self._left = 0
        self._stream = "stdout"
        #: per stream: the bytes of the line under way
        self._partial: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        self._cut: dict[str, bool] = {"stdout": False, "stderr": False}

    def feed(self, data: bytes) -> list[Line]:
        out: list[Line] = []
        if not self.multiplexed:
            self._payload(data, out)
            return out
        view = memoryview(data)
        while view:
            if self._left == 0:
                need = HEADER - len(self._header)
                self._header += bytes(view[:need])
                view = view[need:]
                if len(self._header) < HEADER:
                    break
                kind, size = struct.unpack(">BxxxL", self._header)
                self._header = b""
                self._stream = STREAMS.get(kind, "stdout")
                self._left = size
                if size == 0:
                    continue
            take = min(self._left, len(view))
            self._payload(bytes(view[:take]), out)
            view = view[take:]
            self._left -= take
            if self._left == 0 and self.timestamps:
                # a message without its newline ends with its frame (the next one starts
                # with a time of its own)
                self._flush(self._stream, out)
        return out

    def end(self) -> list[Line]:
        out: list[Line] = []
        for stream in ("stdout", "stderr"):
            self._flush(stream, out)
        return out

    def _payload(self, data: bytes, out: list[Line]) -> None:
        stream = self._stream
        partial = self._partial[stream]
        start = 0
        while True:
            newline = data.find(b"\n", start)
            if newline < 0:
                self._append(stream, data[start:])
                return
            self._append(stream, data[start:newline])
            out.append(self._line(stream, bytes(partial)))
            partial.clear()
            self._cut[stream] = False
            start = newline + 1

    def _append(self, stream: str, data: bytes) -> None:
        partial = self._partial[stream]
        room = MAX_LINE_BYTES - len(partial)
        if len(data) > room:
            data = data[: max(room, 0)]
            self._cut[stream] = True
        partial += data

    def _flush(self, stream: str, out: list[Line]) -> None:
        partial = self._partial[stream]
        if partial:
            out.append(self._line(stream, bytes(partial)))
            partial.clear()
            self._cut[stream] = False

    def _line(self, stream: str, raw: bytes) -> Line:
        time_ns = 0
        if self.timestamps:
            stamp, space, text = raw.partition(b" ")
            parsed = parse_timestamp(stamp) if space else None
            if parsed is not None:
                time_ns, raw = parsed, text
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        return Line(time_ns, stream, raw.decode("utf-8", "replace"))
