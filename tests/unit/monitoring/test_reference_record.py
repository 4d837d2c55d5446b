"""The reference's record on a model version reads back exactly, and a version without it
(registered before references were stored) reads as None."""

from __future__ import annotations

from esteira.registry.lineage import ReferenceRecord, VersionRecord


def test_reference_tags_round_trip_and_absent_or_broken_tags_read_as_none():
    reference = ReferenceRecord("r1", "monitoring_reference/reference.parquet", 9000, 5000, 42, "ab" * 32)
    record = VersionRecord(run_id="r1", reference=reference)
    tags = record.to_tags()
    assert VersionRecord.from_tags(tags) == record and VersionRecord.from_tags(tags).to_tags() == tags
    assert reference.uri == "runs:/r1/monitoring_reference/reference.parquet"
    assert VersionRecord.from_tags({"run_id": "r1"}).reference is None
    assert ReferenceRecord.from_tags({"monitoring_reference": '{"run_id": "r1"}'}) is None
    assert ReferenceRecord.from_tags({"monitoring_reference": "not json"}) is None
