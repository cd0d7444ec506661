"""Seeded synthetic fixtures: a small default model, a span, sources and a quiver.

Plain functions (usable anywhere) plus pytest fixtures wrapping them; the fixtures are
registered through ``pytest_plugins`` in ``tests/conftest.py``.
"""

from __future__ import annotations

import math

import pytest

from idq_common.data.synthetic import SyntheticModel, SyntheticSource
from idq_common.science.features import FeatureSpec
from idq_common.science.quiver import Quiver, build_quiver

__all__ = [
    "DIRTY_BOUNDS",
    "SPAN",
    "TARGET_BOUNDS",
    "small_model",
    "small_quiver",
    "small_source",
    "small_spec",
]

#: A GPS span of 512 s in O4-era time, integer and block aligned.
SPAN: tuple[float, float] = (1_400_000_000.0, 1_400_000_512.0)
#: Production sample selection.
TARGET_BOUNDS = {"snr": (10.0, math.inf), "frequency": (10.0, 2048.0)}
DIRTY_BOUNDS = {"snr": (5.5, math.inf)}


def small_model(seed: int = 20240501, **overrides: object) -> SyntheticModel:
    """4 witnesses, 12 noise channels, 0.2 Hz glitches: small enough for unit tests."""
    params: dict[str, object] = {
        "seed": seed,
        "ifo": "H1",
        "n_witness": 4,
        "n_noise": 12,
        "glitch_rate": 0.2,
        "witness_probs": (0.9, 0.6, 0.3, 0.1),
    }
    params.update(overrides)
    return SyntheticModel(**params)  # type: ignore[arg-type]


def small_spec(model: SyntheticModel, window: float = 0.25) -> FeatureSpec:
    """Features over every auxiliary channel of ``model``."""
    return FeatureSpec(model.aux_channels, window)


def small_source(
    model: SyntheticModel | None = None, span: tuple[float, float] = SPAN
) -> SyntheticSource:
    return SyntheticSource(model or small_model(), *span)


def small_quiver(
    model: SyntheticModel | None = None,
    span: tuple[float, float] = SPAN,
    random_rate: float = 0.2,
    seed: int = 7,
) -> Quiver:
    """Glitch (snr >= 10) and clean (0.2 Hz) samples over ``span`` with features."""
    model = model or small_model()
    return build_quiver(
        SyntheticSource(model, *span),
        model.target_channel,
        TARGET_BOUNDS,
        random_rate,
        DIRTY_BOUNDS,
        0.5,
        seed,
        small_spec(model),
    )


@pytest.fixture
def synthetic_model() -> SyntheticModel:
    return small_model()


@pytest.fixture
def synthetic_span() -> tuple[float, float]:
    return SPAN


@pytest.fixture
def synthetic_source(synthetic_model: SyntheticModel) -> SyntheticSource:
    return small_source(synthetic_model)


@pytest.fixture
def synthetic_quiver(synthetic_model: SyntheticModel) -> Quiver:
    return small_quiver(synthetic_model)
