"""The sandbox of the application process: ``sandbox.limits`` as resource limits.

The answer to callback 0 carries the task's ``sandbox`` object (from its
``application_container_description``).  Its ``limits`` use the names of CC-Container-Worker
0.10; each becomes one ``setrlimit`` (soft and hard limit both the value) in the application
process only, after the fork and before the exec, so the worker itself is not limited:

==================  ===============  ======================================
name                resource         unit
==================  ===============  ======================================
cpu_usage           RLIMIT_CPU       seconds of CPU time
create_file_size    RLIMIT_FSIZE     bytes (largest file it may write)
num_open_files      RLIMIT_NOFILE    open file descriptors
heap_size           RLIMIT_DATA      bytes (data segment / heap)
stack_size          RLIMIT_STACK     bytes
rss_size            RLIMIT_RSS       bytes (advisory on Linux)
child_processes     RLIMIT_NPROC     processes of the container's user
==================  ===============  ======================================

A value is a non-negative integer (or null: not limited).  An unknown name or a bad value
fails the container before the application starts (the server learns why in callback 2);
a limit the kernel refuses (above the hard limit of the container) fails it the same way.
``seccomp`` (0.10's syscall filter) needs a C library and is not applied by this worker:
it is logged and ignored, like ``tracing``.
"""

import resource

LIMITS = {
    "cpu_usage": resource.RLIMIT_CPU,
    "create_file_size": resource.RLIMIT_FSIZE,
    "num_open_files": resource.RLIMIT_NOFILE,
    "heap_size": resource.RLIMIT_DATA,
    "stack_size": resource.RLIMIT_STACK,
    "rss_size": resource.RLIMIT_RSS,
    "child_processes": resource.RLIMIT_NPROC,
}


def limits_of(sandbox):
    """``[(resource, value)]`` from a sandbox object (None or {} means no limits); ValueError
    naming the problem when it is not one this worker can apply."""
    if sandbox is None:
        return []
    if not isinstance(sandbox, dict):
        raise ValueError(f"sandbox must be an object, not {type(sandbox).__name__}")
    limits = sandbox.get("limits")
    if limits is None:
        return []
    if not isinstance(limits, dict):
        raise ValueError(f"sandbox.limits must be an object, not {type(limits).__name__}")
    chosen = []
    for name, value in sorted(limits.items()):
        if name not in LIMITS:
            raise ValueError(f"sandbox.limits.{name}: unknown limit (known: {', '.join(sorted(LIMITS))})")
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"sandbox.limits.{name}: expected a non-negative integer, got {value!r}")
        chosen.append((LIMITS[name], value))
    return chosen


def ignored_parts(sandbox, tracing):
    """Names of the requested features this worker does not apply (for its log)."""
    ignored = []
    if isinstance(sandbox, dict) and sandbox.get("seccomp"):
        ignored.append("sandbox.seccomp")
    if tracing:
        ignored.append("tracing")
    return ignored


def preexec(limits):
    """A ``preexec_fn`` for subprocess.Popen that sets ``limits`` in the child, or None."""
    if not limits:
        return None

    def apply():
        for which, value in limits:
            resource.setrlimit(which, (value, value))

    return apply
