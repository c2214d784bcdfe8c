"""Measure RRD writes: one rrdtool call per file per collection against one per sample.

In a temporary directory, 200 VM files get an hour of samples each (12 at step 300): (a) all
through one `update_many` call, which makes one rrdtool update per file, and (b) through one
`update_one` call per sample, as a collector that writes each sample as it reads it would.
Prints both times (best of three rounds), their ratio and one VM file's size against the
200 KiB budget.

    .venv/bin/python bench/rrd_updates.py      (BENCH_RRD_VMS and BENCH_RRD_SAMPLES to change)
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitoring.rrd import METRICS, RRDStore  # noqa: E402

VMS = int(os.environ.get("BENCH_RRD_VMS", "200"))
SAMPLES = int(os.environ.get("BENCH_RRD_SAMPLES", "12"))
STEP = 300
BUDGET_KIB = 200
ROUNDS = 3


def make_samples(end: int) -> dict[tuple[str, str], list[tuple[int, dict[str, float | None]]]]:
    """Return SAMPLES samples ending at `end` for each of VMS VMs."""
    rng = random.Random(1)
    batch = {}
    for vm in range(VMS):
        batch[("vm", f"bench-{vm}")] = [
            (end - (SAMPLES - i) * STEP, {
                "cpu": rng.uniform(0, 100),
                "memory": rng.uniform(2**28, 2**32),
                **{metric: rng.uniform(0, 2**24) for metric in METRICS[2:]},
            })
            for i in range(1, SAMPLES + 1)
        ]
    return batch


def prepare(directory: Path, batch: dict, start: int) -> RRDStore:
    """Create every VM's file, so only the writes are timed."""
    store = RRDStore(directory, step=STEP)
    for kind, key in batch:
        store.ensure(kind, key, start=start)
    return store


def timed_round(directory: Path, batch: dict, start: int, end: int) -> tuple[float, float, float]:
    """Write the batch both ways into fresh files; return both times and a file's size in KiB."""
    batched = prepare(directory / "batched", batch, start)
    single = prepare(directory / "single", batch, start)

    began = time.perf_counter()
    batched.update_many(batch)
    batched_seconds = time.perf_counter() - began

    began = time.perf_counter()
    for (kind, key), samples in batch.items():
        for at, values in samples:
            single.update_one(kind, key, at, values)
    single_seconds = time.perf_counter() - began

    for store in (batched, single):
        assert store.last_update("vm", "bench-0") == end
    size_kib = batched.path_for("vm", "bench-0").stat().st_size / 1024
    return batched_seconds, single_seconds, size_kib


def main() -> None:
    """Time batched and per-sample writes (best of ROUNDS) and print the comparison."""
    end = int(time.time()) // STEP * STEP
    batch = make_samples(end)
    start = end - (SAMPLES + 1) * STEP
    results = []
    for round_ in range(ROUNDS):
        with tempfile.TemporaryDirectory(prefix="rrd-bench-") as tmp:
            results.append(timed_round(Path(tmp) / str(round_), batch, start, end))
    batched_seconds = min(r[0] for r in results)
    single_seconds = min(r[1] for r in results)
    size_kib = results[0][2]

    writes = VMS * SAMPLES
    print(f"RRD updates: {VMS} VM files x {SAMPLES} samples = {writes} samples, step {STEP} s, "
          f"best of {ROUNDS}")
    print(f"  batched (one rrdtool update per file): {batched_seconds:8.3f} s "
          f"({VMS} calls, {writes / batched_seconds:,.0f} samples/s)")
    print(f"  per sample (one update per sample):   {single_seconds:8.3f} s "
          f"({writes} calls, {writes / single_seconds:,.0f} samples/s)")
    print(f"  ratio: batched is {single_seconds / batched_seconds:.1f}x faster")
    verdict = "within" if size_kib <= BUDGET_KIB else "OVER"
    print(f"  one VM file: {size_kib:.1f} KiB ({verdict} the {BUDGET_KIB} KiB budget)")


if __name__ == "__main__":
    main()
