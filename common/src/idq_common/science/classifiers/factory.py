"""Build classifiers by flavor name (the ``flavor`` key of ``[[classifier]]``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from idq_common.exceptions import ClassifierError
from idq_common.science.classifiers.base import Classifier
from idq_common.science.classifiers.ovl import OVL
from idq_common.science.classifiers.sklearn import (
    SGD,
    HistGradientBoosting,
    NaiveBayes,
    RandomForest,
)

#: flavor name -> class; incremental flavors have ``cls.incremental`` True
FLAVORS: dict[str, type[Classifier]] = {
    cls.flavor: cls for cls in (OVL, RandomForest, HistGradientBoosting, SGD, NaiveBayes)
}


def make_classifier(
    nickname: str, flavor: str, params: Mapping[str, Any] | None, feature_spec: Any
) -> Classifier:
    """A fresh, untrained classifier.

    Raises
    ------
    ClassifierError
        Unknown flavor, or a parameter the flavor does not know (the message names it).
    """
    try:
        cls = FLAVORS[flavor]
    except KeyError:
        raise ClassifierError(
            f"{nickname}: unknown classifier flavor '{flavor}'; known: {sorted(FLAVORS)}"
        ) from None
    return cls(nickname, params, feature_spec)


def is_incremental(flavor: str) -> bool:
    """Whether ``flavor`` adds new data with ``partial_fit`` instead of retraining."""
    if flavor not in FLAVORS:
        raise ClassifierError(f"unknown classifier flavor '{flavor}'")
    return bool(getattr(FLAVORS[flavor], "incremental", False))
