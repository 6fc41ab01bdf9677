"""GPU and CPU detection, fed recorded nvidia-smi outputs through a stand-in nvidia-smi on PATH."""

from __future__ import annotations

import http.server
import socket
import threading
from pathlib import Path

import pytest

from worker_agent.resources import (
    ResourceError,
    detect,
    detect_gpu_worker,
    ec2_instance_id,
    parse_nvidia_smi,
    run_nvidia_smi,
)

RECORDED = Path(__file__).parent / "nvidia_smi"


def fake_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recording: str, exit_code: int = 0,
                    stderr: bool = False) -> None:
    """Put an executable `nvidia-smi` first on PATH that prints ``recording`` (on stderr if ``stderr``) and exits
    with ``exit_code``."""
    exe = tmp_path / "nvidia-smi"
    exe.write_text(f"#!/bin/sh\ncat '{RECORDED / recording}'{' >&2' if stderr else ''}\nexit {exit_code}\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")


@pytest.mark.parametrize(("recording", "count", "name"), [
    ("gpus-0.csv", 0, None), ("gpus-1.csv", 1, "NVIDIA A10G"), ("gpus-4.csv", 4, "Tesla T4"),
    ("gpus-8.csv", 8, "NVIDIA A100-SXM4-80GB"),
])
def test_detects_gpus_from_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recording: str, count: int,
                                      name: str | None) -> None:
    fake_nvidia_smi(tmp_path, monkeypatch, recording)
    found = detect(environ={}, cpu_count=lambda: 16)
    assert len(found.gpus) == count
    assert [g.index for g in found.gpus] == [str(i) for i in range(count)]
    assert len({g.uuid for g in found.gpus}) == count and all(g.uuid.startswith("GPU-") for g in found.gpus)
    if name:
        assert {g.name for g in found.gpus} == {name} and found.gpus[0].memory_mib > 10000
    assert (found.gpu_slots, found.cpu_slots) == (count, 16 - count)


def test_driver_error_means_no_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvidia_smi(tmp_path, monkeypatch, "driver-error.txt", exit_code=9)
    assert run_nvidia_smi() is None
    assert detect(environ={}, cpu_count=lambda: 4).gpus == ()


def test_no_nvidia_smi_means_no_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    found = detect(environ={}, cpu_count=lambda: 2)
    assert found.gpus == () and found.cpu_slots == 2


def test_a_gpu_worker_looks_again_while_the_driver_loads(tmp_path: Path) -> None:
    said = [None, (RECORDED / "driver-error.txt").read_text(), (RECORDED / "gpus-4.csv").read_text()]
    slept: list[float] = []
    found = detect_gpu_worker(wait_seconds=300, environ={}, query=lambda: said.pop(0), cpu_count=lambda: 16,
                              sleep=slept.append, clock=lambda: 100.0 + sum(slept))
    assert [g.index for g in found.gpus] == ["0", "1", "2", "3"] and slept == [5.0, 5.0] and not said


def test_a_gpu_worker_that_never_finds_a_gpu_gives_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    calls: list[int] = []
    with pytest.raises(ResourceError, match=r"found no GPU within 20 s \(DCC_GPU_WAIT_SECONDS\)"):
        detect_gpu_worker(wait_seconds=20, environ={}, query=lambda: calls.append(1) or None,
                          sleep=slept.append, clock=lambda: sum(slept))
    assert slept == [5.0] * 4 and len(calls) == 5  # at 0, 5, 10, 15 and 20 s
    with pytest.raises(ResourceError, match="DCC_GPUS=0 turns GPUs off"):
        detect_gpu_worker(wait_seconds=20, environ={"DCC_GPUS": "0"}, query=lambda: None)
    # the worker itself exits, naming why, before it registers anywhere (the scaler then replaces the instance)
    from dcc.settings import Settings
    from worker_agent.__main__ import build_worker

    monkeypatch.setenv("PATH", str(tmp_path))  # (no nvidia-smi)
    for name, value in {"DCC_WORKER_CLASS": "gpu", "DCC_GPU_WAIT_SECONDS": "0"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit, match="worker: DCC_WORKER_CLASS=gpu, but nvidia-smi found no GPU within 0 s"):
        build_worker(Settings(redis_url="redis://127.0.0.1:1", storage_url=str(tmp_path / "s")),
                     workdir=tmp_path / "w")


def test_environment_overrides_detection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvidia_smi(tmp_path, monkeypatch, "gpus-8.csv")
    assert len(detect(environ={"DCC_GPUS": "2"}).gpus) == 2
    assert detect(environ={"DCC_GPUS": "0"}).gpus == ()
    assert detect(environ={"DCC_CPUS": "3", "DCC_GPUS": "0"}).cpus == 3


def test_cpu_slots_never_drop_below_one() -> None:
    found = detect(environ={"DCC_CPUS": "4"}, query=lambda: (RECORDED / "gpus-8.csv").read_text())
    assert (found.gpu_slots, found.cpu_slots) == (8, 1)


