"""The SLURM profile, and the workflow on a real single-node SLURM through it.

The first tests read profiles/slurm and dry-run the workflow with it (seconds). The
tests marked ``slurm`` install Debian's SLURM and munge, start a one-node cluster with
one pretend GPU (tests/slurm/start.sh, stopped again by tests/slurm/stop.sh), submit a
small version of the default run through the profile and compare it with the same run
done locally, then stop a training job with SIGTERM and check that its retry resumes
from the checkpoint. They need root on a Debian-like machine and run only with
``MSPRIOR_SLURM_TESTS=1``; they take a few minutes.
"""

from __future__ import annotations

import collections
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "profiles" / "slurm" / "config.v8+.yaml"
SLURM_SCRIPTS = ROOT / "tests" / "slurm"
TRAIN_RULES = ("train_lowpass", "train_conditional", "train_flat")
# The test cluster (tests/slurm/common.sh): partition, and an account name (there is no
# accounting database, so SLURM takes any account as a label).
PARTITION = os.environ.get("MSPRIOR_SLURM_PARTITION", "debug")
ACCOUNT = "msprior_test"
STATE_DIR = Path(
    os.environ.get("MSPRIOR_SLURM_STATE_DIR", "/var/lib/msprior-slurm-test")
)
# A small version of the default run (one receptive field, short training, short
# sampling): four networks, trained one after the other on the single pretend GPU.
SMALL_RUN = {
    "networks": {"receptive_fields": [5]},
    "train": {"max_steps": 30, "validate_every": 10, "checkpoint_every": 10},
    "sample": {
        "rf": 5,
        "max_steps": 20,
        "n_samples": 2,
        "batch_size": 2,
        "superres_images": 1,
        "superres_per_image": 1,
        "inpaint_images": 1,
    },
}
# The SIGTERM test trains the low-pass network alone, long enough (about 30 s on a
# busy 2-core machine) to be caught between its first logged step and its end.
LONG_STEPS = 1000
# max_steps counts steps at the finest scale: the level-2 low-pass trains 4x as many.
LONG_LOWPASS = {"train": {"max_steps": LONG_STEPS // 4, "validate_every": 10}}
SNAKEMAKE_TIMEOUT_S = 900


def load_profile() -> dict:
    """Return profiles/slurm/config.v8+.yaml, anchors resolved."""
    return yaml.safe_load(PROFILE.read_text())


# ------------------------------------------------------------------ the profile alone


def test_profile_sets_partition_account_and_gpu_model_once() -> None:
    text = PROFILE.read_text()
    for anchor in ("partition", "account", "gpu_model"):
        defined = re.findall(rf"^\s+\w+: &{anchor} ", text, re.M)
        assert len(defined) == 1, f"&{anchor} must be defined exactly once"
    profile = load_profile()
    defaults = profile["default-resources"]
    rules = profile["set-resources"]
    assert set(rules) == set(TRAIN_RULES)
    for rule, res in rules.items():
        assert res["gpu"] == 1, rule
        assert res["cpus_per_gpu"] >= 1, rule
        assert res["runtime"] > 0 and res["mem_mb"] > 0, rule
        assert res["slurm_partition"] == defaults["slurm_partition"], rule
        assert res["slurm_account"] == defaults["slurm_account"], rule
        assert res["gpu_model"] == rules["train_lowpass"]["gpu_model"], rule
    # cpus_per_task would win over cpus_per_gpu in the plugin's sbatch call.
    assert "cpus_per_task" not in defaults
    assert profile["executor"] == "slurm" and profile["retries"] >= 1


def test_profile_comments_every_entry() -> None:
    lines = PROFILE.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        commented = "#" in line or lines[i - 1].lstrip().startswith("#")
        assert commented, f"line {i + 1} has no comment: {line!r}"


def test_dry_run_through_the_profile_asks_a_gpu_for_training_only(tmp_path) -> None:
    pytest.importorskip("snakemake_executor_plugin_slurm")
    # The default config asks for no GPU: here it can come only from the profile.
    out = snakemake(
        ["all", "--profile", "profiles/slurm", "--dry-run"], "dry", tmp_path
    )
    # A dry run lists every job with its resources.
    jobs = re.findall(r"^(?:localrule|rule) (\w+):\n(.*?)\n\n", out, re.S | re.M)
    assert set(TRAIN_RULES) <= {rule for rule, _ in jobs}, out[-3000:]
    for rule, body in jobs:
        resources = re.search(r"^\s+resources: (.*)$", body, re.M)
        gpu = bool(resources) and "gpu=1" in resources[1].split(", ")
        assert gpu == (rule in TRAIN_RULES), (rule, body)


# ----------------------------------------------------------------- the real SLURM


def _slurm_skip_reason() -> str | None:
    if os.environ.get("MSPRIOR_SLURM_TESTS") != "1":
        return "set MSPRIOR_SLURM_TESTS=1 to install and start a real SLURM here"
    if os.geteuid() != 0:
        return "installing and starting SLURM needs root"
    if shutil.which("apt-get") is None or not Path("/etc/debian_version").exists():
        return "the SLURM test cluster is installed with Debian's apt-get"
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        return "snakemake-executor-plugin-slurm is missing (pip install -e '.[slurm]')"
    return None


needs_slurm = pytest.mark.skipif(
    _slurm_skip_reason() is not None, reason=str(_slurm_skip_reason())
)


def snakemake(
    args: list[str],
    run: str,
    results: Path,
    *,
    overrides: dict | None = None,
    background: bool = False,
) -> str | subprocess.Popen:
    """Run Snakemake in the repository root on run ``run``, outputs under ``results``.

    ``overrides`` is merged into config/config.yaml (through a --configfile: values
    given with --config would all be strings). Returns Snakemake's combined output,
    or the running process when ``background``; the output goes to
    ``results / f"{run}.log"``.
    """
    results.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "snakemake", "--workflow-profile", "none", *args]
    if overrides:
        configfile = results / f"{run}.config.yaml"
        configfile.write_text(yaml.safe_dump(overrides))
        cmd += ["--configfile", str(configfile)]
    cmd += ["--config", f"run={run}", f"results={results}"]
    log = results / f"{run}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True
        )
    if background:
        return proc
    try:
        code = proc.wait(timeout=SNAKEMAKE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.terminate()
        proc.wait(timeout=60)
        raise
    text = log.read_text()
    assert code == 0, f"snakemake {' '.join(args)} failed:\n{text[-5000:]}"
    return text


def cluster_profile(directory: Path) -> Path:
    """Copy profiles/slurm with the test cluster's partition, account and sizes.

    Everything else (executor, retries, GPU requests, ...) stays the profile's own.
    """
    profile = load_profile()
    profile["default-resources"].update(
        slurm_partition=PARTITION, slurm_account=ACCOUNT, mem_mb=1000, runtime=30
    )
    for res in profile["set-resources"].values():
        # The pretend GPU has no model name; the node has 2 CPUs and little memory.
        res.update(
            slurm_partition=PARTITION,
            slurm_account=ACCOUNT,
            gpu_model="",
            cpus_per_gpu=1,
            mem_mb=2000,
            runtime=30,
        )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / PROFILE.name).write_text(yaml.safe_dump(profile, sort_keys=False))
    return directory


