"""The process's open-file limit (``RLIMIT_NOFILE``), raised where the system allows.

Read once when the daemon is built (a system call, not blocking work), so that the connection
cap stays below it and ``accept()`` never fails with EMFILE.
"""

from __future__ import annotations

import resource

from twisted.logger import Logger

log = Logger(namespace="ccserver.web")


def open_file_limit(wanted: int) -> int | None:
    """The soft limit after raising it towards ``wanted`` (never above the hard limit);
    ``None`` when unlimited."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted and (hard == resource.RLIM_INFINITY or soft < hard):
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        except (OSError, ValueError) as e:
            log.warn("could not raise the open-file limit from {soft} to {new}: {error}", soft=soft, new=new, error=e)
    return None if soft == resource.RLIM_INFINITY else soft
