"""Run by the TES end-to-end tests inside the py-tes 1.1 virtualenv, never imported by pytest:
one operation of the real client against a real daemon, its result printed as JSON.

Arguments: base URL, user, password, operation, then the operation's own:

* ``create`` (the task as JSON on stdin): prints ``{"id": ...}``
* ``get ID VIEW``: prints the task the client parsed
* ``cancel ID``: prints ``{}``
* ``wait ID STATE[,STATE...] SECONDS``: polls the MINIMAL view (every 0.5 s, at most SECONDS),
  then prints the FULL view; exit status 3 if no listed state was reached in time
"""

import json
import sys
import time

import tes
from tes.utils import unmarshal

url, user, password, op, *args = sys.argv[1:]
client = tes.HTTPClient(url, user=user, password=password, timeout=30)


def dump(obj):
    return json.loads(obj.as_json())


if op == "create":
    task = unmarshal(json.load(sys.stdin), tes.Task)
    print(json.dumps({"id": client.create_task(task)}))
elif op == "get":
    print(json.dumps(dump(client.get_task(args[0], view=args[1]))))
elif op == "cancel":
    client.cancel_task(args[0])
    print("{}")
elif op == "wait":
    task_id, states, seconds = args[0], set(args[1].split(",")), float(args[2])
    deadline = time.monotonic() + seconds
    while True:
        state = client.get_task(task_id, view="MINIMAL").state
        if state in states:
            break
        if time.monotonic() > deadline:
            print(json.dumps(dump(client.get_task(task_id, view="FULL"))))
            sys.exit(3)
        time.sleep(0.5)
    print(json.dumps(dump(client.get_task(task_id, view="FULL"))))
else:
    sys.exit(f"unknown operation {op!r}")
