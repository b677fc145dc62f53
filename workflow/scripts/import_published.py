import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import start  # noqa: E402

from msprior.pipeline import import_network  # noqa: E402

sm = snakemake  # noqa: F821
import_network(start(sm), sm.wildcards.name, sm.output.model)
