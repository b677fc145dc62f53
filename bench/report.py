"""The record: ``RESULTS.md`` (a Markdown table) and ``results.json``, written together.

With a subset of rows (``run.py --only``), the rows already in ``results.json`` are
kept and only the measured ones replaced; each row carries the date, commit and load
of the run that measured it.
"""

from __future__ import annotations

import json
from pathlib import Path

from msprior.io import atomic_path

MACHINE_KEYS = (
    ("date_utc", "date (UTC)"),
    ("commit", "commit"),
    ("cpu", "CPU"),
    ("cores", "cores"),
    ("memory_gib", "memory (GiB)"),
    ("gpu", "GPU"),
    ("python", "Python"),
    ("torch", "torch"),
    ("torch_threads", "torch threads"),
    ("torch_interop_threads", "torch inter-op threads"),
    ("torch_blas", "torch BLAS"),
    ("onednn", "oneDNN"),
    ("numpy", "numpy"),
    ("numpy_blas", "numpy BLAS"),
    ("pywavelets", "PyWavelets"),
    ("h5py", "h5py"),
    ("omp_env", "OpenMP/MKL environment"),
    ("malloc", "glibc malloc thresholds (mmap, trim)"),
    ("load_average", "load average (1, 5, 15 min) at start"),
)


def merge_rows(previous: dict, rows: list[dict]) -> dict:
    """Rows of ``previous`` (key -> row) updated by ``rows``; order kept."""
    merged = dict(previous)
    for row in rows:
        merged[row["key"]] = row
    return merged


def _meets(row: dict) -> str:
    if row.get("skipped"):
        return "skipped"
    return {True: "yes", False: "**no**", None: "reported"}[row.get("meets")]


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(machine: dict, rows: dict, command: str) -> str:
    """The record as Markdown: machine, the table, then what bounds each row."""
    lines = [
        "# Benchmark record",
        "",
        f"Written by `{command}`. Each figure is a ratio to a reference timed in the "
        "same process (see `bench/README.md`); absolute times drift with the load of "
        "the machine, which is recorded with every row.",
        "",
        "## Machine",
        "",
        "| | |",
        "| --- | --- |",
    ]
    lines += [
        f"| {label} | {_cell(machine.get(key, ''))} |" for key, label in MACHINE_KEYS
    ]
    lines += [
        "",
        "## Figures",
        "",
        "| row | what | measured against | target | result | meets |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows.values():
        lines.append(
            "| "
            + " | ".join(
                _cell(v)
                for v in (
                    row["key"],
                    row["what"],
                    row["against"],
                    row["target"],
                    row["figure"],
                    _meets(row),
                )
            )
            + " |"
        )
    lines += ["", "## What bounds each figure", ""]
    for row in rows.values():
        when = row.get("measured", {})
        stamp = (
            f"measured {when.get('date_utc', '?')}, commit {when.get('commit', '?')}, "
            f"load {when.get('load_average', '?')}, {row.get('seconds', 0):.0f} s"
        )
        text = row.get("bound") or row.get("skipped") or ""
        lines.append(f"**{row['key']}** ({stamp}). {text}")
        lines.append("")
    lines.append("Every measured number is in `bench/results.json`.")
    return "\n".join(lines) + "\n"


def write_record(
    machine: dict, rows: list[dict], md_path: Path, json_path: Path, command: str
) -> dict:
    """Merge ``rows`` into the record at ``json_path``; rewrite both files."""
    previous = {}
    if json_path.exists():
        previous = json.loads(json_path.read_text()).get("rows", {})
    merged = merge_rows(previous, rows)
    record = {"command": command, "machine": machine, "rows": merged}
    with atomic_path(json_path) as tmp:
        Path(tmp).write_text(json.dumps(record, indent=1, sort_keys=False) + "\n")
    with atomic_path(md_path) as tmp:
        Path(tmp).write_text(markdown(machine, merged, command))
    return record
