"""The run queue: Dagster's QueuedRunCoordinator, plus the target tag for runs launched from an asset page.

"Materialize" on `backups/<target>` launches Dagster's implicit `__ASSET_JOB`,
whose runs carry no tags of ours; the one-run-per-target limit of the queue
(tag backup_pipeline/target) would not hold for them. This coordinator tags
such a run with its target before enqueueing it, and fails a run that selects
the backups of several targets at once (one run could not be limited per target).
Both instance configs (dagster_yaml/local.yaml, postgres.yaml) name it.
"""

from dagster import AssetKey, DagsterRun
from dagster._core.run_coordinator import QueuedRunCoordinator, SubmitRunContext

from backup_pipeline.resources import BACKUPS_PREFIX, TARGET_TAG


def backed_up_targets(asset_selection: frozenset[AssetKey] | None) -> list[str]:
    """The targets whose backups/<target> asset the selection materializes."""
    return sorted(key.path[1] for key in asset_selection or () if len(key.path) == 2 and key.path[0] == BACKUPS_PREFIX)


class TargetQueuedRunCoordinator(QueuedRunCoordinator):
    def submit_run(self, context: SubmitRunContext) -> DagsterRun:
        run = context.dagster_run
        targets = backed_up_targets(run.asset_selection)
        if targets and TARGET_TAG not in run.tags:
            if len(targets) > 1:
                self._instance.report_run_failed(
                    run, f"this run would back up {len(targets)} targets ({', '.join(targets)}) at once: materialize "
                    "one backups/<target> asset per run, so the queue can hold each target to one run at a time")
                return self._instance.get_run_by_id(run.run_id) or run
            self._instance.add_run_tags(run.run_id, {TARGET_TAG: targets[0]})
            run = self._instance.get_run_by_id(run.run_id) or run.with_tags({**run.tags, TARGET_TAG: targets[0]})
        return super().submit_run(SubmitRunContext(run, context.workspace))
