"""Shared pytest configuration: fixture plugins, one module per area."""

pytest_plugins = [
    "backup_pipeline_tests.fix_history",
    "backup_pipeline_tests.fix_s3",
    "backup_pipeline_tests.fix_pg",
    "backup_pipeline_tests.fix_dagster",
    "backup_pipeline_tests.fix_alerts",
    "backup_pipeline_tests.fix_proxy",
    "backup_pipeline_tests.fix_disk",
]
