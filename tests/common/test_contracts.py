"""The shared names: one definition each, and the forms they take."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from idq_common.config import settings_from_dict
from idq_common.contracts import PRODUCTS, STAGES, channel_name, group_id

EXAMPLE = Path(__file__).resolve().parents[2] / "etc" / "idq.toml"


def test_channel_name_integer_and_fractional_bands() -> None:
    assert channel_name("H1", "FAP", "ovl", 10, 2048) == "H1:IDQ-FAP_OVL_10_2048"
    # a channel name holds no '.': the point is written 'p' (frames and Settings agree)
    assert (
        channel_name("L1", "pglitch", "forest", 10.5, 2048.0) == "L1:IDQ-PGLITCH_FOREST_10p5_2048"
    )


def test_channel_name_rejects_unknown_product() -> None:
    with pytest.raises(ValueError, match="unknown product"):
        channel_name("H1", "SNR", "ovl", 10, 2048)


def test_settings_channel_name_is_the_contract() -> None:
    with EXAMPLE.open("rb") as fh:
        doc = tomllib.load(fh)
    doc["timeseries"]["fmin"] = 10.5
    s = settings_from_dict(doc, env={})
    for product in PRODUCTS:
        assert s.channel_name(product, "sgd") == channel_name("H1", product, "sgd", 10.5, 2048)


def test_group_ids() -> None:
    assert group_id("H1", "evaluate") == "idq.H1.evaluate"
    assert group_id("L1", "timeseries", "reader") == "idq.L1.timeseries.reader"
    assert len(set(STAGES)) == len(STAGES)
