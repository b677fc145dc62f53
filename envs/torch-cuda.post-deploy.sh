#!/usr/bin/env bash
# Run by Snakemake (--sdm conda) inside the new environment, from the working directory
# (the repository root): install the msprior package itself, editable, without touching
# the dependencies that conda already installed.
set -euo pipefail
if ! grep -q '^name = "msprior"' pyproject.toml 2>/dev/null; then
    echo "post-deploy: run Snakemake from the msprior repository root" \
        "(no msprior pyproject.toml in $PWD)" >&2
    exit 1
fi
python -m pip install --no-deps --no-build-isolation --quiet -e .
