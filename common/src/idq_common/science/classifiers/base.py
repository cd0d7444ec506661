"""The classifier API shared by OVL and the scikit-learn wrappers.

A classifier maps a feature vector (one row of a quiver's feature matrix, see
``idq_common.science.features``) to a *rank* in [0, 1]: larger means "more glitch-like".
Ranks are not probabilities; :mod:`idq_common.science.calibration` turns them into FAP,
EFF, LOGLIKE and PGLITCH.

Life cycle::

    clf = make_classifier("forest", "random_forest", {"n_estimators": 100}, spec)
    clf.train(quiver)              # -> Model (also clf.model)
    ranks = clf.evaluate(quiver)   # -> np.ndarray in [0, 1]; also fills quiver.ranks
    blob = clf.to_bytes()          # safe bytes for the artifact store (no pickle)
    other.from_bytes(blob)         # same ranks, bit for bit

A :class:`Model` is the trained state as plain bytes plus metadata; it is what the
train stage stores and the evaluate/timeseries stages load.  Payload formats are
safe to load from an untrusted store: skops (with an explicit trusted-type list)
for scikit-learn, JSON for OVL.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import struct
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from idq_common.exceptions import (
    ClassifierError,
    ClassifierParamError,
    NotCalibratedError,
    NotTrainedError,
)
from idq_common.science.features import FeatureBuilder, FeatureSpec

if TYPE_CHECKING:
    from idq_common.science.calibration import CalibrationMap

_MAGIC = b"IDQM1"


@dataclass(frozen=True)
class Model:
    """A trained classifier state, as bytes plus metadata.

    Attributes
    ----------
    flavor : str
        Classifier flavor that can load ``payload``.
    payload : bytes
        Flavor-specific safe serialisation (skops zip or JSON).
    spec : FeatureSpec
        Feature layout the model expects.
    created : float
        Unix time of creation.
    n_samples : int
        Number of samples the model has seen (cumulative for incremental models).
    span : tuple[float, float]
        GPS ``(start, end)`` of the training data (union over updates).
    id : str
        Content id: sha256 prefix of flavor, spec and payload (not of ``created``).
        Payloads are canonical (OVL: JSON; scikit-learn: a skops zip with
        process-independent member names and no timestamps), so retraining on the
        same data gives the same id, in any process.
    """

    flavor: str
    payload: bytes
    spec: FeatureSpec
    created: float = field(default_factory=time.time)
    n_samples: int = 0
    span: tuple[float, float] = (0.0, 0.0)
    id: str = ""

    def __post_init__(self) -> None:
        if not self.id:
            h = hashlib.sha256()
            h.update(self.flavor.encode())
            h.update(json.dumps(self.spec.to_dict(), sort_keys=True).encode())
            h.update(self.payload)
            object.__setattr__(self, "id", h.hexdigest()[:16])

    def to_bytes(self) -> bytes:
        """``IDQM1`` + 4-byte little-endian header length + JSON header + payload."""
        header = json.dumps(
            {
                "flavor": self.flavor,
                "spec": self.spec.to_dict(),
                "created": self.created,
                "n_samples": self.n_samples,
                "span": list(self.span),
                "id": self.id,
            },
            sort_keys=True,
        ).encode()
        return _MAGIC + struct.pack("<I", len(header)) + header + self.payload

    @classmethod
    def from_bytes(cls, data: bytes) -> Model:
        """Inverse of :meth:`to_bytes`; raises ClassifierError on malformed input."""
        if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + 4:
            raise ClassifierError("model bytes do not start with the IDQM1 marker")
        (n,) = struct.unpack_from("<I", data, len(_MAGIC))
        start = len(_MAGIC) + 4
        try:
            header = json.loads(data[start : start + n])
            model = cls(
                flavor=str(header["flavor"]),
                payload=bytes(data[start + n :]),
                spec=FeatureSpec.from_dict(header["spec"]),
                created=float(header["created"]),
                n_samples=int(header["n_samples"]),
                span=(float(header["span"][0]), float(header["span"][1])),
            )
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise ClassifierError(f"malformed model header: {exc}") from exc
        if model.id != header.get("id"):
            raise ClassifierError(
                f"model id mismatch: header {header.get('id')}, content {model.id}"
            )
        return model


def _quiver_span(quiver: Any) -> tuple[float, float]:
    try:
        return float(quiver.start), float(quiver.end)
    except (AttributeError, TypeError):
        t = np.asarray(quiver.times, dtype=float)
        return (float(t.min()), float(t.max())) if t.size else (0.0, 0.0)


class Classifier(ABC):
    """Abstract classifier: a nickname, a flavor, params and a feature layout.

    Parameters
    ----------
    nickname : str
        Name used in channel names and metrics (``H1:IDQ-FAP_{NICKNAME}_...``).
    params : mapping, optional
        Flavor parameters; unknown keys raise :class:`ClassifierError`.
    feature_spec : FeatureSpec
        Channels, window and columns of the feature matrices this classifier sees.
    """

    flavor: ClassVar[str] = ""
    #: parameter names and defaults accepted by the flavor
    defaults: ClassVar[Mapping[str, Any]] = {}

    def __init__(
        self, nickname: str, params: Mapping[str, Any] | None = None, feature_spec: Any = None
    ) -> None:
        if feature_spec is None:
            raise ClassifierError(f"{nickname}: a feature_spec is required")
        self.nickname = nickname
        params = dict(params or {})
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            close = difflib.get_close_matches(unknown[0], list(self.defaults), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ClassifierParamError(
                unknown[0],
                f"unknown parameter for flavor '{self.flavor}'{hint} "
                f"(known: {', '.join(sorted(self.defaults))})",
            )
        self.params: dict[str, Any] = {**self.defaults, **params}
        self.feature_spec = feature_spec
        self._model: Model | None = None
        self._calibration: CalibrationMap | None = None

    # -- model and calibration -------------------------------------------------------
    @property
    def is_trained(self) -> bool:
        return self._model is not None

    @property
    def model(self) -> Model:
        """The current :class:`Model`; raises NotTrainedError before training/loading."""
        if self._model is None:
            raise NotTrainedError(f"{self.nickname}: no model yet")
        return self._model

    @model.setter
    def model(self, model: Model) -> None:
        if model.flavor != self.flavor:
            raise ClassifierError(
                f"{self.nickname}: model flavor '{model.flavor}' != classifier flavor '{self.flavor}'"
            )
        self._load(model.payload, model.spec)
        self._model = model

    def load_for_ranking(self, model: Model) -> None:
        """Use ``model`` to rank only (a stage that never trains or inspects it).

        The ranks are those of ``self.model = model``, bit for bit; a flavor may load
        less of the model for it (the scikit-learn flavors read the fitted arrays
        without importing scikit-learn). Training on, or reading the estimator of, a
        classifier loaded this way is not supported: set :attr:`model` for that.
        """
        if model.flavor != self.flavor:
            raise ClassifierError(
                f"{self.nickname}: model flavor '{model.flavor}' != classifier flavor '{self.flavor}'"
            )
        self._load_ranking(model.payload, model.spec)
        self._model = model

    @property
    def is_calibrated(self) -> bool:
        return self._calibration is not None

    @property
    def calibration_map(self) -> CalibrationMap:
        if self._calibration is None:
            raise NotCalibratedError(f"{self.nickname}: no calibration map yet")
        return self._calibration

    @calibration_map.setter
    def calibration_map(self, cmap: CalibrationMap) -> None:
        self._calibration = cmap

    def to_bytes(self) -> bytes:
        """The current model as safe bytes (see :meth:`Model.to_bytes`)."""
        return self.model.to_bytes()

    def from_bytes(self, data: bytes) -> Model:
        """Load a model from :meth:`to_bytes` output; returns it (also ``self.model``)."""
        model = Model.from_bytes(data)
        self.model = model
        return model

    # -- training and ranking --------------------------------------------------------
    @abstractmethod
    def train(self, quiver: Any) -> Model:
        """Fit on a labelled quiver; returns the new model (also ``self.model``)."""

    def evaluate(self, quiver: Any) -> np.ndarray:
        """Rank every sample of ``quiver``.

        Returns a float64 array in [0, 1], one per row.  As a convenience for the
        evaluate stage the quiver is updated in place too: ``quiver.ranks``,
        ``quiver.classifier`` (the nickname) and ``quiver.model_id``.
        """
        ranks = self.rank(np.asarray(quiver.features, dtype=np.float64))
        quiver.ranks = ranks
        quiver.classifier = self.nickname
        quiver.model_id = self.model.id
        return ranks

    def rank(self, features: np.ndarray) -> np.ndarray:
        """Ranks in [0, 1] for a feature matrix laid out by ``self.feature_spec``."""
        model = self.model
        X = np.atleast_2d(np.asarray(features, dtype=np.float64))
        X = self._align(X, model.spec)
        if X.shape[0] == 0:
            return np.zeros(0)
        return np.clip(self._rank(X), 0.0, 1.0).astype(np.float64)

    def feature_builder(self) -> FeatureBuilder | None:
        """What the model reads of the features, built straight from the window picks.

        A caller resolving windows for :meth:`rank` (``science.stride.rank_grid``) may
        build this instead of the feature matrix and call :meth:`rank_built`: the flavor
        computes only the cells its model reads, its preprocessing per trigger rather
        than per cell. The ranks are the same, bit for bit, as ``rank`` of the feature
        matrix. None (the default): the flavor takes the raw matrix, or the model's
        layout differs from ``feature_spec``.
        """
        return None

    def rank_built(self, built: np.ndarray) -> np.ndarray:
        """Ranks from what :meth:`feature_builder` built (one row per sample)."""
        if self.feature_builder() is None:
            raise ClassifierError(f"{self.nickname}: this model takes the feature matrix only")
        if built.shape[0] == 0:
            return np.zeros(0)
        return np.clip(self._rank_built(built), 0.0, 1.0).astype(np.float64)

    def _rank_built(self, built: np.ndarray) -> np.ndarray:
        """Ranks for what :meth:`feature_builder` built."""
        raise ClassifierError(f"{self.nickname}: this model takes the feature matrix only")

    def check(self, fit: bool = True) -> None:  # noqa: B027 - a hook: most flavors have nothing to add
        """Raise :class:`ClassifierParamError` for a value training would fail on.

        Called when a configuration is loaded, so a bad value stops a service at start
        instead of at its first training. Unknown names are refused by the constructor;
        flavors override this to check values. ``fit=False``: not the parameters only
        fitting reads, where checking them is costly (scikit-learn's validation).
        """

    # -- flavor hooks ----------------------------------------------------------------
    @abstractmethod
    def _rank(self, X: np.ndarray) -> np.ndarray:
        """Ranks for a matrix laid out by the *model's* spec."""

    @abstractmethod
    def _dump(self) -> bytes:
        """Serialise the fitted state (safe format)."""

    @abstractmethod
    def _load(self, payload: bytes, spec: FeatureSpec) -> None:
        """Restore the fitted state from ``_dump`` output."""

    def _load_ranking(self, payload: bytes, spec: FeatureSpec) -> None:
        """Restore what ranking needs from ``_dump`` output (default: everything)."""
        self._load(payload, spec)

    # -- helpers ---------------------------------------------------------------------
    def _align(self, X: np.ndarray, target: FeatureSpec) -> np.ndarray:
        if X.shape[1] != self.feature_spec.n_features:
            raise ClassifierError(
                f"{self.nickname}: feature matrix has {X.shape[1]} columns, "
                f"spec expects {self.feature_spec.n_features}"
            )
        if target == self.feature_spec:
            return X
        return _align_to(X, self.feature_spec, target)

    def _training_arrays(self, quiver: Any) -> tuple[np.ndarray, np.ndarray]:
        X = np.atleast_2d(np.asarray(quiver.features, dtype=np.float64))
        y = np.asarray(quiver.labels).astype(np.int8)
        if X.shape[0] != y.shape[0]:
            raise ClassifierError(f"{self.nickname}: {X.shape[0]} feature rows, {y.size} labels")
        if X.shape[1] != self.feature_spec.n_features:
            raise ClassifierError(
                f"{self.nickname}: quiver has {X.shape[1]} feature columns, "
                f"spec expects {self.feature_spec.n_features}"
            )
        n_glitch = int((y == 1).sum())
        if n_glitch == 0 or n_glitch == y.size:
            raise ClassifierError(
                f"{self.nickname}: training needs both glitch and clean samples "
                f"(got {n_glitch} glitch of {y.size})"
            )
        return X, y

    def _make_model(self, n_samples: int, span: tuple[float, float]) -> Model:
        model = Model(
            flavor=self.flavor,
            payload=self._dump(),
            spec=self.feature_spec,
            n_samples=n_samples,
            span=span,
        )
        self._model = model
        return model


def _align_to(X: np.ndarray, have: FeatureSpec, want: FeatureSpec) -> np.ndarray:
    """Re-lay ``X`` from spec ``have`` to spec ``want``.

    Channels the model knows but the data lacks get the "no trigger" defaults
    of ``features.py`` (snr 0, frequency 0, dt = window); extra channels are dropped.
    """
    if have.columns != want.columns:
        raise ClassifierError(f"feature columns differ: {have.columns} vs {want.columns}")
    k = len(want.columns)
    out = np.zeros((X.shape[0], want.n_features))
    if "dt" in want.columns:
        out[:, want.columns.index("dt") :: k] = want.window
    pos = {c: i for i, c in enumerate(have.channels)}
    for j, ch in enumerate(want.channels):
        i = pos.get(ch)
        if i is not None:
            out[:, j * k : (j + 1) * k] = X[:, i * k : (i + 1) * k]
    return out


class SupervisedClassifier(Classifier):
    """Retrains from scratch on exactly the quiver it is given."""

    incremental: ClassVar[bool] = False

    def train(self, quiver: Any) -> Model:
        X, y = self._training_arrays(quiver)
        self._fit(X, y)
        return self._make_model(int(y.size), _quiver_span(quiver))

    @abstractmethod
    def _fit(self, X: np.ndarray, y: np.ndarray) -> None: ...


class IncrementalSupervisedClassifier(Classifier):
    """Adds each new quiver to what it already learnt (``partial_fit``).

    The first call initialises the model; later calls update it.  ``n_samples`` and
    ``span`` of the resulting :class:`Model` accumulate over calls.
    """

    incremental: ClassVar[bool] = True

    def train(self, quiver: Any) -> Model:
        X, y = self._training_arrays(quiver)
        span = _quiver_span(quiver)
        prev = self._model
        self._partial_fit(X, y, first=prev is None)
        n = int(y.size)
        if prev is not None:
            n += prev.n_samples
            span = (min(span[0], prev.span[0]), max(span[1], prev.span[1]))
        return self._make_model(n, span)

    @abstractmethod
    def _partial_fit(self, X: np.ndarray, y: np.ndarray, first: bool) -> None: ...
