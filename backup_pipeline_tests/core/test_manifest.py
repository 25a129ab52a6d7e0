"""The typed Manifest reads a real backup's manifest field by field and gives back exactly the same dict."""

import pytest

from backup_pipeline.core import catalog
from backup_pipeline.core.archive import manifest_bytes
from backup_pipeline.core.backup import read_manifest
from backup_pipeline.core.errors import VerifyError
from backup_pipeline.core.manifest import Manifest
from backup_pipeline_tests.core.test_drill import _publish


def test_a_real_manifest_round_trips_and_reads_by_field(source_dsn, tmp_path):
    storage, names, _ = _publish(source_dsn, tmp_path)
    stored = read_manifest(storage, names.manifest)
    typed = Manifest.from_dict(stored)
    assert manifest_bytes(typed.to_dict()) == storage.get_bytes(names.manifest)
    assert typed.archive.key == names.archive and typed.archive.sha256 == stored["archive"]["sha256"]
    assert typed.row_counts["sales.order_items"] == 20000 and typed.target == stored["target"]
    assert catalog.load(storage, names.manifest)[1]["archive_uri"] == storage.uri(names.archive)

    older = {k: v for k, v in stored.items() if k not in ("copies", "encryption")} | {"from_the_future": [1]}
    assert Manifest.from_dict(older).to_dict() == older  # nothing added back, nothing unknown dropped


def test_a_manifest_without_its_archive_is_one_line_naming_it():
    with pytest.raises(VerifyError, match=r"^manifest s3://b/x.manifest.json lacks archive: .*cut short$"):
        Manifest.from_dict({"format_version": 1, "backup_id": "a", "target": "t", "type": "manual",
                            "started_at": "2026-01-01T00:00:00+00:00"}, "manifest s3://b/x.manifest.json")
