"""The TES task sandbox: which folders are mounted how, which files an output names, and what never escapes."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dcc.errors import JobSystemError, StorageError
from dcc.tes import TesTask
from worker_agent.tes_runner import TaskRunner, _Cancelled, _output_files, plan_mounts


def task(**fields: object) -> TesTask:
    return TesTask.model_validate({"executors": [{"image": "x", "command": ["true"]}], **fields})


def test_mounts_are_the_outermost_folders_and_writable_if_anything_inside_is_written(tmp_path: Path) -> None:
    t = task(
        volumes=["/vol", "/vol/sub"],
        inputs=[{"path": "/data/ref/genome.fa", "content": "x"}, {"path": "/vol/in.txt", "content": "y"},
                {"path": "/res", "content": "", "type": "FILE"},
                {"path": "/lib", "url": "file:///x", "type": "DIRECTORY"}],
        outputs=[{"path": "/data/out/*.bam", "path_prefix": "/data/out", "url": "s3://b/o"},
                 {"path": "/lib/made.txt", "url": "s3://b/m"}],
    )
    got = {(m.target, m.read_only, m.source) for m in plan_mounts(t, tmp_path)}
    assert got == {
        ("/vol", False, tmp_path / "vol"),  # /vol/sub and /vol/in.txt live inside it
        ("/data/ref/genome.fa", True, tmp_path / "data/ref/genome.fa"),  # an input file alone: read-only
        ("/data/out", False, tmp_path / "data/out"),  # the wildcard's folder
        ("/res", True, tmp_path / "res"),
        ("/lib", False, tmp_path / "lib"),  # an input folder an output is written into becomes writable
    }


def test_a_volume_or_output_folder_in_an_input_folder_is_writable_alone(tmp_path: Path) -> None:
    t = task(inputs=[{"path": "/ref", "url": "file:///r", "type": "DIRECTORY"},
                     {"path": "/ref/extra.txt", "content": "x"}],
             volumes=["/ref/tmp", "/ref/tmp/deeper"], outputs=[{"path": "/ref/res/out.txt", "url": "s3://b/o"}])
    got = [(m.target, m.read_only) for m in plan_mounts(t, tmp_path)]
    assert got == [("/ref", True), ("/ref/res", False), ("/ref/tmp", False)]  # outer first, as the engine mounts


def test_wildcard_outputs_match_posix_patterns_and_strip_the_prefix(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    for name in ("a.txt", "b.txt", ".hidden.txt", "c.log", "sub/d.txt"):
        (out / name).write_text(name)
    t = task(outputs=[{"path": "/out/[ab].txt", "path_prefix": "/out", "url": "s3://b/run/"},
                      {"path": "/out/*/*.txt", "path_prefix": "/out", "url": "s3://b/deep"}])
    assert [(p.name, rel) for p, rel in _output_files(t.outputs[0], tmp_path)] == [
        ("a.txt", "a.txt"), ("b.txt", "b.txt")]
    assert [rel for _, rel in _output_files(t.outputs[1], tmp_path)] == ["sub/d.txt"]


def test_a_missing_file_output_is_an_error_and_a_link_is_not_followed(tmp_path: Path) -> None:
    t = task(outputs=[{"path": "/out/result", "url": "s3://b/r"}])
    with pytest.raises(StorageError, match="was not written"):
        _output_files(t.outputs[0], tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "result").symlink_to("/etc/passwd")
    with pytest.raises(StorageError, match="was not written"):
        _output_files(t.outputs[0], tmp_path)


class _EvilListing:
    """A bucket listing with a key that climbs out of the folder it is listed under."""

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        yield f"{prefix}ok.txt", 1
        yield f"{prefix}../../../../escaped.txt", 1

    def download(self, key: str, path: Path, *, progress: object = None) -> None:
        path.write_text(key)


def test_a_folder_input_never_writes_outside_the_sandbox(tmp_path: Path) -> None:
    runner = TaskRunner(runtime=None, store=None, fetch=None, locations=("s3://b/in/",),  # type: ignore[arg-type]
                        max_output_bytes=1 << 20)
    runner.locations._cache["s3://b/"] = _EvilListing()  # type: ignore[assignment]
    dest = tmp_path / "sandbox" / "data"
    with pytest.raises(StorageError):
        runner._fetch_folder("s3://b/in/set", dest)
    assert not list(tmp_path.rglob("escaped.txt"))
    assert (dest / "ok.txt").read_text() == "in/set/ok.txt"


class _Listing:
    def __init__(self, names: list[str]) -> None:
        self.names, self.downloaded = names, []  # type: list[str]

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        for name in self.names:
            yield f"{prefix}{name}", 1

    def download(self, key: str, path: Path, *, progress: object = None) -> None:
        self.downloaded.append(key)
        path.write_text("x")


def _runner(listing: _Listing) -> TaskRunner:
    runner = TaskRunner(runtime=None, store=None, fetch=None, locations=("s3://b/in/",),  # type: ignore[arg-type]
                        max_output_bytes=1 << 20)
    runner.locations._cache["s3://b/"] = listing  # type: ignore[assignment]
    return runner


def test_a_cancel_is_seen_between_inputs_and_between_a_folders_files(tmp_path: Path) -> None:
    listing = _Listing(["a", "b", "c"])
    runner = _runner(listing)
    t = task(inputs=[{"path": "/in/set", "url": "s3://b/in/set", "type": "DIRECTORY"},
                     {"path": "/in/one", "url": "s3://b/in/one"}])
    with pytest.raises(_Cancelled):  # cancelled once the first file is here: the rest are not fetched
        runner._prepare(t, tmp_path / "s1", cancelled=lambda: bool(listing.downloaded))
    assert listing.downloaded == ["in/set/a"]
    listing.downloaded.clear()
    with pytest.raises(_Cancelled):
        runner._prepare(t, tmp_path / "s2", cancelled=lambda: len(listing.downloaded) >= 3)
    assert listing.downloaded == ["in/set/a", "in/set/b", "in/set/c"]  # the folder, and not the next input


def test_a_cancel_stops_one_large_input_while_it_downloads(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "big").write_bytes(b"b" * (16 << 20))
    runner = TaskRunner(runtime=None, store=None, fetch=None,  # type: ignore[arg-type]
                        locations=(f"file://{tmp_path}/store/",), max_output_bytes=1 << 20)
    t = task(inputs=[{"path": "/in/big", "url": f"file://{tmp_path}/store/big"}])
    asked: list[int] = []

    def cancelled() -> bool:  # cancelled as the third piece is copied
        asked.append(1)
        return len(asked) >= 3

    with pytest.raises(_Cancelled):
        runner._prepare(t, tmp_path / "s", cancelled=cancelled)
    assert len(asked) == 3 and not (tmp_path / "s" / "in" / "big").exists()  # (16 pieces of 1 MiB otherwise)


def test_a_url_input_past_disk_gb_stops_as_its_download_passes_it(tmp_path: Path) -> None:
    written: list[int] = []

    def endless(url: str, dest: Path, *, progress: Callable[[int], None] | None = None) -> int:
        with dest.open("wb") as f:  # a server that never stops sending
            for piece in range(1, 1 << 20):
                f.write(b"u" * (1 << 20))
                written.append(piece)
                assert progress is not None
                progress(piece << 20)
        return 0

    runner = TaskRunner(runtime=None, store=None, fetch=endless, locations=(),  # type: ignore[arg-type]
                        max_output_bytes=1 << 20)
    t = task(inputs=[{"path": "/in/a", "content": "x" * 1000}, {"path": "/in/web", "url": "https://files.test/w"}],
             resources={"disk_gb": 4 / 1024})  # 4 MiB
    with pytest.raises(JobSystemError) as caught:
        runner._prepare(t, tmp_path / "s")
    assert caught.value.code == "disk_limit_exceeded" and not caught.value.retryable
    assert "inputs.1 (https://files.test/w): 4194304 bytes would take" in str(caught.value)
    assert len(written) == 4  # stopped at the piece that went past the room left (4 MiB - 1000 bytes)


def test_a_folder_input_with_no_files_is_the_tasks_error(tmp_path: Path) -> None:
    runner = _runner(_Listing([]))
    t = task(inputs=[{"path": "/in/set", "url": "s3://b/in/nothing-here", "type": "DIRECTORY"}])
    with pytest.raises(JobSystemError) as caught:
        runner._prepare(t, tmp_path / "s")
    assert caught.value.code == "input_fetch_failed" and not caught.value.retryable
    assert str(caught.value) == "inputs.0 (s3://b/in/nothing-here): no files under it"


def test_a_folder_input_holding_a_file_where_a_volume_goes_is_the_tasks_error(tmp_path: Path) -> None:
    runner = _runner(_Listing(["v", "w"]))  # the object 'v' lands where the volume /d/v is a folder
    t = task(inputs=[{"path": "/d", "url": "s3://b/in/set", "type": "DIRECTORY"}], volumes=["/d/v"])
    with pytest.raises(JobSystemError) as caught:
        runner._prepare(t, tmp_path / "s")
    assert caught.value.code == "input_fetch_failed" and not caught.value.retryable  # no retry mends it
    assert str(caught.value).startswith("inputs.0 (s3://b/in/set): ")


def test_a_fifo_is_not_an_object_and_opening_it_does_not_hang(tmp_path: Path) -> None:
    import os

    from dcc.local_storage import LocalStorage

    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(StorageError):  # no writer: a blocking open would wait forever
        LocalStorage(tmp_path).open("pipe")


@pytest.mark.parametrize(("fields", "says"), [
    ({"outputs": [{"path": "/o.txt", "url": "s3://b/k"}]},
     "outputs.0.path '/o.txt': an output directly under '/' is not supported (an output's folder is mounted into the "
     "containers, and '/' cannot be): have the executors write it in a folder, e.g. '/out/o.txt'"),
    ({"outputs": [{"path": "/*.txt", "path_prefix": "/", "url": "s3://b/k/"}]},
     "e.g. '/out/*.txt' with path_prefix '/out'"),
    ({"inputs": [{"path": "/a", "content": "x"}], "volumes": ["/a/v"]}, "lies in, the input file '/a'"),
    ({"volumes": ["/v/" + "c" * 256]}, "each part of a path may be at most 255 bytes"),
    ({"inputs": [{"path": "/a", "content": "x"}], "outputs": [{"path": "/a/b/c", "url": "s3://b/k"}]},
     "lies in the input file '/a'"),
    ({"resources": {"disk_gb": 1e308}}, "resources.disk_gb"),
    ({"inputs": [{"path": "/d", "content": "", "type": "DIRECTORY"}]}, "a DIRECTORY input cannot have content"),
    ({"resources": {"cpu_cores": "2"}}, "resources.cpu_cores: must be a JSON number, not a string"),
    ({"resources": {"cpu_cores": True}}, "resources.cpu_cores: must be a JSON number, not a boolean"),
    ({"resources": {"ram_gb": "1"}}, "resources.ram_gb: must be a JSON number, not a string"),
    ({"resources": {"disk_gb": False}}, "resources.disk_gb: must be a JSON number, not a boolean"),
    ({"resources": {"preemptible": "true"}}, "resources.preemptible: Input should be a valid boolean"),
    ({"executors": [{"image": "x", "command": ["a"], "ignore_error": "yes"}]}, "executors.0.ignore_error"),
    ({"executors": [{"image": "x", "command": ["a"], "ignore_error": 1}]}, "executors.0.ignore_error"),
    ({"inputs": [{"path": "/a", "content": "x", "streamable": 0}]}, "inputs.0.streamable"),
    ({"volumes": ["/vol"], "executors": [{"image": "x", "command": ["a"], "stdout": "/vol"}]},
     "executors.0.stdout '/vol' is a folder of the task (it holds '/vol'), not a file"),
    ({"inputs": [{"path": "/data/in/a", "content": "x"}],
      "executors": [{"image": "x", "command": ["a"], "stderr": "/data"}]},
     "executors.0.stderr '/data' is a folder of the task (it holds '/data/in/a'), not a file"),
    ({"inputs": [{"path": "/d", "content": "x", "type": "DIRECTORY"}]}, "a DIRECTORY input cannot have content"),
    ({"inputs": [{"path": "/in/a", "content": "x"}],
      "executors": [{"image": "x", "command": ["a"], "stdout": "/in/a"}]},
     "executors.0.stdout '/in/a' is the input '/in/a', which is read-only"),
    ({"inputs": [{"path": "/ref", "url": "file:///r", "type": "DIRECTORY"}],
      "executors": [{"image": "x", "command": ["a"]}, {"image": "x", "command": ["a"], "stderr": "/ref/sub/log"}]},
     "executors.1.stderr '/ref/sub/log' lies in the input directory '/ref', which is read-only"),
    ({"inputs": [{"path": "/in/a", "content": "x"}],
      "executors": [{"image": "x", "command": ["a"], "stdout": "/in/a/b"}]},
     "executors.0.stdout '/in/a/b' lies in the input file '/in/a'"),
])
def test_tasks_that_could_never_run_are_refused_at_create(fields: dict, says: str) -> None:
    from dcc.errors import InvalidJob
    from dcc.tes import parse_task

    with pytest.raises(InvalidJob, match=re.escape(says)):
        parse_task({"executors": [{"image": "x", "command": ["true"]}], **fields})


def test_an_executor_file_may_replace_an_input_that_a_volume_or_output_folder_holds() -> None:
    from dcc.tes import parse_task

    for writable in ({"volumes": ["/in"]}, {"outputs": [{"path": "/in/out.txt", "url": "s3://b/k"}]}):
        parse_task({"inputs": [{"path": "/in/a", "content": "x"}],
                    "executors": [{"image": "x", "command": ["true"], "stdout": "/in/a"}], **writable})


def test_file_urls_are_percent_decoded() -> None:
    from dcc.tes import normalize_url

    assert normalize_url("file:///srv/run/a%20b.txt") == "file:///srv/run/a b.txt"
    assert normalize_url("file:///srv/%2e%2e/etc/passwd") is None  # decoded before the '..' check
    assert normalize_url("file:///srv/a%00b") is None


def test_a_cancel_is_seen_between_uploaded_files(tmp_path: Path) -> None:
    (tmp_path / "dest").mkdir()
    runner = TaskRunner(runtime=None, store=None, fetch=None,  # type: ignore[arg-type]
                        locations=(f"file://{tmp_path}/dest/",), max_output_bytes=1 << 20)
    t = task(outputs=[{"path": "/out", "url": f"file://{tmp_path}/dest/run", "type": "DIRECTORY"}])
    sandbox = tmp_path / "sandbox"
    (sandbox / "out").mkdir(parents=True)
    for name in ("a", "b", "c"):
        (sandbox / "out" / name).write_text(name)
    uploaded, failures, stopped = runner._upload_outputs(t, sandbox, plan_mounts(t, sandbox),
                                                         cancelled=lambda: (tmp_path / "dest" / "run" / "a").exists())
    assert stopped and failures == []
    assert [u["path"] for u in uploaded] == ["/out/a"] and sorted(os.listdir(tmp_path / "dest" / "run")) == ["a"]


def test_numbers_and_booleans_are_taken_from_their_json_types() -> None:
    from dcc.tes import parse_task

    t = parse_task({"resources": {"cpu_cores": 2, "ram_gb": 1, "disk_gb": 0.5, "backend_parameters_strict": False},
                    "executors": [{"image": "x", "command": ["true"], "ignore_error": True}]})
    assert t.resources is not None and (t.resources.cpu_cores, t.resources.ram_gb) == (2, 1.0)
    assert t.executors[0].ignore_error is True


def test_an_empty_content_beside_a_url_is_no_content() -> None:
    from dcc.tes import parse_task

    t = parse_task({"inputs": [{"path": "/d", "url": "file:///r", "content": "", "type": "DIRECTORY"}],
                    "executors": [{"image": "x", "command": ["true"]}]})
    assert t.inputs[0].url == "file:///r"
