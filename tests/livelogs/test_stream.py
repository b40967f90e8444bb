"""The parser of Docker's log stream, fed in every possible split (pure)."""

from __future__ import annotations

import struct

from ccserver.livelogs.stream import MAX_LINE_BYTES, Line, LogStreamParser, parse_timestamp
from ccserver.livelogs.tail import LINE_SHARE, LogTail

T1 = b"2026-12-02T01:32:51.123456789Z"
T2 = b"2026-12-02T01:32:52.5Z"
NS1 = 1796175171 * 10**9 + 123456789
NS2 = 1796175172 * 10**9 + 500000000


def frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(payload)) + payload


STREAM = (
    frame(1, T1 + b" hello world\n")
    + frame(2, T1 + b" oops \xc3\xa9\n")
    + frame(1, T2 + b" no newline at the end")  # a message without its newline ends with its frame
    + frame(1, T2 + b" two\n" + T2 + b" lines\n")
    + frame(2, b"")
    + frame(2, T2 + b" last\r\n")
)
EXPECTED = [
    Line(NS1, "stdout", "hello world"),
    Line(NS1, "stderr", "oops é"),
    Line(NS2, "stdout", "no newline at the end"),
    Line(NS2, "stdout", "two"),
    Line(NS2, "stdout", "lines"),
    Line(NS2, "stderr", "last"),
]


def test_timestamps() -> None:
    assert parse_timestamp(T1) == NS1
    assert parse_timestamp(T2) == NS2
    assert parse_timestamp(b"2026-12-02T02:32:51.123456789+01:00") == NS1
    assert parse_timestamp(b"2026-12-02T01:32:51Z") == 1796175171 * 10**9
    assert parse_timestamp(b"not-a-time") is None
    assert parse_timestamp(b"2026-12-02T01:32:51.1X") is None


def test_whole_stream() -> None:
    parser = LogStreamParser()
    assert parser.feed(STREAM) + parser.end() == EXPECTED


def test_split_at_every_byte_boundary() -> None:
    for cut in range(len(STREAM) + 1):
        parser = LogStreamParser()
        lines = parser.feed(STREAM[:cut]) + parser.feed(STREAM[cut:]) + parser.end()
        assert lines == EXPECTED, cut


def test_split_into_single_bytes_and_at_two_boundaries() -> None:
    parser = LogStreamParser()
    lines = [line for i in range(len(STREAM)) for line in parser.feed(STREAM[i : i + 1])]
    assert lines + parser.end() == EXPECTED
    for first in range(0, len(STREAM), 7):
        for second in range(first, len(STREAM) + 1, 5):
            parser = LogStreamParser()
            parts = (STREAM[:first], STREAM[first:second], STREAM[second:])
            assert [line for p in parts for line in parser.feed(p)] + parser.end() == EXPECTED, (first, second)


def test_raw_stream_of_a_tty_container() -> None:
    data = T1 + b" one\n" + T2 + b" two\n"
    for cut in range(len(data) + 1):
        parser = LogStreamParser(multiplexed=False)
        lines = parser.feed(data[:cut]) + parser.feed(data[cut:]) + parser.end()
        assert lines == [Line(NS1, "stdout", "one"), Line(NS2, "stdout", "two")], cut


def test_a_line_without_end_is_bounded() -> None:
    parser = LogStreamParser(timestamps=False)
    for _ in range(100):
        assert parser.feed(frame(1, b"x" * 4096)) == []
    (line,) = parser.end()
    assert len(line.text) == MAX_LINE_BYTES


def test_tail_keeps_the_last_bytes_and_says_it_cut() -> None:
    tail = LogTail(200)  # and at most 12 lines
    for i in range(30):
        tail.add(Line(i * 10**9, "stdout", f"line {i:03d} " + "x" * 30))  # 40 bytes each
    assert tail.truncated and tail.size <= 200
    kept = [line.text[:8] for line in tail.lines()]
    assert kept == [f"line {i:03d}" for i in range(25, 30)]
    assert [line.text[:8] for line in tail.lines(since=27.0)] == ["line 028", "line 029"]
    assert [line.text[:8] for line in tail.lines(tail=1)] == ["line 029"]
    assert tail.lines(tail=0) == []
    small = LogTail(100)
    small.add(Line(1, "stdout", "short"))
    assert not small.truncated
    small.add(Line(2, "stderr", "y" * 500))
    assert small.truncated and small.size <= 100 and small.lines()[-1].text == "y" * 99


def test_tail_of_many_short_lines_is_bounded_in_lines_too() -> None:
    tail = LogTail(1600)
    for i in range(1000):
        tail.add(Line(i, "stdout", "."))
    assert len(tail) == 1600 // LINE_SHARE and tail.truncated
    assert tail.lines()[-1].time_ns == 999
