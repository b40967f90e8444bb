"""Live logs: the output of running containers, followed from the engines under the reactor.

:mod:`~ccserver.livelogs.stream` parses the engine's log stream, :mod:`~ccserver.livelogs.tail`
keeps the last bytes of each container, :mod:`~ccserver.livelogs.engine_http` speaks HTTP to
an engine without a thread, :mod:`~ccserver.livelogs.follower` follows containers, and
:mod:`~ccserver.livelogs.task_logs` answers ``GET /tasks/{id}/logs``.
"""
