"""The Docker runtime against the real engine, with the busybox test image."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import docker
import pytest

from dcc.errors import JobSystemError
from worker_agent.docker_runtime import LOG_FILES, MIN_LOG_BYTES, DockerRuntime
from worker_agent.runtime import BindMount, ContainerJob

pytestmark = pytest.mark.docker


@pytest.fixture
def runtime(docker_client: docker.DockerClient) -> DockerRuntime:
    return DockerRuntime(client=docker_client, max_output_bytes=1 << 20)


def job(tmp_path: Path, image: str, command: list[str], *, job_id: str = "t1", max_duration: float = 60,
        **kw: object) -> ContainerJob:
    inputs = tmp_path / "inputs"
    inputs.mkdir(exist_ok=True)
    return ContainerJob(job_id=job_id, image=image, command=command, env={"GREETING": "hi"}, working_dir=None,
                        inputs_dir=inputs, max_duration=max_duration, **kw)  # type: ignore[arg-type]


def run(runtime: DockerRuntime, spec: ContainerJob, tmp_path: Path):  # type: ignore[no-untyped-def]
    work = tmp_path / "work"
    work.mkdir()
    try:
        return runtime.run(spec, workdir=work)
    finally:
        runtime.cleanup(spec.job_id)


def test_inputs_in_outputs_logs_and_env(runtime: DockerRuntime, test_image: str, tmp_path: Path) -> None:
    spec = job(tmp_path, test_image, ["sh", "-c",
               "mkdir -p $OUTPUTS/d && cat $INPUTS/a $INPUTS/sub/b > $OUTPUTS/d/ab && "
               "echo $GREETING $DCC_JOB_ID; echo oops >&2"])
    (spec.inputs_dir / "a").write_text("A")
    (spec.inputs_dir / "sub").mkdir()
    (spec.inputs_dir / "sub" / "b").write_text("B")
    out = run(runtime, spec, tmp_path)
    assert (out.exit_code, out.timed_out, out.killed) == (0, False, False)
    assert (out.outputs_dir / "d" / "ab").read_text() == "AB"
    assert out.stdout_path.read_text() == "hi t1\n" and out.stderr_path.read_text() == "oops\n"
    assert out.exited_at >= out.started_at


def test_large_interleaved_logs_keep_each_stream_whole(runtime: DockerRuntime, test_image: str,
                                                       tmp_path: Path) -> None:
    # both streams come in one framed reply; frames split across reads must be put back together
    spec = job(tmp_path, test_image, ["sh", "-c", "i=0; while [ $i -lt 3000 ]; do echo out$i; echo err$i >&2; "
                                                  "i=$((i+1)); done; head -c 300000 /dev/zero | tr '\\0' x"])
    out = run(runtime, spec, tmp_path)
    assert out.stdout_path.read_text() == "".join(f"out{i}\n" for i in range(3000)) + "x" * 300000
    assert out.stderr_path.read_text() == "".join(f"err{i}\n" for i in range(3000))


def test_output_past_the_log_limit_keeps_its_end_and_says_so(docker_client: docker.DockerClient, test_image: str,
                                                              tmp_path: Path) -> None:
    limit = MIN_LOG_BYTES  # 8 MiB: a smaller setting is raised to it
    runtime = DockerRuntime(client=docker_client, max_log_bytes=256 << 10)
    # 400,000 short lines take ~30 MB in the engine's store (~75 bytes each): the earliest are dropped
    spec = job(tmp_path, test_image, ["seq", "400000"])
    out = run(runtime, spec, tmp_path)
    assert out.logs_cut
    stdout = out.stdout_path.read_text().splitlines()
    assert stdout[-1] == "400000" and stdout[0] != "1"
    assert stdout == [str(i) for i in range(int(stdout[0]), 400001)]  # a whole tail, nothing missing inside it
    assert out.stdout_path.stat().st_size < limit
    assert out.stderr_path.read_text() == ("[dcc: the job's output reached the log limit of "
                                           f"{limit} bytes: earlier output may have been dropped]\n")
    # well under the limit, all of it and no note
    (tmp_path / "small").mkdir()
    spec = job(tmp_path / "small", test_image, ["sh", "-c", "seq 2000; echo last words >&2"])
    out = run(runtime, spec, tmp_path / "small")
    assert out.stdout_path.read_text() == "".join(f"{i}\n" for i in range(1, 2001))
    assert out.stderr_path.read_text() == "last words\n" and not out.logs_cut


def test_only_the_outputs_asked_for_are_kept(runtime: DockerRuntime, test_image: str, tmp_path: Path) -> None:
    script = ("cd $OUTPUTS && mkdir -p sub/deep tmp && echo > a.txt && echo > .hidden.txt && echo > b.log && "
              "echo > sub/c.txt && echo > sub/deep/d.txt && echo > sub/e.log && head -c 1500000 /dev/zero > tmp/big")
    for keep, kept in (
        (None, ["a.txt", ".hidden.txt", "b.log", "sub/c.txt", "sub/deep/d.txt", "sub/e.log"]),  # tmp/big: > 1 MiB
        (("*.txt", "sub/**/*.txt"), ["a.txt", ".hidden.txt", "sub/c.txt", "sub/deep/d.txt"]),
        (("!**/*.log", "!tmp/**"), ["a.txt", ".hidden.txt", "sub/c.txt", "sub/deep/d.txt"]),
        (("[ab].*", "sub/**"), ["a.txt", "b.log", "sub/c.txt", "sub/deep/d.txt", "sub/e.log"]),
        (("{a,b}.*",), []),  # braces are not expanded: no file is named so
    ):
        work = tmp_path / str(len(list(tmp_path.iterdir())))
        work.mkdir()
        out = run(runtime, job(work, test_image, ["sh", "-c", script], keep=keep), work)
        found = sorted(str(p.relative_to(out.outputs_dir)) for p in out.outputs_dir.rglob("*") if p.is_file())
        assert found == sorted(kept), keep
        # the 1.5 MB file is over the limit (1 MiB here): dropped as such only when it was asked for
        assert out.outputs_truncated is (keep is None)
        assert ("no output matched keepOutputs" in out.stderr_path.read_text()) is (not kept)
        assert "matched no output" not in out.stderr_path.read_text()  # each pattern kept a file
    # a pattern that keeps nothing while others keep files is named; so is one whose files another excludes
    work = tmp_path / "some"
    work.mkdir()
    keep = ("*.txt", "*.csv", "sub/*.log", "sub", "!sub/*.log")
    out = run(runtime, job(work, test_image, ["sh", "-c", script], keep=keep), work)
    assert sorted(p.name for p in out.outputs_dir.rglob("*") if p.is_file()) == [".hidden.txt", "a.txt"]
    assert out.stderr_path.read_text() == (
        "[dcc: keepOutputs pattern 'sub' names a folder, which is not a file: sub/** keeps its files]\n"
        "[dcc: keepOutputs pattern '*.csv' matched no output that was kept]\n"
        "[dcc: keepOutputs pattern 'sub/*.log' matched no output that was kept]\n")
    # a job that writes nothing gets no note
    work = tmp_path / "empty"
    work.mkdir()
    out = run(runtime, job(work, test_image, ["true"], keep=keep), work)
    assert out.stderr_path.read_text() == ""
    # patterns that keep nothing say so
    work = tmp_path / "none"
    work.mkdir()
    out = run(runtime, job(work, test_image, ["sh", "-c", script], keep=("sub", "tmp/nothing-*")), work)
    assert not any(p.is_file() for p in out.outputs_dir.rglob("*"))
    assert out.stderr_path.read_text() == (
        "[dcc: no output matched keepOutputs; 7 file(s) were removed]\n"
        "[dcc: keepOutputs pattern 'sub' names a folder, which is not a file: sub/** keeps its files]\n")


def test_nonzero_exit_code(runtime: DockerRuntime, test_image: str, tmp_path: Path) -> None:
    assert run(runtime, job(tmp_path, test_image, ["sh", "-c", "exit 42"]), tmp_path).exit_code == 42


def test_max_duration_kills(runtime: DockerRuntime, test_image: str, tmp_path: Path) -> None:
    started = time.monotonic()
    out = run(runtime, job(tmp_path, test_image, ["sleep", "30"], max_duration=1), tmp_path)
    assert out.timed_out and not out.killed and time.monotonic() - started < 15


def test_kill_from_another_thread(runtime: DockerRuntime, test_image: str, tmp_path: Path) -> None:
    def killer() -> None:
        deadline = time.monotonic() + 10
        while not runtime.kill("t1") and time.monotonic() < deadline:
            time.sleep(0.05)

    threading.Thread(target=killer).start()
    started = time.monotonic()
    out = run(runtime, job(tmp_path, test_image, ["sleep", "30"]), tmp_path)
    assert out.killed and not out.timed_out and time.monotonic() - started < 10


def test_missing_image_is_a_system_error(runtime: DockerRuntime, tmp_path: Path) -> None:
    with pytest.raises(JobSystemError) as info:
        run(runtime, job(tmp_path, "dcc-no-such-image:1", ["true"]), tmp_path)
    # no registry answers here: the pull fails either as "not found" or as a network failure
    assert info.value.code in ("image_not_found", "image_pull_failed")
    assert info.value.retryable == (info.value.code == "image_pull_failed")
    assert not info.value.machine  # the job named the image: no fault of the worker's


def test_a_folder_mounted_where_the_image_has_a_file_is_the_jobs_fault(runtime: DockerRuntime, test_image: str,
                                                                       tmp_path: Path) -> None:
    (tmp_path / "vol").mkdir()
    spec = job(tmp_path, test_image, ["true"], mounts=(BindMount(tmp_path / "vol", "/bin/sh", read_only=False),))
    with pytest.raises(JobSystemError) as info:
        run(runtime, spec, tmp_path)
    assert (info.value.code, info.value.retryable, info.value.machine) == ("container_refused", False, False)


def test_containers_are_hardened(runtime: DockerRuntime, docker_client: docker.DockerClient, test_image: str,
                                 tmp_path: Path) -> None:
    spec = job(tmp_path, test_image, ["sh", "-c", "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; "
                                                  "ls /sys/class/net; ls /var/run/docker.sock 2>&1; "
                                                  "grep -c localhost /etc/hosts"], memory_mb=64)
    out = run(runtime, spec, tmp_path)
    text = out.stdout_path.read_text()
    assert "CapEff:\t0000000000000000" in text and "NoNewPrivs:\t1" in text
    assert text.split().count("lo") == 1 and "eth0" not in text  # no network but loopback
    assert "No such file" in text  # no Docker socket inside
    assert text.split()[-1] == "2"  # the engine writes no /etc/hosts with networking disabled: dcc mounts one
    created = docker_client.api.create_container(**_low_level(runtime, spec))
    try:
        inspected = docker_client.api.inspect_container(created["Id"])
        assert inspected["Config"]["NetworkDisabled"] is True  # no network sandbox to set up at start
        host = inspected["HostConfig"]
        assert host["CapDrop"] == ["ALL"] and host["SecurityOpt"] == ["no-new-privileges"]
        assert host["NetworkMode"] == "none" and host["PidsLimit"] == 1024 and host["Memory"] == 64 << 20
        assert not host.get("Binds") and not host.get("Privileged")
        # the engine keeps at most 64 MiB of the job's output, in files it rotates
        assert host["LogConfig"] == {"Type": "json-file", "Config": {
            "max-size": str(8 << 20), "max-file": str(LOG_FILES), "compress": "false"}}
        # the only host folder the job sees is its own inputs, read-only
        assert [(m["Target"], m["Source"], m.get("ReadOnly")) for m in host["Mounts"]] == [
            ("/inputs", str(spec.inputs_dir.resolve()), True)]
    finally:
        docker_client.api.remove_container(created["Id"], force=True)


def _low_level(runtime: DockerRuntime, spec: ContainerJob) -> dict:
    kw = runtime.create_kwargs(spec)
    api = runtime.client.api
    host_config = api.create_host_config(
        network_mode=kw["network_mode"], cap_drop=kw["cap_drop"], security_opt=kw["security_opt"],
        pids_limit=kw["pids_limit"], mem_limit=kw["mem_limit"], memswap_limit=kw["memswap_limit"],
        device_requests=kw.get("device_requests"), mounts=kw["mounts"], log_config=kw["log_config"])
    return {"image": kw["image"], "command": kw["command"], "environment": kw["environment"],
            "labels": kw["labels"], "host_config": host_config, "network_disabled": kw["network_disabled"]}


def test_links_in_outputs_are_dropped(runtime: DockerRuntime, test_image: str, tmp_path: Path) -> None:
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "secret").write_text("input\n")
    spec = job(tmp_path, test_image, ["sh", "-c", "ln -s /etc/passwd $OUTPUTS/evil; ln -s / $OUTPUTS/root; "
                                                  "mkfifo $OUTPUTS/fifo; echo ok > $OUTPUTS/real; mkdir $OUTPUTS/d; "
                                                  "echo x > $OUTPUTS/d/f; ln $OUTPUTS/d/f $OUTPUTS/hard; "
                                                  "echo no > /inputs/x 2>/dev/null || echo inputs-read-only; "
                                                  "ln /inputs/secret $OUTPUTS/stolen 2>/dev/null || echo no-link-out; "
                                                  "ln /etc/hosts $OUTPUTS/hosts 2>/dev/null || echo no-link-out"])
    out = run(runtime, spec, tmp_path)
    kept = sorted(p.relative_to(out.outputs_dir).as_posix() for p in out.outputs_dir.rglob("*"))
    # a hard link can only name a file of the outputs folder itself: link(2) does not cross mount points
    assert kept == ["d", "d/f", "hard", "real"]
    assert (out.outputs_dir / "real").read_text() == "ok\n" and (out.outputs_dir / "hard").read_text() == "x\n"
    assert out.stdout_path.read_text() == "inputs-read-only\nno-link-out\nno-link-out\n"
    notes = [line for line in out.stderr_path.read_text().splitlines() if line.startswith("[dcc: output ")]
    assert sorted(line.split()[2] for line in notes) == ["evil", "fifo", "root"]


def test_outputs_past_the_limit_are_truncated(runtime: DockerRuntime, test_image: str, tmp_path: Path) -> None:
    spec = job(tmp_path, test_image, ["sh", "-c", "head -c 700000 /dev/zero > $OUTPUTS/a; "
                                                  "head -c 700000 /dev/zero > $OUTPUTS/b"])
    out = run(runtime, spec, tmp_path)
    assert out.outputs_truncated
    assert len(list(out.outputs_dir.iterdir())) == 1


def test_gpu_jobs_get_device_requests(runtime: DockerRuntime, docker_client: docker.DockerClient, test_image: str,
                                      tmp_path: Path) -> None:
    spec = job(tmp_path, test_image, ["nvidia-smi"], gpu_device_ids=("0", "3"))
    # No GPU here: create (not start) the container and read back what the engine was asked for.
    created = docker_client.api.create_container(**_low_level(runtime, spec))
    try:
        requests = docker_client.api.inspect_container(created["Id"])["HostConfig"]["DeviceRequests"]
    finally:
        docker_client.api.remove_container(created["Id"], force=True)
    assert requests == [{"Driver": "nvidia", "Count": 0, "DeviceIDs": ["0", "3"], "Capabilities": [["gpu"]],
                         "Options": {}}]
    assert "device_requests" not in runtime.create_kwargs(job(tmp_path, test_image, ["true"]))


def test_the_legacy_nvidia_runtime_and_the_worker_s_class_are_deployment_settings(
        redis_url: str, docker_client: docker.DockerClient, test_image: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from dcc.settings import Settings
    from worker_agent.__main__ import build_worker

    for name, value in {"DCC_GPU_RUNTIME": "runc", "DCC_WORKER_CLASS": "gpu", "DCC_GPUS": "2",
                        "DISABLE_NVIDIA_RUNTIME": "true"}.items():
        monkeypatch.setenv(name, value)
    worker = build_worker(Settings(redis_url=redis_url, storage_url=str(tmp_path / "s")), workdir=tmp_path / "w")
    worker.held.close()  # (the work dir's lock: this worker never starts)
    assert (worker.config.worker_class, worker.config.gpu_device_ids) == ("gpu", ("0", "1"))
    runtime = worker.runtime
    assert isinstance(runtime, DockerRuntime)
    spec = job(tmp_path, test_image, ["true"], gpu_device_ids=("1",))
    created = docker_client.api.create_container(**_low_level(runtime, spec))  # (runc: a runtime this engine has)
    try:
        assert docker_client.api.inspect_container(created["Id"])["HostConfig"]["Runtime"] == "runc"
    finally:
        docker_client.api.remove_container(created["Id"], force=True)
    assert runtime.create_kwargs(spec)["runtime"] == "runc"
    assert "runtime" not in runtime.create_kwargs(job(tmp_path, test_image, ["true"]))  # CPU jobs: the default


def test_cleanup_removes_the_container_and_is_idempotent(runtime: DockerRuntime, docker_client: docker.DockerClient,
                                                         test_image: str, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    runtime.run(job(tmp_path, test_image, ["true"], job_id="clean1"), workdir=work)
    assert docker_client.containers.list(all=True, filters={"label": "dcc.job=clean1"})
    runtime.cleanup("clean1")
    runtime.cleanup("clean1")
    assert not docker_client.containers.list(all=True, filters={"label": "dcc.job=clean1"})
    assert runtime.ping() is None


def test_leftovers_of_a_crashed_run_are_removed(runtime: DockerRuntime, docker_client: docker.DockerClient,
                                                test_image: str) -> None:
    mine = docker_client.containers.create(test_image, ["sleep", "30"], labels={"dcc.worker": "w-crashed"})
    other = docker_client.containers.create(test_image, ["true"], labels={"dcc.worker": "w-other"})
    mine.start()
    try:
        assert runtime.remove_leftovers("w-crashed") == 1
        assert not docker_client.containers.list(all=True, filters={"label": "dcc.worker=w-crashed"})
        assert docker_client.containers.list(all=True, filters={"label": "dcc.worker=w-other"})
    finally:
        other.remove(force=True)


def test_a_tree_deeper_than_any_output_name_is_removed_and_named(runtime: DockerRuntime, test_image: str,
                                                                 tmp_path: Path) -> None:
    # 1500 folders deep: past Python's recursion limit (shutil.rmtree fails) and past the 900-byte output name
    script = ('cd $OUTPUTS && echo kept > top.txt && i=0; while [ $i -lt 1500 ]; do mkdir a; cd a; i=$((i+1)); '
              'done; echo deep > f')
    out = run(runtime, job(tmp_path, test_image, ["sh", "-c", script]), tmp_path)
    assert out.exit_code == 0
    assert [p.name for p in out.outputs_dir.rglob("*") if p.is_file()] == ["top.txt"]  # (folders: 450 deep)
    note = out.stderr_path.read_text()
    assert note.startswith("[dcc: output a/a/a/") and "at most 900 bytes long]" in note
    assert len(note.splitlines()) == 1  # the folder too long to be a name, once, not each file in it


def test_remove_tree_removes_trees_python_cannot(tmp_path: Path) -> None:
    import os
    import shutil

    from worker_agent.files import remove_tree

    root = tmp_path / "deep"
    root.mkdir()
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(1200):  # 1200 parts of 100 bytes: deeper than the recursion limit, longer than PATH_MAX
        os.mkdir("d" * 100, dir_fd=fd)
        child = os.open("d" * 100, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)
    with pytest.raises((RecursionError, OSError)):
        shutil.rmtree(root)
    remove_tree(root)
    assert not root.exists()
    remove_tree(root)  # (nothing there: nothing to do)


def test_outputs_lose_setuid_bits(runtime: DockerRuntime, test_image: str, tmp_path: Path) -> None:
    script = "echo > $OUTPUTS/su && chmod 4755 $OUTPUTS/su && echo > $OUTPUTS/g && chmod 2755 $OUTPUTS/g"
    out = run(runtime, job(tmp_path, test_image, ["sh", "-c", script]), tmp_path)
    assert out.exit_code == 0
    assert {p.name: oct(p.stat().st_mode & 0o7777) for p in out.outputs_dir.iterdir()} == {"su": "0o755", "g": "0o755"}


def test_long_lines_keep_their_newlines_and_the_store_is_counted_as_the_engine_stores_it(
        runtime: DockerRuntime, docker_client: docker.DockerClient, test_image: str, tmp_path: Path) -> None:
    # lines past the engine's 16 KiB pieces, escaped characters, bytes that are not UTF-8, both streams
    script = ('head -c 40000 /dev/zero | tr "\\0" x; echo; echo END; seq 3000 | sed "s/.*/<&>\\"\\t\\\\\\\\/"; '
              'printf "\\351\\342\\200\\250\\001\\n" >&2; head -c 16384 /dev/zero | tr "\\0" y; echo')
    spec = job(tmp_path, test_image, ["sh", "-c", script])
    container = docker_client.containers.create(**runtime.create_kwargs(spec))
    try:
        container.start()
        assert container.wait(timeout=60)["StatusCode"] == 0
        stored = runtime._save_logs(container, tmp_path / "out", tmp_path / "err")
        on_disk = os.path.getsize(docker_client.api.inspect_container(container.id)["LogPath"])
    finally:
        container.remove(force=True)
    out = (tmp_path / "out").read_bytes().split(b"\n")
    assert out[:2] == [b"x" * 40000, b"END"] and out[-2:] == [b"y" * 16384, b""]  # not "xxx...END"
    assert out[2:5] == [b'<1>"\t\\', b'<2>"\t\\', b'<3>"\t\\']
    assert (tmp_path / "err").read_bytes() == "\ufffd\u2028\x01\n".encode()  # (not UTF-8: U+FFFD)
    # the limit holds what the engine really stores: the count is never under it, and close to it
    assert on_disk <= stored <= on_disk * 1.01, (stored, on_disk)


def test_a_job_killed_for_its_memory_and_outputs_past_the_limit_are_said_so(runtime: DockerRuntime, test_image: str,
                                                                           tmp_path: Path) -> None:
    # 1 MiB of outputs kept here: 'big' does not fit after 'a'; then the job eats memory past its 6 MiB
    script = ("head -c 800000 /dev/zero > $OUTPUTS/a && head -c 800000 /dev/zero > $OUTPUTS/big && "
              "echo > $OUTPUTS/c && x=$(head -c 30000000 /dev/zero | tr \"\\\\0\" a) && echo ${#x}")
    out = run(runtime, job(tmp_path, test_image, ["sh", "-c", script], memory_mb=6), tmp_path)
    assert (out.exit_code, out.killed, out.timed_out) == (137, False, False)
    assert sorted(p.name for p in out.outputs_dir.iterdir()) == ["a", "c"] and out.outputs_truncated
    assert out.stderr_path.read_text() == (
        "[dcc: the job was killed for going past its memory limit of 6 MiB (parameters.memory)]\n"
        f"[dcc: output big left out: the outputs kept would have gone past {1 << 20} bytes]\n")


@pytest.mark.parametrize("where", ["/tmp", "$OUTPUTS"])  # the container's writable layer, or its outputs folder
def test_a_job_whose_files_pass_the_disk_limit_is_stopped_and_told(docker_client: docker.DockerClient,
                                                                   test_image: str, tmp_path: Path, where: str) -> None:
    runtime = DockerRuntime(client=docker_client, max_disk_bytes=2 << 20, disk_check_seconds=0.2)
    spec = job(tmp_path, test_image, ["sh", "-c", f"head -c 3000000 /dev/urandom > {where}/big; echo wrote; sleep 60"])
    out = run(runtime, spec, tmp_path)
    assert out.disk_exceeded is not None and out.disk_exceeded > 2 << 20
    assert out.exit_code == 137 and not out.timed_out and not out.killed
    assert out.exited_at - out.started_at < 30  # stopped when seen, not at the end of its sleep
    assert out.stdout_path.read_text() == "wrote\n"
    assert f"reached {out.disk_exceeded} bytes, over the limit of {2 << 20} bytes" in out.stderr_path.read_text()
    assert "memory" not in out.stderr_path.read_text()  # (a kill, but not the kernel's for memory)


def test_a_job_under_the_disk_limit_is_left_alone(docker_client: docker.DockerClient, test_image: str,
                                                  tmp_path: Path) -> None:
    runtime = DockerRuntime(client=docker_client, max_disk_bytes=8 << 20, disk_check_seconds=0.2)
    spec = job(tmp_path, test_image, ["sh", "-c", "head -c 1000000 /dev/urandom > /tmp/a; "
                                                  "head -c 1000000 /dev/urandom > $OUTPUTS/b; sleep 1"])
    out = run(runtime, spec, tmp_path)
    assert (out.exit_code, out.disk_exceeded) == (0, None)
    assert (out.outputs_dir / "b").stat().st_size == 1000000 and out.stderr_path.read_text() == ""


def test_an_output_whose_name_the_storage_cannot_hold_is_removed_and_named(runtime: DockerRuntime, test_image: str,
                                                                           tmp_path: Path) -> None:
    long_name = "n" * 40
    spec = job(tmp_path, test_image, ["sh", "-c", f"echo a > $OUTPUTS/short; echo b > $OUTPUTS/{long_name}"],
               max_output_name=30)  # (as S3 allows, for a long job id under a long storage prefix)
    out = run(runtime, spec, tmp_path)
    assert out.exit_code == 0 and sorted(p.name for p in out.outputs_dir.iterdir()) == ["short"]
    assert f"[dcc: output {long_name} removed: " in out.stderr_path.read_text()
    assert "at most 30 bytes long" in out.stderr_path.read_text()
