"""Resumable batch captioning of whole datasets: the local engine, and Ray Data for clusters.

``run_job(JobConfig(inputs=[...], jsonl=Path("out.jsonl")))`` captions every image of the inputs
once per language and writes JSON Lines, Parquet, COCO results, sidecar text files and/or XMP alt
text. Each output keeps its own state, so running the same job again continues where it stopped
(after a crash or ``kill -9`` too) with exactly one record per image and language.
``polycap batch`` is the command over it; docs/batch.md has the details.
"""

from polycap.batch.engine import JobConfig, JobSummary, SidecarSpec, make_record, run_job
from polycap.batch.inputs import InputSpec, Item, iter_items
from polycap.batch.outputs import read_records

__all__ = [
    "InputSpec",
    "Item",
    "JobConfig",
    "JobSummary",
    "SidecarSpec",
    "iter_items",
    "make_record",
    "read_records",
    "run_job",
]
