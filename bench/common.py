"""What every row shares: the machine record, interleaved timing, process-tree memory.

Absolute times on a shared machine drift with the load; a ratio of two runs timed in
the same process, interleaved (A, B, A, B, ...) and taken at their best, holds much
better. Every row therefore reports a ratio to a reference measured beside it.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(
    os.environ.get("MSPRIOR_SHARED_DATA", REPO.parent / "shared" / "data")
)
CELEBA = SHARED_DATA / "celeba-subset"
PUBLISHED = SHARED_DATA / "published-denoisers"


@dataclass
class Row:
    """One line of the record: a figure, what it is measured against, its target.

    ``meets`` is True or False when the target is a pass/fail test, None when the row
    only reports (or was skipped); ``bound`` says what limits the figure.
    """

    key: str
    what: str
    against: str
    target: str
    figure: str = ""
    meets: bool | None = None
    bound: str = ""
    skipped: str = ""
    details: dict = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def skipped_row(row: Row, reason: str) -> Row:
    """Mark ``row`` as not measured, saying why."""
    row.skipped, row.figure, row.meets = reason, f"skipped: {reason}", None
    return row


def shared_data_missing(*paths: Path) -> str:
    """An empty string when every path exists, else a note naming the first missing."""
    for path in paths:
        if not path.exists():
            return f"{path} not found (the developers' ../shared/data)"
    return ""


# --------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _numpy_blas() -> str:
    import numpy as np

    try:
        info = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{info.get('name', '?')} {info.get('version', '')}".strip()
    except Exception:  # older numpy: no dict mode
        return "unknown"


def _commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.strip()

    sha = git("rev-parse", "--short=12", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "src", "bench")
    return sha + (" (uncommitted changes in src/ or bench/)" if dirty else "")


def cores() -> int:
    """CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def machine_info() -> dict:
    """Cores, CPU, memory, library versions, threads, load, date and commit."""
    import h5py
    import numpy as np
    import pywt
    import torch

    return {
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
        "commit": _commit(),
        "cpu": _cpu_model(),
        "cores": cores(),
        "memory_gib": _memory_gib(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "torch_blas": "MKL" if torch.backends.mkl.is_available() else "other",
        "onednn": torch.backends.mkldnn.is_available(),
        "numpy": np.__version__,
        "numpy_blas": _numpy_blas(),
        "pywavelets": pywt.__version__,
        "h5py": h5py.__version__,
        "omp_env": {
            k: os.environ[k]
            for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")
            if k in os.environ
        },
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }


# --------------------------------------------------------------------------- timing


def interleaved_best(
    functions: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 1
) -> dict[str, float]:
    """Best wall time (s) of each function, calls interleaved A, B, A, B, ...

    Interleaving exposes every function to the same drift of the machine's load;
    the best of ``repeats`` is the run least disturbed by other processes.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        for fn in functions.values():
            fn()
    best = {name: float("inf") for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


# --------------------------------------------------------------------------- memory


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # the command name may hold spaces and parentheses: split after the last ")"
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def _rss_bytes(pid: int) -> int:
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def tree_rss(root: int) -> tuple[int, int]:
    """(sum, largest) resident set size in bytes over ``root`` and its descendants."""
    children = _children_map()
    stack, sizes = [root], []
    while stack:
        pid = stack.pop()
        sizes.append(_rss_bytes(pid))
        stack.extend(children.get(pid, []))
    return sum(sizes), max(sizes, default=0)


class TreeMemorySampler:
    """Polls the resident memory of a process tree from /proc in a thread.

    ``peak_total`` is the largest sum over the tree seen at one poll, ``peak_single``
    the largest single process. A poll every ``interval`` seconds can miss a peak
    shorter than that; /proc is Linux only.
    """

    def __init__(self, pid: int, interval: float = 0.2):
        self.pid, self.interval = pid, interval
        self.peak_total = self.peak_single = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            total, single = tree_rss(self.pid)
            self.peak_total = max(self.peak_total, total)
            self.peak_single = max(self.peak_single, single)
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeMemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def mib(n_bytes: float) -> float:
    return round(n_bytes / 2**20, 1)
