"""Benchmark: a job through dcc's local mode against the bare Docker SDK life cycle, and Redis commands per job.

Run after `bash scripts/setup.sh` with DOCKER_HOST set (scripts/docker-engine.sh prints it):

    .venv/bin/python bench/bench_core.py [--jobs 30]

Both sides run the same trivial container (`true` in the busybox test image) one at a time, in one run on
one machine; the figure that matters is the ratio of medians. Redis commands are counted from
`INFO commandstats` before and after a batch of jobs, split into submit / claim+run+finish / wait.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import docker
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dcc.settings import Settings  # noqa: E402
from tests.conftest import TEST_IMAGE, RedisServer  # noqa: E402
from tests.e2e_support import serve_local  # noqa: E402


def bare_lifecycle(client: docker.DockerClient, n: int) -> list[float]:
    """Seconds per create → start → wait → logs → remove of a trivial container.

    It has no network, as a dcc job has: networking disabled, so the engine sets up no network sandbox.
    """
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        c = client.containers.create(TEST_IMAGE, ["true"], network_mode="none", network_disabled=True)
        c.start()
        c.wait()
        c.logs()
        c.remove()
        times.append(time.perf_counter() - t0)
    return times


def command_counts(r: redis.Redis) -> dict[str, int]:
    stats = r.info("commandstats")
    return {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}


def diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    out = {k: after[k] - before.get(k, 0) for k in after}
    return {k: v for k, v in out.items() if v and k not in ("info", "config|resetstat")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "core.json")
    args = parser.parse_args()
    client = docker.from_env()
    bare_lifecycle(client, 3)  # warm up

    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            settings = Settings(redis_url=server.url, storage_url=f"{tmp}/storage")
            with serve_local(Path(tmp) / "local", settings, workers=1, reap_seconds=2.0) as (local, http):
                r = redis.Redis.from_url(server.url)

                def one_job() -> tuple[float, dict[str, int], dict[str, int]]:
                    c0 = command_counts(r)
                    t0 = time.perf_counter()
                    job = http.post("/v1/jobs", json={"image": TEST_IMAGE, "command": ["true"]}).json()
                    c1 = command_counts(r)
                    view = http.get(f"/v1/jobs/{job['id']}/wait", params={"timeout": 20}).json()
                    elapsed = time.perf_counter() - t0
                    assert view["state"] == "succeeded", view
                    time.sleep(0.3)  # let the container's removal and the idle worker settle
                    c2 = command_counts(r)
                    return elapsed, diff(c1, c0), diff(c2, c1)

                for _ in range(3):
                    one_job()
                dcc_times, bare_times = [], []
                submit_cmds: list[dict[str, int]] = []
                rest_cmds: list[dict[str, int]] = []
                for _ in range(args.jobs):  # interleave so drift hits both sides alike
                    bare_times += bare_lifecycle(client, 1)
                    elapsed, sub, rest = one_job()
                    dcc_times.append(elapsed)
                    submit_cmds.append(sub)
                    rest_cmds.append(rest)
        finally:
            server.stop()

    bare = statistics.median(bare_times)
    ours = statistics.median(dcc_times)

    def per_job(rows: list[dict[str, int]]) -> dict[str, float]:
        keys = sorted({k for row in rows for k in row})
        return {k: round(sum(row.get(k, 0) for row in rows) / len(rows), 2) for k in keys}

    sub, rest = per_job(submit_cmds), per_job(rest_cmds)
    result = {
        "jobs": args.jobs,
        "bare_docker_median_ms": round(bare * 1000, 1),
        "dcc_submit_to_result_median_ms": round(ours * 1000, 1),
        "ratio": round(ours / bare, 3),
        "redis_commands_per_job": round(sum(sub.values()) + sum(rest.values()), 1),
        "redis_commands_submit": sub,
        "redis_commands_rest": rest,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    main()
