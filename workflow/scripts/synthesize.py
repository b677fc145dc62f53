import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import named_models, start  # noqa: E402

from msprior.pipeline import run_synthesis  # noqa: E402

sm = snakemake  # noqa: F821
cfg = start(sm)
out = sm.output
run_synthesis(
    cfg,
    models=named_models(sm),
    samples_h5=out.samples,
    grid=(out.grid, out.grid_pdf),
    traces=(out.traces, out.traces_pdf),
)
