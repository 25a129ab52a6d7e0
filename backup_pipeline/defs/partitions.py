"""Runs partitioned by target: each configured target is a partition of the backup, drill and restore jobs.

The partition key is the target, so a run knows its target whatever launched
it (launchpad, schedule, sensor, CLI): the partitioned config tags the run
with TARGET_TAG=<target> (the run queue's one-run-per-target limit) and the
launchpad offers the targets as a picker, with no required config. Built
once per set of target names, so every definitions module shares one job object.
"""

from collections.abc import Callable, Mapping

import dagster as dg

from backup_pipeline.core.config import load_settings
from backup_pipeline.core.errors import ConfigError
from backup_pipeline.resources import TARGET_TAG

PARTITION_TAG = "dagster/partition"


def configured_targets() -> tuple[str, ...]:
    return tuple(sorted(load_settings().targets))


def target_partitions(names: tuple[str, ...]) -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition(list(names))


def partitioned_config(names: tuple[str, ...], config_for: Callable[[str], Mapping]) -> dg.PartitionedConfig | None:
    """Run config and TARGET_TAG per target partition; None when no target is configured (an unpartitioned job)."""
    if not names:
        return None
    return dg.PartitionedConfig(
        partitions_def=target_partitions(names),
        run_config_for_partition_key_fn=lambda key: dict(config_for(key)),
        tags_for_partition_key_fn=lambda key: {TARGET_TAG: key},
    )


def run_tags(target: str | None, names: tuple[str, ...] | None = None) -> dict[str, str]:
    """The tags a run of `target` carries: TARGET_TAG, plus the partition when the target is configured."""
    if not target:
        return {}
    configured = configured_targets() if names is None else names
    return {TARGET_TAG: target, **({PARTITION_TAG: target} if target in configured else {})}


def run_target(context: dg.OpExecutionContext, configured: str | None, what: str) -> str | None:
    """The target of this run: the partition key, or (without a partition) the op config's target."""
    partition = context.partition_key if context.has_partition_key else None
    if partition and configured and configured != partition:
        raise ConfigError(f"{what} says target {configured!r} but the run is partition {partition!r}: "
                          "drop the config's target or pick that partition")
    return partition or configured
