"""Run by the py-tes tests inside a virtualenv with py-tes (1.1.x or 0.4.x), never imported
by pytest: drives ccserver with the real client and prints what the client parsed, as JSON.

Arguments: base URL, user, password or "-", token or "-", id of a finished task or "-"
(no password and no token: no credentials).
"""

import json
import sys

import requests
import tes
from tes.utils import unmarshal

url, user, password, token, done_id = sys.argv[1:6]
version = getattr(tes, "__version__", "")
kwargs = {"user": user, "password": password} if password != "-" else {}
if token != "-":
    kwargs = {"token": token}
client = tes.HTTPClient(url, timeout=30, **kwargs)
legacy = version.startswith("0.")


def dump(obj):
    return json.loads(obj.as_json()) if obj is not None else None


out = {"version": version, "legacy": legacy}
info = client.get_service_info()
out["service_info"] = dump(info)
task = tes.Task(
    name="pytes-hello",
    executors=[tes.Executor(image="ccserver-test/busybox:1", command=["echo", "hello"], env={"DB_PASSWORD": "pw-1"})],
    inputs=[tes.Input(path="/data/a.txt", content="some content")],
    outputs=[tes.Output(path="/data/b.txt", url="https://example.org/b.txt")],
    resources=tes.Resources(cpu_cores=1, ram_gb=0.5),
    tags={"client": "py-tes"},
)
created = [client.create_task(task) for _ in range(5)]
out["created"] = created
out["views"] = {view: dump(client.get_task(created[0], view=view)) for view in ("MINIMAL", "BASIC", "FULL")}
if done_id != "-":
    out["done"] = {view: dump(client.get_task(done_id, view=view)) for view in ("MINIMAL", "BASIC", "FULL")}
pages, token_ = [], None
while True:
    page = client.list_tasks(view="BASIC", page_size=2, page_token=token_)
    pages.append([t.id for t in page.tasks])
    token_ = page.next_page_token
    if not token_ or len(pages) > 20:
        break
out["pages"] = pages
# the filters py-tes does not offer as arguments: raw requests, parsed by its own models
auth = (user, password) if password != "-" else None
headers = {"Authorization": "Bearer " + token} if token != "-" else {}
base = url + ("/v1" if legacy else "/ga4gh/tes/v1")
raw = requests.get(
    base + "/tasks",
    params={"name_prefix": "pytes-", "tag_key": "client", "tag_value": "py-tes", "view": "FULL"},
    auth=auth,
    headers=headers,
    timeout=30,
)
raw.raise_for_status()
out["filtered"] = [t.id for t in unmarshal(raw.json(), tes.ListTasksResponse).tasks]
client.cancel_task(created[0])
out["canceled"] = dump(client.get_task(created[0], view="MINIMAL"))
try:
    client.get_task("0123456789abcdef01234567")
    out["unknown"] = "no error"
except requests.HTTPError as e:
    out["unknown"] = e.response.status_code
print(json.dumps(out))
