"""Benchmark: fast jobs and throughput, against bare Docker, in one run on one machine.

    .venv/bin/python bench/bench_fast.py [--jobs 30] [--burst 200] [--slots 2]

1. Fast job: `POST /v1/jobs {"fast": true}` → the reply carries the result, vs the bare Docker SDK life
   cycle (create, start, wait, logs, remove) of the same trivial container; medians, interleaved.
2. Throughput: --burst standard jobs through one worker with --slots slots (submit all, wait for all), vs
   the same number of bare life cycles on --slots threads.
3. Redis commands per fast job (INFO commandstats over the fast-job runs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_core import bare_lifecycle, command_counts, diff  # noqa: E402
from dcc.settings import Settings  # noqa: E402
from tests.conftest import TEST_IMAGE, RedisServer  # noqa: E402
from tests.e2e_support import serve_local  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fast.json")
    args = parser.parse_args()
    client = docker.from_env()
    bare_lifecycle(client, 3)

    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            settings = Settings(redis_url=server.url, storage_url=f"{tmp}/storage")
            with serve_local(Path(tmp) / "local", settings, workers=args.slots, reap_seconds=2.0) as (_, http):
                r = redis.Redis.from_url(server.url)
                body = {"image": TEST_IMAGE, "command": ["true"], "fast": True}
                for _ in range(3):
                    http.post("/v1/jobs", json=body)
                fast, bare, cmds = [], [], []
                for _ in range(args.jobs):
                    bare += bare_lifecycle(client, 1)
                    time.sleep(0.3)  # the previous container's removal happens off the path: let it finish
                    c0 = command_counts(r)
                    t0 = time.perf_counter()
                    view = http.post("/v1/jobs", json=body).json()
                    fast.append(time.perf_counter() - t0)
                    assert view["state"] == "succeeded", view
                    time.sleep(0.3)
                    cmds.append(diff(command_counts(r), c0))

                def bare_one(_: int) -> None:
                    bare_lifecycle(client, 1)

                t0 = time.perf_counter()
                with ThreadPoolExecutor(args.slots) as pool:
                    list(pool.map(bare_one, range(args.burst)))
                bare_burst = time.perf_counter() - t0

                t0 = time.perf_counter()
                ids = [http.post("/v1/jobs", json={"image": TEST_IMAGE, "command": ["true"]}).json()["id"]
                       for _ in range(args.burst)]
                # The queue is FIFO, so the last job submitted is (about) the last to end: block on it with the
                # long-poll (no load while jobs run), then confirm that nothing is queued or running.
                while http.get(f"/v1/jobs/{ids[-1]}/wait", params={"timeout": 20}).json()["state"] in (
                        "queued", "running"):
                    pass
                while True:
                    depths = http.get("/v1/queues").json()
                    if not depths["running"] and not sum(depths["queues"].values()):
                        break
                    time.sleep(0.05)
                dcc_burst = time.perf_counter() - t0
                states = {http.get(f"/v1/jobs/{i}").json()["state"] for i in ids}
                assert states == {"succeeded"}, states
        finally:
            server.stop()

    keys = sorted({k for row in cmds for k in row})
    per_fast = {k: round(sum(row.get(k, 0) for row in cmds) / len(cmds), 2) for k in keys}
    result = {
        "fast_jobs": args.jobs,
        "bare_docker_median_ms": round(statistics.median(bare) * 1000, 1),
        "fast_submit_to_reply_median_ms": round(statistics.median(fast) * 1000, 1),
        "fast_ratio": round(statistics.median(fast) / statistics.median(bare), 3),
        "burst_jobs": args.burst,
        "slots": args.slots,
        "bare_parallel_jobs_per_s": round(args.burst / bare_burst, 2),
        "dcc_jobs_per_s": round(args.burst / dcc_burst, 2),
        "throughput_ratio": round(bare_burst / dcc_burst, 3),
        "redis_commands_per_fast_job": round(sum(per_fast.values()), 1),
        "redis_commands_fast_detail": per_fast,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
