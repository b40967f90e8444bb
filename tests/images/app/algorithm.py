"""The sample application of the test images, steered by its parameters.

Parameters, as flags (array form) or as keys of one JSON object argument (object form):
  --sleep N / {"sleep": N}     sleep N seconds first
  --alloc MB / {"alloc": MB}   allocate and touch MB megabytes (to hit a memory limit)
  --fail / {"fail": true}      print to stderr and exit 3
Otherwise it copies input_files/data.txt (when present) to result_files/copy.txt and writes
result_files/parameters.json = {"argv": [the arguments it got]} and result_files/limits.json
= {its soft resource limits by the sandbox names of CC-Container-Worker 0.10; -1: unlimited}.
result_files/never_written.txt is never written.
The directory is /opt/app unless CC_APP_DIR says otherwise (unit tests).
"""

import json
import os
import resource
import shutil
import sys
import time

base = os.environ.get("CC_APP_DIR", "/opt/app")
argv = sys.argv[1:]
options = {}
if len(argv) == 1 and argv[0].startswith("{"):
    options = json.loads(argv[0])
else:
    i = 0
    while i < len(argv):
        if argv[i] in ("--sleep", "--alloc") and i + 1 < len(argv):
            options[argv[i][2:]] = float(argv[i + 1])
            i += 2
            continue
        if argv[i] == "--fail":
            options["fail"] = True
        i += 1

print("algorithm: arguments", json.dumps(argv), flush=True)
if options.get("sleep"):
    time.sleep(float(options["sleep"]))
if options.get("alloc"):
    size = int(float(options["alloc"]) * 1024 * 1024)
    data = b"\x01" * size  # every page written
    print("algorithm: allocated", len(data), "bytes", flush=True)
if options.get("fail"):
    print("algorithm: failing as asked", file=sys.stderr, flush=True)
    sys.exit(3)

source = os.path.join(base, "input_files", "data.txt")
results = os.path.join(base, "result_files")
os.makedirs(results, exist_ok=True)
if os.path.exists(source):
    shutil.copyfile(source, os.path.join(results, "copy.txt"))
with open(os.path.join(results, "parameters.json"), "w") as f:
    json.dump({"argv": argv}, f)
limits = {
    name: resource.getrlimit(getattr(resource, which))[0]
    for name, which in (
        ("cpu_usage", "RLIMIT_CPU"),
        ("create_file_size", "RLIMIT_FSIZE"),
        ("num_open_files", "RLIMIT_NOFILE"),
        ("heap_size", "RLIMIT_DATA"),
        ("stack_size", "RLIMIT_STACK"),
        ("rss_size", "RLIMIT_RSS"),
        ("child_processes", "RLIMIT_NPROC"),
    )
}
with open(os.path.join(results, "limits.json"), "w") as f:
    json.dump(limits, f)
print("algorithm: done", flush=True)
