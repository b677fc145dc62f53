import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import start  # noqa: E402

from msprior.pipeline import run_training  # noqa: E402

sm = snakemake  # noqa: F821
cfg = start(sm)
run_training(
    cfg,
    sm.params.name,
    faces=sm.input.faces,
    wavelets=sm.input.wavelets,
    model=sm.output.model,
    metrics=sm.output.metrics,
    curve=sm.output.curve,
    work_dir=sm.params.work,
    threads=sm.threads,
)
