import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import named_models, start  # noqa: E402

from msprior.pipeline import run_reference_comparison  # noqa: E402

sm = snakemake  # noqa: F821
run_reference_comparison(
    start(sm),
    faces=sm.input.faces,
    models=named_models(sm),
    table_csv=sm.output.csv,
    table_md=sm.output.md,
)
