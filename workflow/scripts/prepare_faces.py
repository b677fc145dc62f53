import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import start  # noqa: E402

from msprior.faces import prepare_faces  # noqa: E402

cfg = start(snakemake)  # noqa: F821
prepare_faces(cfg.data, snakemake.output[0], seed=cfg.seed)  # noqa: F821
