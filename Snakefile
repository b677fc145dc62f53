# Multi-scale local conditional probability models of images: the whole pipeline.
#
#   snakemake --cores 8 all                                   # the default config
#   snakemake --cores 8 --configfile config/presets/X.yaml all
#   snakemake --report results/report.html                    # after a run
#
# The config is validated against workflow/schemas/config.schema.yaml, then built into
# the typed msprior.config.Config, before any job runs. All the maths lives in the
# package under src/; rules and scripts only wire files to its functions.

import os

import yaml
from snakemake.utils import min_version, validate

from msprior.config import from_dict, schema_error

min_version("8.10")

configfile: "config/config.yaml"

SCHEMA = "workflow/schemas/config.schema.yaml"
try:
    validate(config, SCHEMA)
except WorkflowError:  # Snakemake's message prints the whole schema: say it in a line
    with open(SCHEMA) as f:
        raise WorkflowError(f"invalid config: {schema_error(config, yaml.safe_load(f))}") from None
try:
    CFG = from_dict(config)
except ValueError as err:
    raise WorkflowError(f"invalid config: {err}") from None

# Several jobs read the same HDF5 files at once; HDF5's locks fail on network file
# systems and readers need none.
os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")

RUN = str(CFG.run_dir)

report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/sample.smk"


rule all:
    input:
        rules.evaluate_denoising.output,
        rules.synthesize.output,
        flat_samples(),
        rules.super_resolve.output,
        rules.inpaint.output,
        training_curves(),
        reference_tables(),
    default_target: True
