import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import named_models, start  # noqa: E402

from msprior.pipeline import run_inpainting  # noqa: E402

sm = snakemake  # noqa: F821
cfg = start(sm)
run_inpainting(
    cfg,
    faces=sm.input.faces,
    models=named_models(sm),
    panel=(sm.output.panel, sm.output.panel_pdf),
)
