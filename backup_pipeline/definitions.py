"""The code location: everything under defs/, loaded by Dagster's defs-folder convention.

Every job runs all its ops in one process (in_process_executor): a run's
lock, its staged archive and its upload retries live in that process, and a
process per op would cost ~10 s per run.
"""

from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
        dg.Definitions(executor=dg.in_process_executor),
    )
