import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import start  # noqa: E402

from msprior.faces import SPLITS, prepare_faces  # noqa: E402

cfg = start(snakemake)  # noqa: F821
# Published networks are not trained: a folder of test faces alone is enough.
require = ("test",) if cfg.networks.source == "published" else SPLITS
prepare_faces(cfg.data, snakemake.output[0], seed=cfg.seed, require=require)  # noqa: F821