def test_garbage_output_is_refused_by_the_parser() -> None:
    with pytest.raises(ValueError):
        parse_nvidia_smi("Failed to initialize NVML: Unknown Error\n")
    assert detect(environ={}, query=lambda: "Failed to initialize NVML: Unknown Error\n").gpus == ()


def test_a_field_nvidia_smi_cannot_report_or_a_warning_line_hides_no_gpu(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvidia_smi(tmp_path, monkeypatch, "gpus-3-na.csv")
    found = detect(environ={}, cpu_count=lambda: 8).gpus
    assert [(g.index, g.memory_mib) for g in found] == [("0", 40960), ("1", None), ("2", None)]
    fake_nvidia_smi(tmp_path, monkeypatch, "gpus-1-warning.csv")   # (memory with its unit, too)
    assert [(g.index, g.name, g.memory_mib) for g in detect(environ={}).gpus] == [("0", "Tesla T4", 15360)]
    assert parse_nvidia_smi("١, GPU-x, fake, 1\n0, GPU-y, real, 2\n")[0].index == "0"  # a non-ASCII digit is no index


def test_a_driver_message_in_another_encoding_means_no_gpus_not_a_crash(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvidia_smi(tmp_path, monkeypatch, "driver-error-latin1.txt", exit_code=9, stderr=True)
    assert run_nvidia_smi() is None
    assert detect(environ={}, cpu_count=lambda: 2).gpus == ()


def test_gpus_nvidia_smi_lists_beside_an_error_are_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvidia_smi(tmp_path, monkeypatch, "gpus-1-fallen.csv", exit_code=15)   # one GPU fell off the bus
    assert [g.index for g in detect(environ={}).gpus] == ["1"]


def test_gpus_asked_by_index_or_uuid_and_gpus_that_are_not_there(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvidia_smi(tmp_path, monkeypatch, "gpus-4.csv")
    assert [g.index for g in detect(environ={"DCC_GPUS": "1,3"}).gpus] == ["1", "3"]
    assert [g.index for g in detect(environ={"DCC_GPUS": "GPU-00000002-5c5e-7a1f-2b3d-04deadbeef2"}).gpus] == ["2"]
    assert len(detect(environ={"DCC_GPUS": " 4 "}).gpus) == 4 and len(detect(environ={"DCC_GPUS": ""}).gpus) == 4
    with pytest.raises(ResourceError, match="DCC_GPUS=8: nvidia-smi found no such GPUs"):
        detect(environ={"DCC_GPUS": "8"})
    with pytest.raises(ResourceError, match="DCC_GPUS=1,7"):
        detect(environ={"DCC_GPUS": "1,7"})
    with pytest.raises(ResourceError, match="names a GPU twice"):  # (by its index and by its UUID)
        detect(environ={"DCC_GPUS": "0,GPU-00000000-5c5e-7a1f-2b3d-04deadbeef0"})
    # slots without devices: as many as asked, whatever the machine has
    slots = detect(environ={"DCC_GPUS": "8", "DISABLE_NVIDIA_RUNTIME": " True "}).gpus
    assert [g.index for g in slots] == [str(i) for i in range(8)]
    monkeypatch.setenv("PATH", str(tmp_path / "none"))
    assert len(detect(environ={"DCC_GPUS": "2", "DISABLE_NVIDIA_RUNTIME": "on"}).gpus) == 2


@pytest.mark.parametrize(("name", "value"), [("DCC_GPUS", "-1"), ("DCC_GPUS", "abc"), ("DCC_GPUS", "2.0"),
                                             ("DCC_GPUS", "1,,2"), ("DCC_GPUS", "1,1"), ("DCC_CPUS", "0"),
                                             ("DCC_CPUS", "-4"), ("DCC_CPUS", "1.5"), ("DCC_CPUS", "x")])
def test_a_malformed_override_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ResourceError, match=name):
        detect(environ={name: value, "DISABLE_NVIDIA_RUNTIME": "true"}, query=lambda: None)


def test_an_empty_override_is_no_override() -> None:
    found = detect(environ={"DCC_CPUS": "", "DCC_GPUS": " "}, query=lambda: None, cpu_count=lambda: 6)
    assert (found.cpus, found.gpus) == (6, ())


class _Imds(http.server.BaseHTTPRequestHandler):
    """A stand-in for EC2 instance metadata that, like IMDSv2 with hop limit 1, wants a session token."""

    def do_PUT(self) -> None:  # noqa: N802
        ok = self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
        self.send_response(200 if ok else 400)
        self.end_headers()
        self.wfile.write(b"tok-123" if ok else b"")

    def do_GET(self) -> None:  # noqa: N802
        if self.headers.get("X-aws-ec2-metadata-token") != "tok-123":
            self.send_response(401)
            self.end_headers()
            return
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"i-0abc123def4567890")

    def log_message(self, *args: object) -> None:
        pass


def test_worker_id_is_the_instance_id_from_imdsv2() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Imds)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert ec2_instance_id(base_url=f"http://127.0.0.1:{server.server_address[1]}") == "i-0abc123def4567890"
    finally:
        server.shutdown()
        server.server_close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    assert ec2_instance_id(base_url=f"http://127.0.0.1:{closed}", timeout=0.5) is None  # not on EC2
