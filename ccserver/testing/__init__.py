"""Helpers for ccserver's own test suite and benchmarks (and for anyone testing against ccserver).

:mod:`ccserver.testing.daemon` runs the real ``twistd -n ccserver`` as a subprocess,
:mod:`ccserver.testing.ferretdb` a throw-away FerretDB server (the real MongoDB-protocol
database the MongoDB backend is tested against), :mod:`ccserver.testing.sampling` measures
latencies against a running daemon, and :mod:`ccserver.testing.fakes` stands in for the
cluster and the scheduler in tests of the web API.  The first three serve ``bench/`` too.
What only the test suite needs and no user could (the extra ``dockerd`` engines, which need
root) lives under ``tests/``.
"""
