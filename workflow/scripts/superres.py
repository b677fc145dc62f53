import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import named_models, start  # noqa: E402

from msprior.pipeline import run_superres  # noqa: E402

sm = snakemake  # noqa: F821
cfg = start(sm)
run_superres(
    cfg,
    faces=sm.input.faces,
    models=named_models(sm),
    out_h5=sm.output.samples,
    panel=(sm.output.panel, sm.output.panel_pdf),
)
