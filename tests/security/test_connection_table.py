"""The pure parts of the connection limits: the budget under an open-file limit and the
choice of the connection that gives way (the real-socket tests are in test_connections.py)."""

from __future__ import annotations

from ccserver.logs import printable
from ccserver.web.connections import Budget, ConnectionTable, budget, files_for


def table(
    cap: int = 3, ceiling: int = 5, per_client: int = 10, busy: set[str] | None = None, exempt: set[str] | None = None
) -> ConnectionTable[str]:
    busy_set = busy if busy is not None else set()
    return ConnectionTable(Budget(cap, ceiling, cap), per_client, busy_set.__contains__, (exempt or set()).__contains__)


def test_budget_stays_below_the_open_file_limit() -> None:
    assert budget(100, 16) == Budget(1, 2, 100)  # a tiny limit still admits one
    for files in (64, 128, 1024, 4096, 65536):
        b = budget(100_000, files)
        assert b.cap < b.ceiling < files
        assert files - b.ceiling >= 48  # room for the store, the log, Docker, the pools
        assert b.lowered
    assert budget(50, 1 << 20) == Budget(50, budget(50, 1 << 20).ceiling, 50)
    assert not budget(1024, files_for(1024)).lowered
    assert budget(1024, files_for(1024) - 1).lowered
    assert budget(1024, None).cap == 1024


def test_under_the_cap_nobody_gives_way() -> None:
    t = table()
    for name in "ab":
        assert t.admit("h") == []
        t.add(name, "h")


def test_at_the_cap_the_longest_waiting_idle_connection_gives_way() -> None:
    busy = {"a"}
    t = table(busy=busy)
    for name in "abc":
        t.add(name, "h")
    t.ready("b")  # b answered a request: now the last in line
    assert t.admit("h") == ["c"]  # a is busy, c has waited longest since it became ready


def test_busy_everywhere_means_refusal() -> None:
    t = table(busy={"a", "b", "c"})
    for name in "abc":
        t.add(name, "h")
    assert t.admit("h") is None


def test_per_client_cap_takes_from_that_client_only() -> None:
    t = table(cap=10, per_client=2)
    t.add("x1", "attacker")
    t.add("n1", "normal")
    t.add("x2", "attacker")
    assert t.admit("attacker") == ["x1"]
    assert t.admit("normal") == []


def test_trusted_proxy_is_exempt_from_the_per_client_cap() -> None:
    t = table(cap=10, per_client=1, exempt={"proxy"})
    t.add("p1", "proxy")
    assert t.admit("proxy") == []


def test_draining_connections_count_against_the_ceiling_and_give_way_first() -> None:
    t = table(cap=3, ceiling=4)
    for name in "abcd":
        t.add(name, "h")
        if name in "ac":
            t.closing(name)  # answered 413, draining: no longer in the cap
    assert t.live() == 2 and len(t) == 4
    # below the cap, at the ceiling: the oldest draining connection gives way
    assert t.admit("h") == ["a"]
    t.remove("a")
    assert len(t) == 3 and "a" not in list(t)


def test_remove_forgets_the_host() -> None:
    t = table(per_client=1)
    t.add("a", "h")
    t.remove("a")
    assert t.live("h") == 0
    assert t.admit("h") == []


def test_printable_escapes_what_could_forge_a_log_line() -> None:
    assert printable("a\nb\r\x1b[2J\x00\x7f\x85\u2028\u202e\\") == "a\\nb\\r\\x1b[2J\\x00\\x7f\\x85\\u2028\\u202e\\\\"
    assert printable(b"caf\xe9\n") == "caf\xe9\\n"
    assert printable("ünïcode stays") == "ünïcode stays"
