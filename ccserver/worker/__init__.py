"""The reference container worker (CC-Container-Worker 0.10 behaviour, cc-protocol §10).

Standard library only (Python >= 3.7). Copied into an image as the directory /opt/container_worker
and started as `python3 /opt/container_worker '<settings JSON>'`; then __main__.py imports that
directory as the package `container_worker` and the sibling modules import each other relatively.
Importable as `ccserver.worker` (and runnable as `python -m ccserver.worker`) for tests.

Modules: runner (dispatch, inspection), application, sandbox (resource limits of the application),
data, callbacks, connectors, common.

Telemetry of callback 2 (units of 0.10): wall_time (s), return_code, std_out / std_err (the last
64 KiB, decoded as UTF-8), max_rss_memory / max_vms_memory (MB, rounded up; best effort from
getrusage and /proc sampling), input_file_sizes (list, MB rounded up), result_file_sizes (object
by local_result_files key, MB rounded up, null when missing).

Environment (for tests and unusual images): CC_WORKER_CONFIG (default /opt/config.json),
CC_WORKER_PORT (data container, default 80), CC_WORKER_BIND (default all addresses),
CC_WORKER_DATA_DIR (default /var/tmp/cc-data), CC_WORKER_NET_TIMEOUT (seconds per socket
operation, default 60).

Exit codes: 0 done (a data container only ends when stopped: 143 on SIGTERM), 1 unexpected error,
2 a callback was refused or the server unreachable, 3 config unreadable, 4 answer of callback 0
not an object, 5 input count mismatch, 6 input download failed, 8 the application could not be
started, 9 the application failed, 10 result upload failed, 42 unknown container_type, 64 bad
settings argument. Inspection: 0 when inspection_url answered below 400, else 1.
"""
