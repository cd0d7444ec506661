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


def check_classifier(
    nickname: str,
    flavor: str,
    params: Mapping[str, Any] | None,
    window: float,
    columns: tuple[str, ...],
    fit: bool = True,
) -> None:
    """Everything a configuration can get wrong about a classifier, without data.

    Builds the classifier on a channel-less spec with the configured feature window
    and columns and runs its :meth:`~Classifier.check`, so unknown parameters and
    values training would fail on are found when a service starts. ``fit=False``: not
    the estimator's own constraints (a stage that never fits; no scikit-learn import).

    Raises
    ------
    ClassifierParamError
        Naming the parameter (or ``features.columns``) and the problem.
    """
    from idq_common.science.features import FeatureSpec

    make_classifier(nickname, flavor, params, FeatureSpec((), float(window), tuple(columns))).check(
        fit=fit
    )


def is_incremental(flavor: str) -> bool:
    """Whether ``flavor`` adds new data with ``partial_fit`` instead of retraining."""
    if flavor not in FLAVORS:
        raise ClassifierError(f"unknown classifier flavor '{flavor}'")
    return bool(getattr(FLAVORS[flavor], "incremental", False))
