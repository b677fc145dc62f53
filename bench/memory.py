"""Rows ``memory`` and ``workflow``: peak memory and the default run end to end.

Each measurement runs in a fresh process, so that one peak cannot hide another.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench.common import REPO, TreeMemorySampler, cores, mib


def _child(args: Sequence[str]) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "bench.peak_child", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        command = " ".join(map(str, args))
        raise RuntimeError(f"bench.peak_child {command} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_figures(
    counts: Sequence[int], tmp: Path, *, size: int = 160, embedded: bool = False
) -> dict:
    """Peak resident memory of preprocessing and of the wavelets, per image count.

    Returns
    -------
    dict
        ``runs``: one record per count with ``prepare`` and ``precompute``
        (images, seconds, maxrss_mib); ``growth``: largest over smallest count's
        peak, per step.
    """
    runs = []
    for n in counts:
        faces, coeffs = tmp / f"faces_{n}.h5", tmp / f"wavelets_{n}.h5"
        extra = ["--embedded"] if embedded else []
        prepare = _child(["prepare", faces, "--images", n, "--size", size, *extra])
        precompute = _child(["precompute", faces, coeffs])
        runs.append({"requested": n, "prepare": prepare, "precompute": precompute})
        for path in (faces, coeffs):
            path.unlink(missing_ok=True)
    first, last = runs[0], runs[-1]
    growth = {
        step: round(last[step]["maxrss_mib"] / first[step]["maxrss_mib"], 3)
        for step in ("prepare", "precompute")
    }
    return {"runs": runs, "growth": growth}


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def run_tree(command: Sequence[str], log: Path, *, cwd: Path = REPO) -> dict:
    """Run ``command``; wall time, CPU time and peak memory of its process tree.

    CPU time comes from ``getrusage(RUSAGE_CHILDREN)`` (every descendant that was
    waited for); memory from polling /proc (:class:`TreeMemorySampler`).
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_start = _load()
    tick = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        with TreeMemorySampler(proc.pid) as sampler:
            code = proc.wait()
    wall = time.perf_counter() - tick
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "returncode": code,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "cpu_share": round(cpu / wall, 2) if wall else None,
        "peak_tree_mib": mib(sampler.peak_total),
        "peak_process_mib": mib(sampler.peak_single),
        "load_average_start": load_start,
        "load_average_end": _load(),
    }


def workflow_figures(tmp: Path, *, jobs: int = 2, run: str = "bench_default") -> dict:
    """``snakemake --cores {jobs} all`` of the default config, outputs under ``tmp``.

    Besides the wall time, ``idle_bound_s`` = CPU time / min(jobs, cores) is the wall
    time the same work would need on an idle machine with perfect overlap (a lower
    bound: job start-up and the dependency chain add to it).
    """
    log = tmp / "snakemake.log"
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--cores",
        str(jobs),
        "all",
        "--config",
        f"run={run}",
        f"results={tmp / 'results'}",
    ]
    record = run_tree(command, log)
    record["command"] = " ".join(command[2:])
    record["idle_bound_s"] = round(record["cpu_s"] / min(jobs, cores()), 1)
    if record["returncode"]:
        record["log_tail"] = log.read_text()[-3000:]
    bench_dir = tmp / "results" / run / "benchmarks"
    if bench_dir.is_dir():
        record["jobs"] = _job_seconds(bench_dir)
    return record


def _job_seconds(folder: Path) -> dict[str, float]:
    """Seconds per job from Snakemake's ``benchmark:`` files."""
    out = {}
    for path in sorted(folder.glob("*.tsv")):
        lines = path.read_text().splitlines()
        if len(lines) >= 2:
            out[path.stem] = round(float(lines[1].split("\t")[0]), 1)
    return out
