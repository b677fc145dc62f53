import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import start  # noqa: E402

from msprior.pipeline import run_flat_synthesis  # noqa: E402

sm = snakemake  # noqa: F821
cfg = start(sm)
run_flat_synthesis(cfg, model=sm.input.model, grid=(sm.output.grid, sm.output.grid_pdf))
