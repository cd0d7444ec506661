"""Classifiers: the API (base), OVL, scikit-learn wrappers and the flavor factory."""

from idq_common.science.classifiers.base import (
    Classifier,
    IncrementalSupervisedClassifier,
    Model,
    SupervisedClassifier,
)
from idq_common.science.classifiers.factory import FLAVORS, is_incremental, make_classifier

__all__ = [
    "FLAVORS",
    "Classifier",
    "IncrementalSupervisedClassifier",
    "Model",
    "SupervisedClassifier",
    "is_incremental",
    "make_classifier",
]
