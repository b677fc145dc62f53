"""Shared by the workflow's scripts: the typed config and logging to the rule's log."""

from msprior.allocator import keep_freed_memory
from msprior.config import from_dict
from msprior.pipeline import setup_logging


def start(snakemake):
    """Log to the rule's log file; return the typed config."""
    keep_freed_memory()  # activations reused, not page-faulted back in (2.5x sampling)
    setup_logging(snakemake.log[0] if snakemake.log else None)
    return from_dict(snakemake.config)


def named_models(snakemake) -> dict:
    """name -> path, from ``params.names`` and ``input.models`` in the same order."""
    return dict(zip(snakemake.params.names, snakemake.input.models, strict=True))