def slurm_args(profile: Path, slurm_logs: Path) -> list[str]:
    """Snakemake options of a run through ``profile`` on the test cluster."""
    return [
        "--profile",
        str(profile),
        # No accounting database: poll with squeue (MinJobAge on the test cluster
        # is long enough for it), starting 3 s after submission.
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "3",
        "--slurm-logdir",
        str(slurm_logs),
        "--slurm-keep-successful-logs",
        "--latency-wait",
        "5",
    ]


def run_id(log: str) -> str:
    """The SLURM executor's run ID: the job name of all its sbatch jobs."""
    match = re.search(r"SLURM run ID: (\S+)", log)
    assert match, "no 'SLURM run ID' in Snakemake's output"
    return match[1]


def slurm_jobs(name: str) -> list[dict[str, str]]:
    """The jobs called ``name`` that slurmctld still knows, finished ones included."""
    fields = ["JobID", "Comment", "State", "tres-per-job"]
    out = subprocess.run(
        ["squeue", "--states=all", "--noheader", f"--name={name}"]
        + ["--Format=" + ",".join(f"{f}:|" for f in fields)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    keys = ["id", "comment", "state", "tres"]
    return [dict(zip(keys, line.split("|"), strict=False)) for line in out.splitlines()]


def rule_of(comment: str) -> str:
    """The rule in the sbatch --comment of the executor: rule_<name>[_wildcards_...]."""
    return re.sub(r"_wildcards_.*$", "", comment.removeprefix("rule_"))


def job_counts(log: str) -> dict[str, int]:
    """Jobs per rule in the first 'Job stats' table of Snakemake's output."""
    table = log.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    rows = re.findall(r"^(\w+)\s+(\d+)$", table, re.M)
    return {rule: int(n) for rule, n in rows if rule != "total"}


@pytest.fixture(scope="module")
def slurm_cluster():
    """Start the test cluster for this module; stop it after if this started it."""
    reason = _slurm_skip_reason()
    if reason:
        pytest.skip(reason)
    started_before = (STATE_DIR / "started").exists()
    tick = time.perf_counter()
    start = subprocess.run(
        ["bash", str(SLURM_SCRIPTS / "start.sh")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert start.returncode == 0, start.stderr
    # start.sh is idempotent: a second call finds everything running.
    again = subprocess.run(
        ["bash", str(SLURM_SCRIPTS / "start.sh")], capture_output=True, text=True
    )
    assert again.returncode == 0 and "already running" in again.stderr, again.stderr
    print(f"SLURM up in {time.perf_counter() - tick:.1f} s")
    yield PARTITION
    # Jobs a failed test left behind (all jobs of this test cluster are ours).
    subprocess.run(["scancel", f"--partition={PARTITION}"], check=False)
    if not started_before:
        subprocess.run(["bash", str(SLURM_SCRIPTS / "stop.sh")], check=True)


@pytest.fixture(scope="module")
def slurm_and_local_runs(slurm_cluster, tmp_path_factory):
    """The small default run, once through SLURM and once locally, at the same time."""
    base = tmp_path_factory.mktemp("slurm")
    profile = cluster_profile(base / "profile")
    tick = time.perf_counter()
    on_slurm = snakemake(
        ["all", *slurm_args(profile, base / "slurm_logs")],
        "slurm_test",
        base / "results",
        overrides=SMALL_RUN | {"resources": {"gpu": True}},
        background=True,
    )
    local = snakemake(
        ["all", "--cores", "1"],
        "local_test",
        base / "results",
        overrides=SMALL_RUN,
        background=True,
    )
    for proc in (on_slurm, local):
        assert proc.wait(timeout=SNAKEMAKE_TIMEOUT_S) == 0, proc.args
    print(f"SLURM and local runs: {time.perf_counter() - tick:.1f} s")
    log = (base / "results" / "slurm_test.log").read_text()
    return base / "results", log


@pytest.mark.slurm
@pytest.mark.slow
@needs_slurm
def test_every_training_job_went_through_sbatch_with_a_gpu(slurm_and_local_runs):
    _, log = slurm_and_local_runs
    jobs = slurm_jobs(run_id(log))
    submitted = collections.Counter(rule_of(job["comment"]) for job in jobs)
    expected = {r: n for r, n in job_counts(log).items() if r in TRAIN_RULES}
    assert set(expected) == set(TRAIN_RULES)
    # Exactly the training jobs went to SLURM: the light rules ran locally.
    assert dict(submitted) == expected, jobs
    for job in jobs:
        assert job["state"] == "COMPLETED", job
        assert re.fullmatch(r"gres:gpu(:\w+)?:1", job["tres"]), job


@pytest.mark.slurm
@pytest.mark.slow
@needs_slurm
def test_slurm_run_equals_local_run(slurm_and_local_runs):
    results, _ = slurm_and_local_runs
    table = "tables/denoising.csv"
    on_slurm = pd.read_csv(results / "slurm_test" / table)
    local = pd.read_csv(results / "local_test" / table)
    assert len(local) > 0
    # Same seed, same thread count, both on the CPU: the same numbers.
    pd.testing.assert_frame_equal(on_slurm, local, check_exact=False, rtol=1e-6)
    models = sorted((results / "local_test" / "models").glob("*/model.pt"))
    assert len(models) >= len(TRAIN_RULES)
    for path in models:
        twin = results / "slurm_test" / path.relative_to(results / "local_test")
        a, b = torch.load(path, weights_only=True), torch.load(twin, weights_only=True)
        for key, value in a["state_dict"].items():
            assert torch.equal(value, b["state_dict"][key]), (path, key)


@pytest.mark.slurm
@pytest.mark.slow
@needs_slurm
def test_training_stopped_by_sigterm_resumes_on_retry(slurm_cluster, tmp_path):
    profile = cluster_profile(tmp_path / "profile")
    results = tmp_path / "results"
    run = "slurm_sigterm"
    target = results / run / "models" / "lowpass" / "model.pt"
    train_log = results / run / "logs" / "train_lowpass.log"
    tick = time.perf_counter()
    proc = snakemake(
        [str(target), *slurm_args(profile, tmp_path / "slurm_logs")],
        run,
        results,
        overrides=LONG_LOWPASS | {"resources": {"gpu": True}},
        background=True,
    )
    try:
        job = _running_training_job(proc, results / f"{run}.log", train_log)
        subprocess.run(["scancel", "--signal=TERM", job], check=True)
        code = proc.wait(timeout=SNAKEMAKE_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=60)
    log = (results / f"{run}.log").read_text()
    print(f"SIGTERM run: {time.perf_counter() - tick:.1f} s")
    assert code == 0, log[-5000:]
    # The retry (the log file is the last attempt's) started from the checkpoint.
    resumed = re.search(r"resumed from step (\d+)", train_log.read_text())
    assert resumed and int(resumed[1]) > 0, train_log.read_text()
    jobs = sorted(slurm_jobs(run_id(log)), key=lambda j: int(j["id"]))
    states = [j["state"] for j in jobs if rule_of(j["comment"]) == "train_lowpass"]
    assert states == ["FAILED", "COMPLETED"], jobs
    metrics = pd.read_json(target.parent / "metrics.jsonl", lines=True)
    assert metrics["step"].is_monotonic_increasing and metrics["step"].is_unique
    assert metrics["step"].iloc[-1] == LONG_STEPS


def _running_training_job(proc, snakemake_log: Path, train_log: Path) -> str:
    """Wait until the training logs its first steps; return its SLURM job id."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, snakemake_log.read_text()[-5000:]
        text = train_log.read_text() if train_log.exists() else ""
        # A step line means the loop, and so its SIGTERM handler, is running.
        if re.search(r"step \d+/\d+", text) and snakemake_log.exists():
            name = run_id(snakemake_log.read_text())
            running = [j for j in slurm_jobs(name) if j["state"] == "RUNNING"]
            assert len(running) == 1, running
            return running[0]["id"]
        time.sleep(0.2)
    raise AssertionError(f"training did not start within 300 s:\n{train_log}")
