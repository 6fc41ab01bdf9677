"""GA4GH TES 1.1 end to end with real clients (py-tes, pydantic-tes): local dcc, real Redis and Docker, moto S3.

Every TES reply in these tests is also checked against the spec's schemas (see conftest.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import boto3
import docker
import pytest
import tes
from pydantictes.api import TesClient
from pydantictes.models import TesExecutor as PtExecutor
from pydantictes.models import TesInput as PtInput
from pydantictes.models import TesTask as PtTask

from dcc.settings import Settings
from dcc.tes import SERVICE_CREATED, SERVICE_UPDATED
from tests.e2e_support import serve_local
from tests.tes.conftest import BUCKET, SpecChecker, TesServer
from tests.tes.spec_check import PREFIX

pytestmark = [pytest.mark.redis, pytest.mark.docker]


def test_service_info_names_the_standard_the_storage_and_the_backend_parameters(tes_server: TesServer) -> None:
    info = tes.HTTPClient(tes_server.url).get_service_info()
    assert info.type == {"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"}
    assert info.storage == [f"file://{tes_server.files}/", f"s3://{BUCKET}/shared/"]
    raw = tes_server.http.get(f"{PREFIX}/service-info").json()
    assert raw["tesResources_backend_parameters"] == ["gpu", "max_duration", "priority"]
    assert raw["organization"]["url"] == tes_server.url + "/"  # a real URL: this service's own address
    # fixed stamps, not the time a process served its first TES request (a restart or cold start changed them)
    assert (raw["createdAt"], raw["updatedAt"]) == (SERVICE_CREATED, SERVICE_UPDATED)
    assert SERVICE_CREATED <= SERVICE_UPDATED < time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def test_two_executors_share_a_volume_and_a_wildcard_output_goes_to_s3(tes_server: TesServer, test_image: str) -> None:
    (tes_server.files / "in").mkdir()
    (tes_server.files / "in" / "words.txt").write_text("alpha\nbeta\n")
    client = tes.HTTPClient(tes_server.url, timeout=30)
    task = tes.Task(
        name="pipeline-1",
        tags={"run": "r1"},
        inputs=[tes.Input(path="/data/words.txt", url=f"file://{tes_server.files}/in/words.txt"),
                tes.Input(path="/data/greeting", content="hello")],
        outputs=[tes.Output(path="/out/*.txt", path_prefix="/out", url=f"s3://{BUCKET}/shared/run1", type="FILE"),
                 tes.Output(path="/out/log", url=f"file://{tes_server.files}/results/log", type="FILE")],
        volumes=["/vol"],
        executors=[
            tes.Executor(image=test_image, command=["sh", "-c", "wc -l < /data/words.txt > /vol/count; "
                                                                 "cat /data/greeting; mkdir -p /out/sub"],
                         stdout="/out/log"),
            tes.Executor(image=test_image, command=["sh", "-c", "echo lines=$(cat /vol/count) > /out/report.txt; "
                                                                 "echo two > /out/b.txt; echo deep > /out/sub/c.txt"],
                         workdir="/vol"),
        ],
    )
    task_id = client.create_task(task)  # py-tes hands back the id
    done = client.wait(task_id, timeout=60)
    assert done.state == "COMPLETE", tes_server.wait(task_id)
    s3 = boto3.client("s3")
    assert s3.get_object(Bucket=BUCKET, Key="shared/run1/report.txt")["Body"].read() == b"lines=2\n"
    assert s3.get_object(Bucket=BUCKET, Key="shared/run1/b.txt")["Body"].read() == b"two\n"
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="shared/run1/")["Contents"]}
    assert keys == {"shared/run1/report.txt", "shared/run1/b.txt"}  # `*` does not cross '/'
    assert (tes_server.files / "results" / "log").read_text() == "hello"  # executor 0's stdout, as an output
    full = tes_server.wait(task_id)
    log = full["logs"][0]
    assert [e["exit_code"] for e in log["logs"]] == [0, 0]
    assert log["logs"][0]["stdout"] == "hello"
    assert sorted((o["url"], o["path"], o["size_bytes"]) for o in log["outputs"]) == [
        (f"file://{tes_server.files}/results/log", "/out/log", "5"),
        (f"s3://{BUCKET}/shared/run1/b.txt", "/out/b.txt", "4"),
        (f"s3://{BUCKET}/shared/run1/report.txt", "/out/report.txt", "8"),
    ]
    basic = client.get_task(task_id, view="BASIC")
    assert basic.logs[0].logs[0].stdout is None and basic.inputs[1].content is None
    assert client.get_task(task_id, view="FULL").inputs[1].content == "hello"


def test_views_have_exactly_the_spec_fields(tes_server: TesServer, test_image: str) -> None:
    task_id = tes_server.http.post(f"{PREFIX}/tasks", json={
        "name": "views", "inputs": [{"path": "/in/a", "content": "secret"}],
        "executors": [{"image": test_image, "command": ["cat", "/in/a"]}]}).json()["id"]
    tes_server.wait(task_id)
    get = lambda view: tes_server.http.get(f"{PREFIX}/tasks/{task_id}", params={"view": view}).json()  # noqa: E731
    assert get("MINIMAL") == {"id": task_id, "state": "COMPLETE"}
    assert tes_server.http.get(f"{PREFIX}/tasks/{task_id}").json() == get("MINIMAL")  # MINIMAL is the default
    basic, full = get("BASIC"), get("FULL")
    assert set(basic) == {"id", "state", "name", "inputs", "executors", "logs", "creation_time"}
    assert basic["inputs"] == [{"path": "/in/a", "type": "FILE"}]  # no content in BASIC
    assert basic["logs"][0]["logs"][0].keys() == {"start_time", "end_time", "exit_code"}
    assert full["inputs"][0]["content"] == "secret" and full["logs"][0]["logs"][0]["stdout"] == "secret"
    assert basic["logs"][0]["outputs"] == [] and full["logs"][0]["outputs"] == []
    assert "null" not in tes_server.http.get(f"{PREFIX}/tasks/{task_id}", params={"view": "FULL"}).text
    bad = tes_server.http.get(f"{PREFIX}/tasks/{task_id}", params={"view": "EVERYTHING"})
    assert bad.status_code == 400 and "view" in bad.json()["error"]


def test_the_first_failing_executor_stops_the_task_but_outputs_are_still_uploaded(tes_server: TesServer,
                                                                                  test_image: str) -> None:
    task_id = tes_server.http.post(f"{PREFIX}/tasks", json={
        "outputs": [{"path": "/out", "url": f"file://{tes_server.files}/partial", "type": "DIRECTORY"}],
        "executors": [
            {"image": test_image, "command": ["sh", "-c", "echo first > /out/one; exit 3"], "ignore_error": True},
            {"image": test_image, "command": ["sh", "-c", "echo second > /out/two; exit 4"]},
            {"image": test_image, "command": ["sh", "-c", "echo never > /out/three"]},
        ]}).json()["id"]
    task = tes_server.wait(task_id)
    assert task["state"] == "EXECUTOR_ERROR"
    assert [e["exit_code"] for e in task["logs"][0]["logs"]] == [3, 4]  # ignore_error went on; 4 stopped it
    assert sorted(p.name for p in (tes_server.files / "partial").iterdir()) == ["one", "two"]
    assert any("executor 1 exited with code 4" in line for line in task["logs"][0]["system_logs"])


def test_stdin_comes_from_an_input_file(tes_server: TesServer, test_image: str) -> None:
    task_id = tes_server.http.post(f"{PREFIX}/tasks", json={
        "inputs": [{"path": "/in/numbers", "content": "3\n1\n2\n"}],
        "executors": [{"image": test_image, "command": ["sort"], "stdin": "/in/numbers"}]}).json()["id"]
    task = tes_server.wait(task_id)
    assert task["state"] == "COMPLETE" and task["logs"][0]["logs"][0]["stdout"] == "1\n2\n3\n"


def test_list_filters_and_pages_newest_first(tes_server: TesServer, test_image: str) -> None:
    def create(name: str, tags: dict[str, str]) -> str:
        return tes_server.http.post(f"{PREFIX}/tasks", json={
            "name": name, "tags": tags, "executors": [{"image": test_image, "command": ["true"]}]}).json()["id"]

    ids = [create("align-1", {"project": "p1", "run": "a"}), create("align-2", {"project": "p1"}),
           create("call-1", {"project": "p2", "run": "a"}), create("xalign", {})]
    for task_id in ids:
        tes_server.wait(task_id)
    client = tes.HTTPClient(tes_server.url)
    seen, token = [], None
    while True:  # py-tes pages with the tokens; the last page has none
        page = client.list_tasks(view="MINIMAL", page_size=3, page_token=token)
        seen += [t.id for t in page.tasks]
        token = page.next_page_token
        if not token:
            break
    assert seen == ids[::-1]  # newest first, each once

    def listed(**params: object) -> list[str]:
        reply = tes_server.http.get(f"{PREFIX}/tasks", params=params)
        assert reply.status_code == 200, reply.text
        return [t["id"] for t in reply.json()["tasks"]]

    assert listed(name_prefix="align") == [ids[1], ids[0]]  # a prefix, not a substring ("xalign")
    assert listed(tag_key="project", tag_value="p1") == [ids[1], ids[0]]
    assert listed(tag_key=["project", "run"], tag_value=["p1", "a"]) == [ids[0]]
    assert listed(tag_key="run") == [ids[2], ids[0]]  # no value: any value
    assert listed(state="COMPLETE", name_prefix="call") == [ids[2]]
    assert listed(state="QUEUED") == []
    # a page that fills on the last task that passes the filters is the last page
    last = tes_server.http.get(f"{PREFIX}/tasks", params={"name_prefix": "call", "page_size": 1}).json()
    assert last == {"tasks": [{"id": ids[2], "state": "COMPLETE"}]}
    first = tes_server.http.get(f"{PREFIX}/tasks", params={"name_prefix": "align", "page_size": 1}).json()
    assert [t["id"] for t in first["tasks"]] == [ids[1]] and first["next_page_token"]
    rest = tes_server.http.get(f"{PREFIX}/tasks", params={"name_prefix": "align", "page_size": 1,
                                                          "page_token": first["next_page_token"]}).json()
    assert rest == {"tasks": [{"id": ids[0], "state": "COMPLETE"}]}
    full = tes_server.http.get(f"{PREFIX}/tasks", params={"view": "BASIC", "page_size": 1}).json()
    assert full["tasks"][0]["executors"] and full["next_page_token"]
    assert tes_server.http.get(f"{PREFIX}/tasks", params={"page_size": 2048}).status_code == 400
    assert tes_server.http.get(f"{PREFIX}/tasks", params={"page_token": "garbage!"}).status_code == 400
    assert tes_server.http.get(f"{PREFIX}/tasks", params={"state": "DONE"}).status_code == 400


def test_cancel_queued_running_and_finished_tasks(tes_server: TesServer, test_image: str,
                                                  docker_client: docker.DockerClient) -> None:
    http = tes_server.http
    # no GPU worker here: a GPU task stays queued, and cancelling it ends it at once
    queued = http.post(f"{PREFIX}/tasks", json={
        "resources": {"backend_parameters": {"gpu": "1"}},
        "executors": [{"image": test_image, "command": ["true"]}]}).json()["id"]
    client = tes.HTTPClient(tes_server.url)
    assert client.get_task(queued, view="MINIMAL").state == "QUEUED"
    client.cancel_task(queued)  # py-tes
    assert client.get_task(queued, view="MINIMAL").state == "CANCELED"
    reply = http.post(f"{PREFIX}/tasks/{queued}:cancel")  # again: still CANCELED, still {}
    assert (reply.status_code, reply.json()) == (200, {})

    running = http.post(f"{PREFIX}/tasks", json={
        "executors": [{"image": test_image, "command": ["sleep", "30"]},
                      {"image": test_image, "command": ["true"]}]}).json()["id"]
    deadline = time.monotonic() + 30
    # (RUNNING is the task claimed; a cancel before its first executor's container starts ends it with none run)
    while not docker_client.containers.list(filters={"label": f"dcc.job={running}", "status": "running"}):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert http.get(f"{PREFIX}/tasks/{running}").json()["state"] == "RUNNING"
    assert http.post(f"{PREFIX}/tasks/{running}:cancel").status_code == 200
    assert http.get(f"{PREFIX}/tasks/{running}").json()["state"] in ("CANCELING", "CANCELED")
    ended = tes_server.wait(running, timeout=20)
    assert ended["state"] == "CANCELED" and len(ended["logs"][0]["logs"]) == 1  # the second executor never ran

    done = http.post(f"{PREFIX}/tasks", json={"executors": [{"image": test_image, "command": ["true"]}]}).json()["id"]
    before = tes_server.wait(done)
    assert http.post(f"{PREFIX}/tasks/{done}:cancel").status_code == 200
    assert tes_server.wait(done) == before  # a finished task is left as it was
    assert http.post(f"{PREFIX}/tasks/no-such-task:cancel").status_code == 404
    missing = http.get(f"{PREFIX}/tasks/no-such-task")
    assert (missing.status_code, missing.json()) == (404, {"error": "task 'no-such-task' not found"})
    asked = http.get(f"{PREFIX}/tasks/{done}:cancel")  # the cancel route takes POST: a GET is told so
    assert (asked.status_code, asked.headers["allow"]) == (405, "POST") and "use POST" in asked.json()["error"]
    assert tes_server.wait(done) == before


@pytest.mark.parametrize(("task", "says"), [
    ({"executors": []}, "executors"),
    ({"inputs": [{"path": "/a", "content": "x"}]}, "executors: Field required"),
    ({"executors": [{"image": "x"}]}, "executors.0.command"),
    ({"executors": [{"image": "x", "command": ["a"], "workdir": "rel"}]}, "must be an absolute path"),
    ({"executors": [{"image": "x", "command": ["a"], "stdout": "/a/../../etc/x"}]}, "must not contain '..'"),
    ({"executors": [{"image": "x", "command": ["a"]}], "volumes": ["/proc/x"]}, "volumes.0"),
    ({"executors": [{"image": "x", "command": ["a"]}], "bogus": 1}, "bogus: is not a field"),
    ({"executors": [{"image": "x", "command": ["a"]}], "inputs": [{"path": "/a"}]}, "needs a url or content"),
    ({"executors": [{"image": "x", "command": ["a"]}], "inputs": [{"path": "/a", "content": "", "type": "DIRECTORY"}]},
     "inputs.0: a DIRECTORY input cannot have content"),
    ({"executors": [{"image": "x", "command": ["a"]}],
      "outputs": [{"path": "/o/*.txt", "url": "file:///tmp/x"}]}, "path_prefix is required"),
    ({"executors": [{"image": "x", "command": ["a"]}],
      "outputs": [{"path": "/o/a", "url": "s3://elsewhere/a"}]}, "outputs.0.url"),
    ({"executors": [{"image": "x", "command": ["a"]}],
      "inputs": [{"path": "/i", "url": "file:///etc/passwd"}]}, "inputs.0.url"),
    ({"executors": [{"image": "x", "command": ["a"]}],
      "resources": {"backend_parameters": {"VmSize": "big"}, "backend_parameters_strict": True}}, "VmSize"),
    ({"executors": [{"image": "x", "command": ["a"]}], "resources": {"backend_parameters": {"gpu": "two"}}},
     "backend_parameters.gpu"),
    ({"executors": [{"image": "x", "command": ["a"]}], "resources": {"backend_parameters": {"gpu": "1", "Gpu": "0"}}},
     "resources.backend_parameters.Gpu: gpu is given twice, with different values"),
    ({"executors": [{"image": "x", "command": ["a"]}], "resources": {"cpu_cores": 1.5}}, "resources.cpu_cores"),
    ({"executors": [{"image": "x", "command": ["a"]}], "resources": {"cpu_cores": "2"}},
     "resources.cpu_cores: must be a JSON number, not a string"),
    ({"executors": [{"image": "x", "command": ["a"], "ignore_error": "yes"}]}, "executors.0.ignore_error"),
    ({"executors": [{"image": "x", "command": ["a"]}, {"image": "x", "command": ["a\x00b"]}]}, "NUL"),
    ({"executors": [{"image": "x", "command": ["a"], "env": {"K": "\ud800"}}]}, "executors[0].env.K"),
    ({"executors": [{"image": "x", "command": ["a"]}],
      "outputs": [{"path": "/o/one", "url": "file:///tmp/tes-out/same"},
                  {"path": "/o/two", "url": "file:///tmp/tes-out/./same"}]},
     "outputs.1.url 'file:///tmp/tes-out/./same' is also outputs.0.url: each file needs its own url"),
    ({"executors": [{"image": "x", "command": ["a"]}],
      "outputs": [{"path": "/o/f.txt", "url": "file:///tmp/tes-out/us/", "type": "FILE"}]},
     "a FILE output's url names the file it is uploaded as"),
    ({"executors": [{"image": "x", "command": ["a"]}], "resources": {"ram_gb": 1e-6}},
     "resources.ram_gb: must be at least 6 MiB (0.005859 GB)"),
    ({"executors": [{"image": "x", "command": ["a"], "stdout": "/in/a"}],
      "inputs": [{"path": "/in/a", "content": "x"}]},
     "executors.0.stdout '/in/a' is the input '/in/a', which is read-only"),
    # the deployment's limits, said in the task's terms (not the dcc job's fields it becomes)
    ({"executors": [{"image": "x", "command": ["a"]}], "resources": {"backend_parameters": {"gpu": "2"}}},
     "resources.backend_parameters.gpu: 2 GPUs is more than any worker of this deployment has (1)"),
    ({"executors": [{"image": "x", "command": ["a"]}], "resources": {"ram_gb": 1000}},
     "resources.ram_gb: 1024000 MiB is over this deployment's maximum"),
])
def test_invalid_tasks_get_400_naming_what_is_wrong(tes_server: TesServer, task: dict, says: str) -> None:
    reply = tes_server.http.post(f"{PREFIX}/tasks", content=json.dumps(task),  # (escaped: "\ud800" reaches it)
                                 headers={"content-type": "application/json"})
    assert reply.status_code == 400, reply.text
    assert says in reply.json()["error"]
    assert tes_server.http.get(f"{PREFIX}/tasks").json() == {"tasks": []}  # nothing was created


def test_a_task_description_past_the_limit_gets_413(tes_server: TesServer) -> None:
    task = {"executors": [{"image": "x", "command": ["echo", "a" * 3000]}] * 100}  # ~300 KB of executors
    reply = tes_server.http.post(f"{PREFIX}/tasks", json=task)
    assert reply.status_code == 413 and "description" in reply.json()["error"], reply.text
    assert tes_server.http.get(f"{PREFIX}/tasks").json() == {"tasks": []}
    # inline contents count toward their own limit only, however their JSON escapes them (900 kB, 5 MB escaped)
    binary = {"executors": [{"image": "x", "command": ["true"]}],
              "inputs": [{"path": "/in/b", "content": "\x01" * 900_000}]}
    assert tes_server.http.post(f"{PREFIX}/tasks", json=binary).status_code == 200


def test_unsupported_backend_parameters_are_dropped_unless_strict(tes_server: TesServer, test_image: str) -> None:
    task_id = tes_server.http.post(f"{PREFIX}/tasks", json={
        "resources": {"cpu_cores": 1, "ram_gb": 0.25, "backend_parameters": {"VmSize": "big", "Priority": "high"}},
        "executors": [{"image": test_image, "command": ["true"]}]}).json()["id"]
    task = tes_server.wait(task_id)
    assert task["resources"] == {"cpu_cores": 1, "ram_gb": 0.25, "backend_parameters": {"Priority": "high"}}
    job = tes_server.http.get(f"/v1/jobs/{task_id}").json()
    assert job["priority"] == "high"
    assert task["logs"][0]["system_logs"] == ["resources.backend_parameters: unsupported keys ignored: VmSize"]


def test_a_failure_after_create_ends_in_system_error_with_a_reason(tes_server: TesServer, test_image: str) -> None:
    task_id = tes_server.http.post(f"{PREFIX}/tasks", json={
        "inputs": [{"path": "/in/x", "url": f"file://{tes_server.files}/missing.txt"}],
        "executors": [{"image": test_image, "command": ["true"]}]}).json()["id"]
    task = tes_server.wait(task_id)
    assert task["state"] == "SYSTEM_ERROR"
    assert any("missing.txt" in line for line in task["logs"][0]["system_logs"])


def test_pydantic_tes_client(tes_server: TesServer, test_image: str) -> None:
    client = TesClient(f"{tes_server.url}/ga4gh/tes/")  # it appends v1/tasks, as Funnel serves them
    info = client.service_info()
    assert info.type.artifact == "tes"
    created = client.create_task(PtTask(
        name="from-pydantic-tes",
        inputs=[PtInput(path="/in/msg", content="hi from pydantic-tes", type="FILE")],
        executors=[PtExecutor(image=test_image, command=["cat", "/in/msg"])]))
    tes_server.wait(created.id)
    task = client.get_task(created.id, "FULL")
    assert task.state.value == "COMPLETE" and task.logs[0].logs[0].stdout == "hi from pydantic-tes"
    assert created.id in [t.id for t in client.list_tasks().tasks]
    client.cancel_task(created.id)
    assert client.get_task(created.id, "BASIC").state.value == "COMPLETE"  # (it cannot read MINIMAL: no executors)


def test_a_task_over_its_disk_gb_is_stopped_with_a_reason(tes_server: TesServer, test_image: str) -> None:
    started = time.monotonic()
    task_id = tes_server.http.post(f"{PREFIX}/tasks", json={
        "resources": {"disk_gb": 0.002},  # about 2 MiB
        "volumes": ["/vol"],
        "executors": [{"image": test_image, "command": ["sh", "-c", "dd if=/dev/zero of=/vol/big bs=1M count=8; "
                                                                    "sleep 60"]},
                      {"image": test_image, "command": ["true"]}]}).json()["id"]
    task = tes_server.wait(task_id, timeout=40)
    assert task["state"] == "SYSTEM_ERROR" and time.monotonic() - started < 30  # stopped, not left to sleep
    assert len(task["logs"][0]["logs"]) == 1
    assert any("over its disk_gb of 0.002" in line for line in task["logs"][0]["system_logs"])


def test_inputs_past_the_disk_gb_fail_the_task_before_they_are_downloaded(tes_server: TesServer,
                                                                         test_image: str) -> None:
    (tes_server.files / "big").write_bytes(b"x" * (3 << 20))
    (tes_server.files / "dir").mkdir()
    for i in range(3):
        (tes_server.files / "dir" / f"part{i}").write_bytes(b"y" * (1 << 20))
    small = {"path": "/in/small", "content": "a few bytes"}
    for big in ({"path": "/in/big", "url": f"file://{tes_server.files}/big"},
                {"path": "/in/dir", "url": f"file://{tes_server.files}/dir", "type": "DIRECTORY"}):
        task_id = tes_server.http.post(f"{PREFIX}/tasks", json={
            "resources": {"disk_gb": 0.002},  # about 2 MiB, under either input's 3 MiB
            "inputs": [small, big],
            "executors": [{"image": test_image, "command": ["true"]}]}).json()["id"]
        task = tes_server.wait(task_id)
        assert task["state"] == "SYSTEM_ERROR" and task["logs"][-1]["logs"] == []  # nothing ran
        assert any(f"inputs.1 ({big['url']}): 3145728 bytes would take the task's files past its disk_gb of 0.002"
                   in line for line in task["logs"][-1]["system_logs"]), task["logs"]
        assert len(task["logs"]) == 1  # not retried: it would not fit the next time either
    # the same inputs fit a larger disk_gb
    task_id = tes_server.http.post(f"{PREFIX}/tasks", json={
        "resources": {"disk_gb": 0.01},
        "inputs": [small, {"path": "/in/dir", "url": f"file://{tes_server.files}/dir", "type": "DIRECTORY"}],
        "executors": [{"image": test_image, "command": ["sh", "-c", "cat /in/dir/* | wc -c"]}]}).json()["id"]
    task = tes_server.wait(task_id)
    assert task["state"] == "COMPLETE" and task["logs"][0]["logs"][0]["stdout"].strip() == str(3 << 20)


def test_local_mode_gives_tasks_a_folder_of_its_own_by_default(redis_url: str, tmp_path: Path, docker_host: str,
                                                               test_image: str) -> None:
    settings = Settings(redis_url=redis_url, storage_url=str(tmp_path / "storage"))
    checker = SpecChecker()
    with serve_local(tmp_path / "data", settings, workers=1, wrap=checker.wrap) as (_, http):
        folder = (tmp_path / "data" / "tes").resolve()
        assert http.get(f"{PREFIX}/service-info").json()["storage"] == [f"file://{folder}/"]
        task_id = http.post(f"{PREFIX}/tasks", json={
            "outputs": [{"path": "/out/a", "url": f"file://{folder}/run/a"}],
            "executors": [{"image": test_image, "command": ["sh", "-c", "echo made > /out/a"]}]}).json()["id"]
        deadline = time.monotonic() + 30
        while http.get(f"{PREFIX}/tasks/{task_id}").json()["state"] != "COMPLETE":
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert (folder / "run" / "a").read_text() == "made\n"
    assert checker.checked and not checker.problems, checker.problems


def test_a_folder_input_from_s3_and_a_folder_output_to_s3(tes_server: TesServer, test_image: str) -> None:
    s3 = boto3.client("s3")
    for key, body in (("shared/ref/a.txt", b"A"), ("shared/ref/sub/b.txt", b"BB"), ("shared/refx/no.txt", b"-")):
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    task_id = tes_server.http.post(f"{PREFIX}/tasks", json={
        "inputs": [{"path": "/ref", "url": f"s3://{BUCKET}/shared/ref", "type": "DIRECTORY"}],
        "outputs": [{"path": "/res", "url": f"s3://{BUCKET}/shared/res", "type": "DIRECTORY"}],
        "executors": [{"image": test_image, "command": ["sh", "-c", "cd /ref && find . -type f | sort > /res/list; "
                                                                    "cp sub/b.txt /res/copy"]}]}).json()["id"]
    task = tes_server.wait(task_id)
    assert task["state"] == "COMPLETE", task
    listing = s3.get_object(Bucket=BUCKET, Key="shared/res/list")["Body"].read().decode()
    assert listing == "./a.txt\n./sub/b.txt\n"  # the folder, not its sibling 'refx'
    assert s3.get_object(Bucket=BUCKET, Key="shared/res/copy")["Body"].read() == b"BB"
    assert sorted(o["url"] for o in task["logs"][0]["outputs"]) == [f"s3://{BUCKET}/shared/res/copy",
                                                                    f"s3://{BUCKET}/shared/res/list"]


def test_a_volume_inside_an_input_folder_leaves_the_rest_of_it_read_only(tes_server: TesServer,
                                                                         test_image: str) -> None:
    (tes_server.files / "ref").mkdir()
    (tes_server.files / "ref" / "x.txt").write_text("reference\n")
    try_write = "if echo bad >> /ref/x.txt 2>/dev/null; then echo wrote; else echo refused; fi"
    task_id = tes_server.http.post(f"{PREFIX}/tasks", json={
        "inputs": [{"path": "/ref", "url": f"file://{tes_server.files}/ref", "type": "DIRECTORY"}],
        "volumes": ["/ref/tmp"],
        "outputs": [{"path": "/ref/res/n", "url": f"file://{tes_server.files}/res/n"}],
        "executors": [{"image": test_image, "command": ["sh", "-c", f"{try_write}; echo scratch > /ref/tmp/s; "
                                                                    "cat /ref/tmp/s > /ref/res/n"]},
                      {"image": test_image, "command": ["cat", "/ref/x.txt"]}]}).json()["id"]
    task = tes_server.wait(task_id)
    assert task["state"] == "COMPLETE", task["logs"]
    assert [e["stdout"] for e in task["logs"][0]["logs"]] == ["refused\n", "reference\n"]
    assert (tes_server.files / "res" / "n").read_text() == "scratch\n"  # the volume and output folder are writable


def test_one_missing_output_does_not_stop_the_others(tes_server: TesServer, test_image: str) -> None:
    task_id = tes_server.http.post(f"{PREFIX}/tasks", json={
        "outputs": [{"path": "/out/never-written", "url": f"file://{tes_server.files}/x/missing"},
                    {"path": "/res", "url": f"file://{tes_server.files}/res", "type": "DIRECTORY"}],
        "executors": [{"image": test_image, "command": ["sh", "-c", "echo kept > '/res/a #1.txt'"]}]}).json()["id"]
    task = tes_server.wait(task_id)
    assert task["state"] == "SYSTEM_ERROR"
    assert (tes_server.files / "res" / "a #1.txt").read_text() == "kept\n"
    assert [o["url"] for o in task["logs"][0]["outputs"]] == [f"file://{tes_server.files}/res/a%20%231.txt"]
    assert any(line.startswith("outputs.0 (/out/never-written") for line in task["logs"][0]["system_logs"])


def test_a_finished_task_is_served_after_its_redis_record_expires(tes_server: TesServer, test_image: str) -> None:
    task_id = tes_server.http.post(f"{PREFIX}/tasks", json={
        "name": "kept", "executors": [{"image": test_image, "command": ["echo", "durable"]}]}).json()["id"]
    before = tes_server.wait(task_id)
    store = tes_server.local.service.store
    store.redis.delete(store.job_key(task_id))  # what retention does
    after = tes_server.http.get(f"{PREFIX}/tasks/{task_id}", params={"view": "FULL"}).json()
    assert after == before and after["logs"][0]["logs"][0]["stdout"] == "durable\n"


def test_an_executor_stdout_file_is_whole_or_the_task_fails(redis_url: str, tmp_path: Path, docker_host: str,
                                                             test_image: str) -> None:
    # outputs up to 1 MiB: what the engine keeps of an executor writing to a stdout file is as much (at least
    # dcc's 8 MiB floor), and 400,000 lines of seq take ~13 MB there
    settings = Settings(redis_url=redis_url, storage_url=str(tmp_path / "storage"), max_output_bytes=1 << 20)
    with serve_local(tmp_path / "data", settings, workers=1) as (_, http):
        folder = (tmp_path / "data" / "tes").resolve()
        server = TesServer(local=None, http=http, url="", files=folder, checker=SpecChecker())  # type: ignore[arg-type]

        def run(executor: dict, **task: object) -> dict:
            task_id = http.post(f"{PREFIX}/tasks", json={"executors": [{"image": test_image, **executor}],
                                                         **task}).json()["id"]
            return server.wait(task_id)

        cut = run({"command": ["seq", "400000"], "stdout": "/out/seq.txt"},
                  outputs=[{"path": "/out/seq.txt", "url": f"file://{folder}/seq.txt"}])
        assert cut["state"] == "SYSTEM_ERROR", cut
        assert any("/out/seq.txt would miss its start" in line for line in cut["logs"][0]["system_logs"])
        # the same output as a log only: its end is kept, and the task completes
        logged = run({"command": ["seq", "400000"]})
        assert logged["state"] == "COMPLETE" and logged["logs"][0]["logs"][0]["stdout"].endswith("400000\n")
        # a stdin file that is not there is the task's error, not an empty input
        typo = run({"command": ["wc", "-c"], "stdin": "/in/typo.txt"}, volumes=["/in"])
        assert typo["state"] == "SYSTEM_ERROR" and typo["logs"][0]["logs"] == []
        assert any(line.startswith("executor 0: its stdin /in/typo.txt cannot be read")
                   for line in typo["logs"][0]["system_logs"]), typo["logs"]
        folder = run({"command": ["wc", "-c"], "stdin": "/in"}, volumes=["/in"])
        assert "executor 0: its stdin /in cannot be read: it is a folder" in folder["logs"][0]["system_logs"]
