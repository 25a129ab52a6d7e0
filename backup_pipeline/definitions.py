"""The code location: everything under defs/, loaded by Dagster's defs-folder convention.

Every job runs all its ops in one process (in_process_executor): a run's
lock, its staged archive and its upload retries live in that process, and a
process per op would cost ~10 s per run.
"""

import warnings
from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions.merge(_defs_folder(), dg.Definitions(executor=dg.in_process_executor))


def _defs_folder() -> dg.Definitions:
    """What dg.load_from_defs_folder loads, minus its catalog of every installed integration's components.

    That catalog (for the UI's component browser; this project declares no components) imports
    dagster_aws and more: about 1.4 s of CPU at the start of every CLI command and run.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)  # load_definitions_from_modules, used inside
        tree = dg.ComponentTree.for_project(path_within_project=Path(__file__).parent)
        return tree.build_defs(Path("."))
