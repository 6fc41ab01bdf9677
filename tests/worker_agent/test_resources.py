"""GPU and CPU detection, fed recorded nvidia-smi outputs through a stand-in nvidia-smi on PATH."""

from __future__ import annotations

import http.server
import socket
import threading
from pathlib import Path

import pytest

from worker_agent.resources import detect, ec2_instance_id, parse_nvidia_smi, run_nvidia_smi

RECORDED = Path(__file__).parent / "nvidia_smi"


def fake_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recording: str, exit_code: int = 0) -> None:
    """Put an executable `nvidia-smi` first on PATH that prints ``recording`` and exits with ``exit_code``."""
    exe = tmp_path / "nvidia-smi"
    exe.write_text(f"#!/bin/sh\ncat '{RECORDED / recording}'\nexit {exit_code}\n")
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
