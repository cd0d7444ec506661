"""Typed announcement records: the Avro record round trip and the in-memory log."""

from __future__ import annotations

import dataclasses

import pytest

from idq_common.exceptions import InvalidMessageError
from idq_common.io.avro import decode
from idq_common.stage.announcements import (
    Announcements,
    CalibrationAnnouncement,
    ModelAnnouncement,
)
from idq_dev.testing.avro_samples import sample_records


@pytest.mark.parametrize("cls", [ModelAnnouncement, CalibrationAnnouncement])
def test_record_round_trip(cls: type[ModelAnnouncement] | type[CalibrationAnnouncement]) -> None:
    record = sample_records()[cls.kind]
    ann = cls.from_record(record)
    assert ann.to_record() == record
    assert decode(ann.encode()) == (cls.kind, record)
    with pytest.raises(InvalidMessageError, match=cls.kind):
        cls.from_record({"ifo": "H1"})


def test_latest_is_the_newest_per_classifier_and_all_stay_by_id() -> None:
    base = ModelAnnouncement.from_record(sample_records()["model_announcement"])
    old = dataclasses.replace(base, model_id="m-old", created_gps=base.created_gps - 10)
    other = dataclasses.replace(base, classifier="ovl", model_id="m-ovl")
    log: Announcements[ModelAnnouncement] = Announcements()
    for ann in (base, old, other):  # an older one arriving late does not win
        log.add(ann)
    assert log.latest == {"forest": base, "ovl": other}
    assert set(log.by_id) == {base.model_id, "m-old", "m-ovl"}
    assert log.refresh() == 0 and not log.wait_for(lambda: "m-new" in log.by_id, 1.0)
