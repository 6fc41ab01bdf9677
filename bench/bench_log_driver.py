"""Benchmark: Docker's ``local`` log driver (what job containers use) against its default ``json-file``.

    python bench/bench_log_driver.py [--runs 30] [--lines 2000000]   # writes bench/results/log_driver.json

Two measures, each driver interleaved with the other in one run, on the test image (``dcc-busybox:latest``),
networking disabled as job containers have it:
- a trivial container's life cycle (create, start, wait, read both streams in one request, remove), median;
- a container printing ``--lines`` two-byte lines: how long it runs, and how long reading its output back takes.
  The ``local`` driver gets a limit far above the output here, so nothing is dropped and both read it all.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import docker
from docker.types import LogConfig

ROOT = Path(__file__).resolve().parent.parent
DRIVERS = {"json-file": LogConfig(type="json-file"),
           "local": LogConfig(type="local", config={"max-size": "1g", "max-file": "2", "compress": "false"})}


def life_cycle(client: docker.DockerClient, image: str, command: list[str], log_config: LogConfig
               ) -> tuple[float, float, int]:
    """Seconds from create to exit, seconds to read the output back, and the bytes read."""
    started = time.perf_counter()
    container = client.containers.create(image, command, log_config=log_config, network_disabled=True,
                                         network_mode="none")
    try:
        container.start()
        container.wait()
        ran = time.perf_counter() - started
        api = client.api
        reply = api.get(f"{api.base_url}/containers/{container.id}/logs", params={"stdout": 1, "stderr": 1},
                        stream=True)
        size = sum(len(chunk) for chunk in reply.iter_content(chunk_size=1 << 16))
        return ran, time.perf_counter() - started - ran, size
    finally:
        container.remove(force=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--lines", type=int, default=2_000_000)
    parser.add_argument("--image", default="dcc-busybox:latest")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "log_driver.json")
    args = parser.parse_args()
    client = docker.from_env(timeout=600)
    trivial: dict[str, list[float]] = {name: [] for name in DRIVERS}
    for _ in range(args.runs):
        for name, config in DRIVERS.items():
            ran, read, _ = life_cycle(client, args.image, ["true"], config)
            trivial[name].append(ran + read)
    result: dict[str, Any] = {"runs": args.runs, "lines": args.lines}
    for name, config in DRIVERS.items():
        ran, read, size = life_cycle(client, args.image, ["sh", "-c", f"yes | head -n {args.lines}"], config)
        result[name] = {"trivial_median_ms": round(statistics.median(trivial[name]) * 1000, 1),
                        "lines_run_s": round(ran, 2), "lines_read_s": round(read, 2), "lines_bytes_read": size}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
