import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import named_models, start  # noqa: E402

from msprior.pipeline import run_evaluation  # noqa: E402

sm = snakemake  # noqa: F821
cfg = start(sm)
out = sm.output
run_evaluation(
    cfg,
    faces=sm.input.faces,
    models=named_models(sm),
    table_csv=out.csv,
    table_md=out.md,
    table_tex=out.tex,
    curves=(out.curves, out.curves_pdf),
    examples=(out.examples, out.examples_pdf),
)
