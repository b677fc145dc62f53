import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import start  # noqa: E402

from msprior.coefficients import precompute_coefficients  # noqa: E402

cfg = start(snakemake)  # noqa: F821
precompute_coefficients(snakemake.input[0], snakemake.output[0], cfg.wavelet)  # noqa: F821
