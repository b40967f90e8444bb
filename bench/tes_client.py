"""The client side of bench/tes.py, run by it under the interpreter of a virtualenv with py-tes
1.1 (``bash -c '. scripts/lib.sh; py_tes_env 1.1'``), never imported: py-tes stays out of the
project's own virtualenv.  It prints one JSON document on stdout.

    python bench/tes_client.py run  URL TOKEN N THREADS IMAGE SECONDS
    python bench/tes_client.py list URL TOKEN N THREADS IMAGE REPEAT

``run``: submits N tasks (one executor ``sh -c true``) from THREADS threads, waits (at most
SECONDS) until every one has ended, listing with view MINIMAL, then reads them all with view
FULL.  ``list``: submits N tasks (the daemon places nothing: they stay QUEUED), then lists them
with view FULL in one page, REPEAT times, timing the py-tes call (request, answer, parsing into
its models) and a raw ``requests`` GET of the same page.
"""

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import requests
import tes

ENDED = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"}


def task(image):
    # no resources: the daemon's [tes] default_cpu_cores and default_ram_gb apply (TES's
    # cpu_cores is an integer, and a fraction of a core is what runs 8 at once here)
    return tes.Task(
        name="bench-tes",
        executors=[tes.Executor(image=image, command=["sh", "-c", "true"])],
        tags={"bench": "tes"},
    )


def submit(client, n, threads, body):
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda _: client.create_task(body), range(n)))


def list_all(client, view, page_size=2047):
    found, token = [], None
    for _ in range(1000):
        page = client.list_tasks(view=view, page_size=page_size, page_token=token)
        found += page.tasks or []
        token = page.next_page_token
        if not token:
            break
    return found


def run(url, token, n, threads, image, seconds):
    client = tes.HTTPClient(url, timeout=60, token=token)
    body = task(image)
    t0 = time.time()
    ids = submit(client, int(n), int(threads), body)
    submitted = time.time()
    wanted = set(ids)
    deadline = time.monotonic() + float(seconds)
    while True:
        states = {t.id: t.state for t in list_all(client, "MINIMAL") if t.id in wanted}
        if len(states) == len(wanted) and all(s in ENDED for s in states.values()):
            break
        if time.monotonic() > deadline:
            left = sum(1 for s in states.values() if s not in ENDED)
            return {"error": f"{left} of {n} tasks not ended within {seconds} s", "t0": t0}
        time.sleep(0.5)
    seen = time.time()
    full = [json.loads(t.as_json()) for t in list_all(client, "FULL") if t.id in wanted]
    return {"t0": t0, "submitted": submitted, "seen_ended": seen, "tasks": full}


def listing(url, token, n, threads, image, repeat):
    client = tes.HTTPClient(url, timeout=60, token=token)
    t0 = time.time()
    ids = submit(client, int(n), int(threads), task(image))
    submitted = time.time() - t0
    session = requests.Session()
    headers = {"Authorization": "Bearer " + token}
    times, raw_times, counts, sizes = [], [], [], []
    for _ in range(int(repeat)):
        began = time.perf_counter()
        page = client.list_tasks(view="FULL", page_size=int(n))
        times.append(time.perf_counter() - began)
        counts.append(len(page.tasks or []))
        began = time.perf_counter()
        answer = session.get(
            url + "/ga4gh/tes/v1/tasks", params={"view": "FULL", "page_size": n}, headers=headers, timeout=60
        )
        answer.raise_for_status()
        raw_times.append(time.perf_counter() - began)
        sizes.append(len(answer.content))
    return {
        "submitted": len(ids),
        "submit_seconds": submitted,
        "pytes_seconds": times,
        "raw_seconds": raw_times,
        "counts": counts,
        "bytes": sizes,
        "version": tes.__version__,
    }


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    try:
        out = run(*args) if mode == "run" else listing(*args)
    except Exception as e:  # the caller reports it as a broken run
        out = {"error": f"{type(e).__name__}: {e}"}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
