"""Triggers and data sources: TriggerSet, ClassifierData family, Umbrella, synthetic data."""

from idq_common.data.base import ClassifierData, InMemoryData
from idq_common.data.triggers import TriggerSet

__all__ = ["ClassifierData", "InMemoryData", "TriggerSet"]
