"""scikit-learn classifiers behind the :class:`Classifier` API.

Preprocessing (a pure function of the feature matrix, no fitted state):

- ``snr`` -> ``log1p(snr)``: trigger SNRs span 5..1000+; the log keeps loud glitches
  from dominating linear models and scalers.  A missing trigger (snr 0) maps to 0.
- ``frequency`` -> ``log1p(frequency)``, for the same reason.
- ``dt`` -> ``1 - |dt| / window``: "closeness" in [0, 1]; 1 = coincident, 0 = at the
  window edge or no trigger (``features.py`` puts dt = window there), so a missing
  trigger and a far trigger look alike, which is what a witness test wants.  The sign
  is dropped by default (``signed_dt = false``): witness delays are dominated by
  symmetric jitter and a signed value would let models split on noise; set it true to
  append the signed ``dt / window`` as an extra column (the random forest's default).
- ``lags = true`` (random forest default; gradient boosting opt-in): at training, each
  channel's lag behind glitches is learnt from the matrix
  (:func:`~idq_common.science.classifiers.lags.channel_lags`, as OVL's ``lags``) and
  ``dt`` is measured from it, ``dt - lag``, in the closeness and signed columns; the
  lags are stored with the model. A witness answering 0.2 s late with 0.02 s of jitter
  is then "close" at 0.2 s: one split separates it from the background trigger that is
  loudest elsewhere in the window, where without a lag the forest needed two splits on
  the signed column per channel and rarely found them for rare glitch families.
  Incremental flavors do not offer it (their lags could not change with new data).
- ``lag_snr = true`` (random forest default, with ``lags``): one more column per
  channel, ``log1p(snr)`` of its trigger when that lies within the channel's learnt
  jitter of its lag (:func:`~idq_common.science.classifiers.lags.lag_tolerances`), else
  0: "a witness trigger this loud where the witness answers" is one split, not a
  closeness split followed by an snr split in each branch.
- ``witness_select = z`` (random forest default 3; 0 = off, with ``lags``): only the
  channels whose triggers sit at their lag significantly more often for glitches than
  for clean samples (:func:`~idq_common.science.classifiers.lags.witness_channels`)
  are given to the estimator; the kept columns of the layout above are stored with the
  model. With 240 channels and ~20 witnesses a forest drawing ``sqrt`` of 1000 columns
  per split mostly drew noise channels and split on their flukes (tuned on one
  ``FamilyModel`` seed, ``bench/science.py`` scores others). No witness found: every
  channel is kept.

Class balance: glitch samples are usually rarer than clean ones; SGD uses balanced
class weights (through per-batch sample weights, as ``class_weight`` cannot be
"balanced" under ``partial_fit``); gradient boosting uses ``class_weight="balanced"``
(``balanced = true``); naive Bayes uses equal priors.  Balance does not change the
ordering a perfect model would give, only how much effort goes to each class.  The
random forest is unweighted by default (``balanced = false``): efficiency at a FAP of
1e-2 is decided by the top 1 % of clean samples (background coincidences with a
witness lag), and balanced weights made each clean sample count ~0.2 of a glitch, so
leaves were purified against glitches rather than against those few clean look-alikes
(``FamilyModel`` tuning seeds 1 and 11-16: +0.03-0.08 of the witnessed bound at FAP
1e-2, every seed; scored on others in ``bench/science.py``).

Ranks: the random forest's ``predict_proba[:, 1]`` (its vote fraction; exact 0 and 1
are real ties).  The other flavors give a log-odds ``z`` (``decision_function``, or the
joint log-likelihood difference for naive Bayes) and the rank is
``1/2 + arctan(z) / pi``: monotone in ``z`` like ``predict_proba``, but a logistic
saturates to exactly 1.0 in float64 beyond ``z ~ 37`` (routine for naive Bayes over
hundreds of channels), which would tie every loud sample and blind calibration to the
tail; arctan stays distinct up to ``|z| ~ 1e15``.

Models are stored with skops (``skops.io.dumps``) and loaded with an explicit list of
trusted types, never with pickle: a type outside the list raises ClassifierError.
A stage that only ranks (:meth:`~idq_common.science.classifiers.base.Classifier.load_for_ranking`)
reads a forest's or SGD's fitted arrays from the payload without scikit-learn or skops
(:mod:`~idq_common.science.classifiers.skops_arrays`): scikit-learn is imported only
where an estimator is fitted or loaded whole (~2-3 CPU s per process).
"""

from __future__ import annotations

import importlib
import io
import re
import sys
import zipfile
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from idq_common.exceptions import ClassifierError, ClassifierParamError
from idq_common.science.classifiers.base import (
    IncrementalSupervisedClassifier,
    SupervisedClassifier,
)
from idq_common.science.classifiers.forest_fit import fit_forest
from idq_common.science.classifiers.lags import channel_lags, lag_tolerances, witness_channels
from idq_common.science.features import FeatureBuilder, FeatureSpec, Picks

#: Types skops does not trust by default but we do (scikit-learn internals of the
#: estimators below).  Anything else in a payload is refused.
TRUSTED_TYPES: tuple[str, ...] = (
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
)


#: ``lags = true``: histogram bins per feature window when looking for a channel's lag
#: (0.0625 s for a 0.5 s window, about a witness's jitter), the lowest snr counted (any
#: trigger: a missing one has snr 0) and the glitches by which the lag bin must beat the
#: clean rate (fewer: no lag, dt measured from 0)
LAG_BINS_PER_WINDOW = 8
LAG_SNR_MIN = 1e-300
LAG_MIN_EXCESS = 3
#: ``witness_select`` / ``lag_snr``: a trigger within ``LAG_NEAR`` windows of its
#: channel's lag is "at the lag" (0.1 s of a 0.5 s window, the jitter a witness may
#: have); the learnt jitter is this quantile of the glitch triggers' distance from the
#: lag, never below ``LAG_TOL_FLOOR`` windows
LAG_NEAR = 0.2
LAG_TOL_FLOOR = 0.04
LAG_TOL_QUANTILE = 0.9

#: scikit-learn parameter names that our parameters are called differently
_SKLEARN_NAMES = {"random_state": "seed"}


def _sklearn(path: str) -> Any:
    """``module.Name`` of scikit-learn, imported on first use (not at import of this module)."""
    module, _, name = path.rpartition(".")
    if "sklearn" not in sys.modules:
        _import_sklearn()
    return getattr(importlib.import_module(module), name)


def _import_sklearn() -> None:
    """Import scikit-learn without pandas, unless pandas is in already.

    ``sklearn.utils.fixes`` imports pandas if it can (``try: import pandas``) and keeps
    it as a module global that nothing reads (``pd_fillna`` is handed its pandas by
    the caller, which has one only for a DataFrame input; idq gives arrays): ~0.3-0.5
    CPU s of every process that fits or validates a scikit-learn estimator. A None
    entry in ``sys.modules`` makes that ``import`` raise ImportError, as if pandas were
    not installed; it is removed afterwards, so a later ``import pandas`` works.
    """
    if "pandas" in sys.modules:
        importlib.import_module("sklearn.base")
        return
    sys.modules["pandas"] = None  # type: ignore[assignment]
    try:
        importlib.import_module("sklearn.base")
    finally:
        if sys.modules.get("pandas", False) is None:
            del sys.modules["pandas"]


def _kind(est: Any) -> str:
    """The estimator's class name: a scikit-learn object's, or the arrays read for ranking."""
    return str(getattr(est, "kind", None) or type(est).__name__)


def _log_map(values: np.ndarray) -> np.ndarray:
    """``snr`` and ``frequency`` -> learnable (module docstring)."""
    return np.log1p(np.maximum(values, 0.0))


def _closeness(dt: np.ndarray, window: float) -> np.ndarray:
    """``dt`` -> closeness in [0, 1] (module docstring)."""
    return 1.0 - np.minimum(np.abs(dt) / window, 1.0)


def _signed(dt: np.ndarray, window: float) -> np.ndarray:
    """``dt`` -> the signed extra column of ``signed_dt``."""
    return np.clip(dt / window, -1.0, 1.0)


def _shift(dt: np.ndarray, window: float, lags: np.ndarray | None) -> np.ndarray:
    """``dt - lag`` per channel (columns), a missing trigger (``dt = window``) kept."""
    if lags is None:
        return dt
    return np.where(dt >= window, window, dt - lags[None, :])


def _lag_snr(snr: np.ndarray, shifted: np.ndarray, tol: np.ndarray) -> np.ndarray:
    """``lag_snr`` columns: ``log1p(snr)`` of triggers within ``tol`` of the lag, else 0."""
    return np.where(np.abs(shifted) <= tol[None, :], _log_map(snr), 0.0)


def preprocess(
    X: np.ndarray,
    spec: FeatureSpec,
    signed_dt: bool = False,
    lags: np.ndarray | None = None,
    tol: np.ndarray | None = None,
    cols: np.ndarray | None = None,
) -> np.ndarray:
    """Map raw features to learnable ones (see the module docstring).

    ``lags`` (per channel, s): ``dt`` is measured from the channel's lag, ``dt - lag``,
    in the closeness and the signed column; a missing trigger (``dt = +window``, the
    default of ``features.py``) stays closeness 0 and signed 1 whatever the lag.
    ``tol`` (per channel, s; needs ``snr`` and ``dt``): the ``lag_snr`` columns follow.
    ``cols``: the kept columns of that layout (``witness_select``), in order.
    """
    if cols is not None:
        kept = _preprocess_kept(X, spec, signed_dt, lags, tol, cols)
        if kept is not None:
            return kept
    k = len(spec.columns)
    out = np.empty_like(X)
    shifted = None
    if "dt" in spec.columns:
        shifted = _shift(X[:, spec.columns.index("dt") :: k], spec.window, lags)
    for j, col in enumerate(spec.columns):
        if shifted is not None and col == "dt":
            out[:, j::k] = _closeness(shifted, spec.window)
        else:
            out[:, j::k] = _log_map(X[:, j::k])
    if signed_dt and shifted is not None:
        out = np.hstack([out, _signed(shifted, spec.window)])
    if tol is not None and shifted is not None and "snr" in spec.columns:
        snr = X[:, spec.columns.index("snr") :: k]
        out = np.hstack([out, _lag_snr(snr, shifted, tol)])
    return out if cols is None else out[:, cols]


def _preprocess_kept(
    X: np.ndarray,
    spec: FeatureSpec,
    signed_dt: bool,
    lags: np.ndarray | None,
    tol: np.ndarray | None,
    cols: np.ndarray,
) -> np.ndarray | None:
    """``preprocess(...)[:, cols]`` from the kept columns' channels only.

    ``witness_select`` keeps a few of 1,000 channels: mapping every channel (log1p of
    two columns, stacking) and then dropping most was most of the forest's
    preprocessing at training. Every value is a function of its own cell (and its
    channel's lag and jitter), so the kept channels' sub-matrix, mapped alike, holds
    the same values. None: columns outside the layout (the full path says so).
    """
    k, nch = len(spec.columns), len(spec.channels)
    has_dt = "dt" in spec.columns
    n_signed = nch if signed_dt and has_dt else 0
    n_lag = nch if tol is not None and has_dt and "snr" in spec.columns else 0
    base = nch * k
    cols = np.asarray(cols)
    if cols.ndim != 1 or cols.size == 0 or cols.min() < 0 or cols.max() >= base + n_signed + n_lag:
        return None
    block = np.where(cols < base, 0, np.where(cols < base + n_signed, 1, 2))
    ch = np.select([block == 0, block == 1], [cols // k, cols - base], cols - base - n_signed)
    chans = np.unique(ch)
    m = chans.size
    sub_spec = FeatureSpec(tuple(spec.channels[i] for i in chans), spec.window, spec.columns)
    sub = preprocess(
        X[:, (chans[:, None] * k + np.arange(k)).ravel()],
        sub_spec,
        signed_dt,
        None if lags is None else lags[chans],
        None if tol is None else tol[chans],
    )
    pos = np.searchsorted(chans, ch)
    at = np.select(
        [block == 0, block == 1],
        [pos * k + cols % k, m * k + pos],
        m * k + (m if n_signed else 0) + pos,
    )
    return sub[:, at]


def _log_rows(picks: Picks, column: str) -> np.ndarray:
    """The log map of a column per trigger row (shared by the builders of a chunk).

    Only the rows some cell picked are mapped (about half of a dense grid's, fewer
    for sparse samples); the others hold 0 and are never read (builders read rows
    through the picks)."""

    def mapped() -> np.ndarray:
        values, at = picks.rows(column), picks.picked
        out = np.zeros(values.size)
        out[at] = _log_map(values[at])
        return out

    return picks.memo(("log1p", column), mapped)


@dataclass(frozen=True, eq=False)
class LearnableMatrix:
    """``preprocess`` of the feature matrix (no signed dt), built per trigger."""

    columns: tuple[str, ...]
    window: float
    width: int
    lags: np.ndarray | None = None

    def new(self, n: int) -> np.ndarray:
        return np.empty((n, self.width))

    def fill(self, picks: Picks, out: np.ndarray) -> None:
        rows = {col: _log_rows(picks, col) for col in self.columns if col != "dt"}
        picks.write_matrix(out, self.columns, rows, "closeness", self.lags)


@dataclass(frozen=True, eq=False)
class ScaledMatrix:
    """``preprocess`` then a StandardScaler's ``(z - mean) / scale``, built per trigger.

    For ``snr`` and ``frequency`` the map and the channel's scaling are applied to each
    trigger row before picking (the same float operations on the same values as on the
    picked cells); ``dt`` depends on the sample time and is mapped per cell.
    """

    columns: tuple[str, ...]
    window: float
    mean: np.ndarray
    scale: np.ndarray
    lags: np.ndarray | None = None

    def new(self, n: int) -> np.ndarray:
        return np.empty((n, self.mean.size))

    def fill(self, picks: Picks, out: np.ndarray) -> None:
        k, ch = len(self.columns), picks.channel
        rows = {}
        for j, col in enumerate(self.columns):
            if col != "dt":
                z = _log_rows(picks, col) - self.mean[j::k].take(ch)
                z /= self.scale[j::k].take(ch)
                rows[col] = z
        j = self.columns.index("dt") if "dt" in self.columns else 0
        mean, scale = self.mean[j::k], self.scale[j::k]  # read for the dt column only
        picks.write_matrix(out, self.columns, rows, "scaled", self.lags, mean, scale)


@dataclass(frozen=True, eq=False)
class LinearScore:
    """SGD's ``ScaledMatrix @ coef`` per sample (its decision less the intercept), one
    column, built per trigger without the matrix.

    Each trigger row's mapped, scaled ``snr`` and ``frequency`` are multiplied by their
    weight once per row; ``dt``'s cells are scaled and weighted per cell; the products
    are summed per sample in ``einsum``'s order (:meth:`Picks.write_linear`), so the
    decision has the bits of ``einsum("ij,j->i", ScaledMatrix, coef)``. Saves writing
    and reading back the ``(samples, 3 x channels)`` matrix, SGD's largest per-stride
    cost at 1,000 channels.
    """

    columns: tuple[str, ...]
    window: float
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    lags: np.ndarray | None = None

    def new(self, n: int) -> np.ndarray:
        return np.empty((n, 1))

    def fill(self, picks: Picks, out: np.ndarray) -> None:
        k = len(self.columns)
        names = [c for c in self.columns if c != "dt"]
        prods = np.zeros((len(names), picks.n_rows))
        for r, col in enumerate(names):
            # ScaledMatrix's per-row cell, then times the weight: the same roundings
            j = self.columns.index(col)
            mean, scale, coef = self.mean[j::k], self.scale[j::k], self.coef[j::k]
            picks.scaled_rows(_log_rows(picks, col), mean, scale, coef, out=prods[r])
        j = self.columns.index("dt") if "dt" in self.columns else 0
        mean, scale, coef = self.mean[j::k], self.scale[j::k], self.coef[j::k]
        picks.write_linear(out[:, 0], self.columns, prods, self.lags, mean, scale, coef)


@dataclass(frozen=True, eq=False)
class TreeInput:
    """A forest's float32 input: only the columns its trees split on, in order.

    ``used``: sorted columns of the forest's input its trees split on; column ``m``
    of what is built is ``used[m]`` of the forest's input (:class:`FlatForest` walks
    the trees with their features renumbered the same way). ``full``: each forest
    input column's column in the whole preprocessed layout (``preprocess``:
    channel-major mapped columns, then one signed dt column per channel when
    ``signed``, then one ``lag_snr`` column per channel when ``tol`` is given; the
    forest's input is the kept columns of it, ``witness_select``).
    """

    columns: tuple[str, ...]
    window: float
    used: np.ndarray
    lags: np.ndarray | None = None
    full: np.ndarray | None = None
    signed: bool = True
    tol: np.ndarray | None = None

    def new(self, n: int) -> np.ndarray:
        return np.empty((n, self.used.size), dtype=np.float32)

    def _lags(self, chans: np.ndarray) -> np.ndarray | None:
        return None if self.lags is None else self.lags[chans]

    def fill(self, picks: Picks, out: np.ndarray) -> None:
        k = len(self.columns)
        base = picks.nch * k
        full = self.used if self.full is None else self.full[self.used]
        for j, col in enumerate(self.columns):
            at = np.flatnonzero((full < base) & (full % k == j))
            if at.size == 0:
                continue
            chans = full[at] // k
            if col == "dt":
                picks.write_dt(out, at, chans, "closeness", self._lags(chans))
            else:
                picks.write(_log_rows(picks, col), out, at, chans)
        n_signed = picks.nch if self.signed and "dt" in self.columns else 0
        at = np.flatnonzero((full >= base) & (full < base + n_signed))
        if at.size:
            chans = full[at] - base
            picks.write_dt(out, at, chans, "signed", self._lags(chans))
        at = np.flatnonzero(full >= base + n_signed)
        if at.size and self.tol is not None:
            chans = full[at] - base - n_signed
            snr = _log_rows(picks, "snr")
            tol = self.tol[chans]
            picks.write_dt(out, at, chans, "lag_snr", self._lags(chans), tol=tol, values=snr)


def _dumps(obj: dict[str, Any]) -> bytes:
    """``canonical_skops(skops.io.dumps(obj))``, the same bytes at about half the CPU.

    skops' ``dumps`` writes every array into a zip (checking ``namelist()`` per array:
    quadratic in the ~500 arrays of a forest) and its schema with the pure-Python JSON
    encoder (``indent=2``), and ``canonical_skops`` then re-reads and re-writes the zip:
    ~0.4 CPU s per 100-tree forest, with every train round. Here skops' own
    ``get_state`` fills a dict, the schema is encoded by orjson when it provably gives
    json's text (:func:`_schema_json`), and the canonical zip is written once.
    """
    from idq_common.science.classifiers import skops_write

    try:
        # skops' own get_state, reproduced for our types: importing skops.io costs
        # ~1-1.5 CPU s per process (skops_write.py); anything else goes through skops
        state, members = skops_write.get_state(obj)
    except skops_write.Unsupported:
        state, members = _skops_state(obj)
    # skops.io.dumps stores every member uncompressed (ZIP_STORED, its default)
    kinds = dict.fromkeys([*members, "schema.json"], zipfile.ZIP_STORED)
    return _canonical_zip(_schema_json(state), members, kinds)


def _skops_state(obj: dict[str, Any]) -> tuple[dict[str, Any], dict[str, bytes]]:
    """skops' own state of ``obj`` and its members (what ``skops.io.dumps`` writes)."""
    # skops is imported where models are stored and loaded: importing it costs ~1-3 s
    # that every command validating a configuration (idq query, idq report) would pay
    import skops
    import skops.io  # registers skops' get_state dispatch
    from skops.io._utils import SaveContext, get_state

    members = _Members()
    ctx = SaveContext(zip_file=members)
    state = get_state(obj, ctx)
    ctx.clear_memo()
    # what skops.io._persist._save adds, in its order
    state["protocol"] = ctx.protocol
    state["_skops_version"] = skops.__version__
    return state, members


class _Members(dict[str, bytes]):
    """The arrays skops writes, by name: the part of ``ZipFile`` its savers use."""

    def namelist(self) -> _Members:
        return self  # ``name in namelist()``: a dict lookup, not a list scan

    def writestr(self, name: str, data: Any) -> None:
        self[name] = bytes(data)


def _schema_json(state: dict[str, Any]) -> str:
    """``json.dumps(state, indent=2)`` (skops' schema text), by orjson when identical.

    orjson's indented layout is json's; numbers and strings may be written differently
    (``1e-5`` for ``1e-05``, NaN as null, raw UTF-8), so the compact texts of both are
    compared first (json's compact encoder is C, fast) and any difference falls back.
    """
    import json

    import orjson

    try:
        same = orjson.dumps(state) == json.dumps(state, separators=(",", ":")).encode()
    except (TypeError, ValueError, orjson.JSONEncodeError):
        same = False
    if not same:
        return json.dumps(state, indent=2)
    return orjson.dumps(state, option=orjson.OPT_INDENT_2).decode()


_OBJ_ID = re.compile(r'"__id__": (\d+)|"(\d+)\.npy"')


def canonical_skops(payload: bytes) -> bytes:
    """The same skops zip with process-independent names and no timestamps.

    skops names array members and memo ids after ``id(obj)`` and stamps the zip with
    the wall clock, so the same estimator gave different bytes (and a different
    model id) in every process: a train round redone after a crash announced a new
    model for the same data, and downstream outputs named it. Here every such number
    becomes its rank of first appearance in ``schema.json`` (consistently, so memo
    references still match), members are written in sorted order at a fixed time.
    """
    with zipfile.ZipFile(io.BytesIO(payload)) as zin:
        schema = zin.read("schema.json").decode()
        members, kinds = {}, {}
        for info in zin.infolist():
            kinds[info.filename] = info.compress_type
            if info.filename != "schema.json":
                members[info.filename] = zin.read(info.filename)
    return _canonical_zip(schema, members, kinds)


def _canonical_zip(schema: str, members: dict[str, bytes], kinds: dict[str, int]) -> bytes:
    """The canonical zip of a skops schema and its members (``canonical_skops``).

    ``kinds``: the compression of each member, by its name in skops' zip. A member
    keeps it if its name is kept; a renamed one is looked up by its new name, so is
    deflated (as the model bytes have always been: they define the model id).
    """
    order: dict[str, str] = {}
    for m in _OBJ_ID.finditer(schema):
        order.setdefault(m.group(1) or m.group(2), str(len(order)))

    def sub(m: re.Match[str]) -> str:
        if m.group(1) is not None:
            return f'"__id__": {order[m.group(1)]}'
        return f'"{order[m.group(2)]}.npy"'

    out_members = {"schema.json": _OBJ_ID.sub(sub, schema).encode()}
    for filename, data in members.items():
        stem = filename[: -len(".npy")] if filename.endswith(".npy") else None
        out_members[f"{order[stem]}.npy" if stem in order else filename] = data
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zout:
        for name in sorted(out_members):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = kinds.get(name, zipfile.ZIP_DEFLATED)
            zout.writestr(info, out_members[name])
    return out.getvalue()


def _loads(payload: bytes) -> dict[str, Any]:
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(data=payload)
    except Exception as exc:  # skops raises assorted errors on corrupt zips
        raise ClassifierError(f"unreadable skops payload: {exc}") from exc
    refused = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if refused:
        raise ClassifierError(f"model payload holds untrusted types {refused}")
    obj = sio.loads(payload, trusted=list(untrusted))
    if not isinstance(obj, dict) or "estimator" not in obj:
        raise ClassifierError("skops payload is not an idq estimator bundle")
    return obj


@dataclass(frozen=True, eq=False)
class TreeArrays:
    """A fitted tree's node arrays, as ``sklearn.tree._tree.Tree`` exposes them."""

    children_left: np.ndarray
    children_right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    missing_go_to_left: np.ndarray | None
    value: np.ndarray

    @property
    def node_count(self) -> int:
        return int(self.children_left.size)

    @classmethod
    def read(cls, state: dict[str, Any], n_features: int, n_classes: int) -> TreeArrays:
        """From a stored ``Tree``'s state; every index checked (the walk trusts them).

        Raises
        ------
        ClassifierError
            A child that is not after its parent or past the last node, a feature out
            of range, values of another shape: the compiled walk would read out of
            bounds or never end on such a tree.
        """
        nodes, value = state["nodes"], np.asarray(state["values"])
        names = nodes.dtype.names or ()
        if not {"left_child", "right_child", "feature", "threshold"} <= set(names):
            raise ClassifierError("model tree nodes lack their fields")
        left = np.asarray(nodes["left_child"], dtype=np.int64)
        right = np.asarray(nodes["right_child"], dtype=np.int64)
        feature = np.asarray(nodes["feature"], dtype=np.int64)
        n = left.size
        at = np.arange(n)
        inner = left != -1
        leaf_ok = (right[~inner] == -1).all()
        inner_ok = (
            (left[inner] > at[inner]).all()
            and (right[inner] > at[inner]).all()
            and (np.maximum(left, right)[inner] < n).all()
            and (feature[inner] >= 0).all()
            and (feature[inner] < n_features).all()
        )
        if not (leaf_ok and inner_ok) or value.ndim != 3 or value.shape[::2] != (n, n_classes):
            raise ClassifierError("model tree has out-of-range children, features or values")
        missing = nodes["missing_go_to_left"] if "missing_go_to_left" in names else None
        return cls(left, right, feature, nodes["threshold"], missing, value)


@dataclass(frozen=True, eq=False)
class _FittedTree:
    tree_: TreeArrays


@dataclass(frozen=True, eq=False)
class ForestArrays:
    """What ranking needs of a fitted ``RandomForestClassifier`` (:class:`FlatForest`)."""

    kind: ClassVar[str] = "RandomForestClassifier"
    classes_: np.ndarray
    n_features_in_: int
    estimators_: list[_FittedTree]


@dataclass(frozen=True, eq=False)
class LinearArrays:
    """What ranking needs of a fitted ``SGDClassifier``: its decision's coefficients."""

    kind: ClassVar[str] = "SGDClassifier"
    coef_: np.ndarray
    intercept_: np.ndarray
    n_features_in_: int


@dataclass(frozen=True, eq=False)
class ScalerArrays:
    """A fitted ``StandardScaler``'s ``transform`` (the same float operations)."""

    mean_: np.ndarray | None
    scale_: np.ndarray | None
    with_mean: bool
    with_std: bool
    n_features_in_: int

    def transform(self, X: np.ndarray) -> np.ndarray:
        # StandardScaler.transform: a float copy, then in place -= mean_, /= scale_
        Z = np.array(X, dtype=np.float64 if X.dtype.kind != "f" else X.dtype, copy=True)
        if self.with_mean:
            Z -= np.asarray(self.mean_).astype(Z.dtype)
        if self.with_std:
            Z /= np.asarray(self.scale_).astype(Z.dtype)
        return Z


def _ranking_bundle(payload: bytes) -> dict[str, Any] | None:
    """The bundle of :func:`_loads` with the estimator's (and scaler's) fitted arrays
    only, read without scikit-learn or skops; None: not a forest or SGD bundle this
    reads (load it whole)."""
    from idq_common.science.classifiers.skops_arrays import CLASS, read_bundle

    obj = read_bundle(payload)
    if obj is None:
        return None
    est, scaler = obj["estimator"], obj.get("scaler")
    if not isinstance(est, dict) or (scaler is not None and not isinstance(scaler, dict)):
        return None
    try:
        if est[CLASS] == "RandomForestClassifier":
            classes = np.asarray(est["classes_"])
            n_features = int(est["n_features_in_"])
            trees = [
                _FittedTree(TreeArrays.read(t["tree_"], n_features, classes.size))
                for t in est["estimators_"]
            ]
            obj["estimator"] = ForestArrays(classes, n_features, trees)
        elif est[CLASS] == "SGDClassifier":
            obj["estimator"] = LinearArrays(
                np.asarray(est["coef_"], dtype=np.float64),
                np.asarray(est["intercept_"], dtype=np.float64),
                int(est["n_features_in_"]),
            )
        else:
            return None
        if scaler is not None:
            if scaler[CLASS] != "StandardScaler":
                return None
            obj["scaler"] = ScalerArrays(
                None if scaler["mean_"] is None else np.asarray(scaler["mean_"]),
                None if scaler["scale_"] is None else np.asarray(scaler["scale_"]),
                bool(scaler["with_mean"]),
                bool(scaler["with_std"]),
                int(scaler["n_features_in_"]),
            )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ClassifierError(f"malformed model payload: {exc}") from exc
    return obj


class _SklearnMixin:
    """Shared rank/dump/load for wrappers holding ``self._est`` (+ optional scaler)."""

    feature_spec: FeatureSpec
    params: dict[str, Any]
    _est: Any = None
    _scaler: Any = None
    _spec: FeatureSpec | None = None
    #: per-channel lags of the fitted model (``lags = true``), None: dt measured from 0
    _lags: np.ndarray | None = None
    #: per-channel jitter about the lag (``lag_snr``), None: no such columns
    _tol: np.ndarray | None = None
    #: kept columns of the preprocessed layout (``witness_select``), None: all
    _cols: np.ndarray | None = None

    def _prep(self, X: np.ndarray) -> np.ndarray:
        spec = self._spec or self.feature_spec
        signed = bool(self.params.get("signed_dt", False))
        Z = preprocess(X, spec, signed, self._lags, self._tol, self._cols)
        if self._scaler is not None:
            Z = self._scaler.transform(Z)
        return Z

    def _learn_lags(self, X: np.ndarray, y: np.ndarray) -> np.ndarray | None:
        """Per-channel lags from the training matrix (``lags = true``), else None."""
        spec = self.feature_spec
        if not self.params.get("lags", False) or not {"snr", "dt"} <= set(spec.columns):
            return None
        k = len(spec.columns)
        return channel_lags(
            X[:, spec.columns.index("snr") :: k],
            X[:, spec.columns.index("dt") :: k],
            y,
            spec.window,
            spec.window / LAG_BINS_PER_WINDOW,
            LAG_SNR_MIN,
            LAG_MIN_EXCESS,
        )

    def _learn_witnesses(self, X: np.ndarray, y: np.ndarray) -> None:
        """``lag_snr`` jitters and ``witness_select`` columns from the training matrix."""
        self._tol = self._cols = None
        spec, lags = self.feature_spec, self._lags
        if lags is None:
            return
        k, w = len(spec.columns), spec.window
        snr = X[:, spec.columns.index("snr") :: k]
        dt = X[:, spec.columns.index("dt") :: k]
        if self.params.get("lag_snr", False):
            near, floor = LAG_NEAR * w, LAG_TOL_FLOOR * w
            self._tol = lag_tolerances(snr, dt, y, lags, near, floor, LAG_TOL_QUANTILE)
        z = float(self.params.get("witness_select", 0))
        if z > 0:
            keep = witness_channels(snr, dt, y, lags, LAG_NEAR * w, z, LAG_MIN_EXCESS)
            if keep.any():
                nch = len(spec.channels)
                signed = bool(self.params.get("signed_dt", False))
                per_channel = [np.arange(nch) * k + j for j in range(k)]
                extra = int(signed) + int(self._tol is not None)
                per_channel += [nch * k + e * nch + np.arange(nch) for e in range(extra)]
                layout = np.stack(per_channel, axis=1)  # (nch, columns per channel)
                self._cols = np.sort(layout[keep].ravel())

    def column_channels(self) -> np.ndarray:
        """The channel index (into the spec's channels) of every column the estimator sees.

        The preprocessed layout is channel-major (every feature column of channel 0,
        then channel 1 ...), then one block per channel for ``signed_dt`` and for
        ``lag_snr``; ``witness_select`` keeps some of those columns.
        """
        spec = self._spec or self.feature_spec
        n, k = len(spec.channels), len(spec.columns)
        extra = int(bool(self.params.get("signed_dt", False))) + int(self._tol is not None)
        layout = np.concatenate([np.repeat(np.arange(n), k), np.tile(np.arange(n), extra)])
        return layout if self._cols is None else layout[self._cols]

    def feature_builder(self) -> FeatureBuilder | None:
        spec = self._spec
        if self._est is None or spec != self.feature_spec:
            return None
        signed = bool(self.params.get("signed_dt", False))
        if _kind(self._est) == "RandomForestClassifier":
            return _tree_input(self._est, spec, signed, self._lags, self._tol, self._cols)
        if signed or self._tol is not None or self._cols is not None:
            return None
        if self._scaler is None:
            return LearnableMatrix(spec.columns, spec.window, spec.width, self._lags)
        if getattr(self._scaler, "mean_", None) is None or self._scaler.scale_ is None:
            return None
        scaler = self._scaler
        if self._linear_score():
            coef = np.ascontiguousarray(self._est.coef_[0], dtype=np.float64)
            mean, scale = scaler.mean_, scaler.scale_
            return LinearScore(spec.columns, spec.window, mean, scale, coef, self._lags)
        return ScaledMatrix(spec.columns, spec.window, scaler.mean_, scaler.scale_, self._lags)

    def _linear_score(self) -> bool:
        """The built input is SGD's decision less its intercept (:class:`LinearScore`):
        a float64 scaler (``ScaledMatrix``'s cells) before a one-row ``coef_``."""
        coef = getattr(self._est, "coef_", None)
        return (
            _kind(self._est) == "SGDClassifier"
            and coef is not None
            and np.shape(coef) == (1, self._scaler.mean_.size)
            and np.asarray(coef).dtype == np.float64
            and np.asarray(self._scaler.mean_).dtype == np.float64
            and np.asarray(self._scaler.scale_).dtype == np.float64
        )

    def _rank(self, X: np.ndarray) -> np.ndarray:
        return self._predict(self._prep(X))

    def _rank_built(self, built: np.ndarray) -> np.ndarray:
        if _kind(self._est) == "RandomForestClassifier":
            return FlatForest.of(self._est).glitch_proba(built, compact=True)
        if self._scaler is not None and self._linear_score():
            # LinearScore built einsum(Z, coef) per row: _predict's sum, then the rest
            z = built[:, 0] + self._est.intercept_[0]
            return 0.5 + np.arctan(np.asarray(z, dtype=np.float64)) / np.pi
        return self._predict(built)

    def _predict(self, Z: np.ndarray) -> np.ndarray:
        if _kind(self._est) == "RandomForestClassifier":
            return _forest_glitch_proba(self._est, Z)
        if _kind(self._est) == "GaussianNB":
            jll = self._est.predict_joint_log_proba(Z)
            z = jll[:, 1] - jll[:, 0]
        elif _kind(self._est) == "SGDClassifier":
            # decision_function's X @ coef.T goes through BLAS, whose kernels block rows:
            # a row's last bits would depend on how many rows are ranked with it. One
            # dot product per row makes a sample's rank independent of its batch.
            z = np.einsum("ij,j->i", Z, self._est.coef_[0]) + self._est.intercept_[0]
        else:
            z = self._est.decision_function(Z)
        # classes_ is [0, 1] for every flavor here (partial_fit is given classes=[0, 1])
        return 0.5 + np.arctan(np.asarray(z, dtype=np.float64)) / np.pi

    def _new_estimator(self) -> Any:
        raise NotImplementedError

    def check(self, fit: bool = True) -> None:
        """Validate the parameters with scikit-learn's own constraints (no fitting).

        ``fit=False``: only the parameters of the preprocessing (what ranking reads);
        scikit-learn is not imported.
        """
        for name in ("signed_dt", "lags", "lag_snr", "balanced"):
            if not isinstance(self.params.get(name, False), bool):
                raise ClassifierParamError(name, "expected true or false")
        z = self.params.get("witness_select", 0)
        if isinstance(z, bool) or not isinstance(z, int | float) or not z >= 0:
            raise ClassifierParamError("witness_select", f"expected a number >= 0, got {z!r}")
        seed = self.params.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ClassifierParamError("seed", f"expected an integer >= 0, got {seed!r}")
        if "epochs" in self.params:
            epochs = self.params["epochs"]
            if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
                raise ClassifierParamError("epochs", f"expected an integer >= 1, got {epochs!r}")
        if not fit:
            return
        try:
            self._new_estimator()._validate_params()
        except (ValueError, TypeError) as exc:
            text = str(exc)
            m = re.search(r"The '(\w+)' parameter", text)
            name = _SKLEARN_NAMES.get(m.group(1), m.group(1)) if m else "params"
            raise ClassifierParamError(name, text.replace("\n", " ")) from None

    def _dump(self) -> bytes:
        bundle = {"estimator": self._est, "scaler": self._scaler}
        if self._lags is not None:
            bundle["lags"] = np.asarray(self._lags, dtype=np.float64)
        if self._tol is not None:
            bundle["lag_tol"] = np.asarray(self._tol, dtype=np.float64)
        if self._cols is not None:
            bundle["columns"] = np.asarray(self._cols, dtype=np.int64)
        return _dumps(bundle)

    def _load(self, payload: bytes, spec: FeatureSpec) -> None:
        self._load_bundle(_loads(payload), spec)

    def _load_ranking(self, payload: bytes, spec: FeatureSpec) -> None:
        obj = _ranking_bundle(payload)
        if obj is None:
            self._load(payload, spec)
        else:
            self._load_bundle(obj, spec)

    def _load_bundle(self, obj: dict[str, Any], spec: FeatureSpec) -> None:
        lags, tol = obj.get("lags"), obj.get("lag_tol")
        for name, arr in (("lags", lags), ("lag_tol", tol)):
            if arr is not None and np.shape(arr) != (len(spec.channels),):
                raise ClassifierError(
                    f"model {name} have shape {np.shape(arr)}, its spec "
                    f"{len(spec.channels)} channels"
                )
        lags = None if lags is None else np.asarray(lags, dtype=np.float64)
        tol = None if tol is None or lags is None else np.asarray(tol, dtype=np.float64)
        # an estimator fitted on another number of features than its spec gives would
        # fail on every stride (a crash loop downstream): refuse it here, at load
        signed = bool(self.params.get("signed_dt", False))
        full = preprocess(np.zeros((1, spec.n_features)), spec, signed, lags, tol).shape[1]
        cols = obj.get("columns")
        if cols is not None:
            cols = np.asarray(cols, dtype=np.int64)
            if cols.ndim != 1 or (cols.size and not 0 <= cols.min() <= cols.max() < full):
                raise ClassifierError(f"model columns out of its spec's {full} features")
        want = full if cols is None else int(cols.size)
        for part in (obj.get("scaler"), obj["estimator"]):
            got = getattr(part, "n_features_in_", None)
            if got is not None and int(got) != want:
                raise ClassifierError(
                    f"model fitted on {int(got)} features, but its spec gives {want} "
                    f"({len(spec.channels)} channels x {len(spec.columns)} columns)"
                )
        self._est, self._scaler, self._spec = obj["estimator"], obj.get("scaler"), spec
        self._lags, self._tol, self._cols = lags, tol, cols


def _forest_glitch_proba(forest: Any, Z: np.ndarray) -> np.ndarray:
    """``forest.predict_proba(Z)[:, glitch]``, the same arithmetic without joblib.

    ``predict_proba`` casts to float32, sums the trees' leaf probabilities in estimator
    order into float64 zeros and divides by the number of trees; here the trees are
    walked by a compiled loop (:class:`FlatForest`) instead of one scikit-learn call per
    tree, whose fixed cost exceeded the trees' work on a stride's rows
    (tests/common/test_stride.py compares with ``predict_proba`` bit for bit).
    """
    X = np.ascontiguousarray(Z, dtype=np.float32)
    return FlatForest.of(forest).glitch_proba(X, compact=False)


@dataclass(frozen=True, eq=False)
class FlatForest:
    """A fitted forest's trees as flat node arrays, for the compiled walk.

    ``compact``: the features renumbered to positions in ``used`` (the sorted columns
    the trees split on), the layout :class:`TreeInput` builds.
    """

    used: np.ndarray
    roots: np.ndarray
    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    compact: np.ndarray
    threshold: np.ndarray
    nan_left: np.ndarray
    leaf: np.ndarray
    n_features: int

    @classmethod
    def of(cls, forest: Any) -> FlatForest:
        """The flat form of ``forest``, computed once per fitted forest (cached)."""
        got = _FLAT.get(id(forest))
        if got is not None and got[0] is forest:
            return got[1]
        glitch = list(forest.classes_).index(1)
        trees = [est.tree_ for est in forest.estimators_]
        sizes = np.array([t.node_count for t in trees], dtype=np.int64)
        roots = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)

        def nodes(name: str, dtype: Any) -> np.ndarray:
            return np.concatenate([np.asarray(getattr(t, name)) for t in trees]).astype(dtype)

        def child(name: str) -> np.ndarray:
            parts = []
            for t, r in zip(trees, roots, strict=True):
                c = np.asarray(getattr(t, name), dtype=np.int64)
                parts.append(np.where(c < 0, -1, c + r))
            return np.concatenate(parts)

        left = child("children_left")
        feature = np.where(left < 0, 0, nodes("feature", np.int64))
        used = np.unique(feature[left >= 0]).astype(np.int64)
        missing = [getattr(t, "missing_go_to_left", None) for t in trees]
        nan_left = (
            np.concatenate([np.asarray(m, dtype=bool) for m in missing])
            if all(m is not None for m in missing)
            else np.ones(left.size, dtype=bool)
        )
        # tree_.value holds each leaf's class fractions (what predict_proba returns)
        leaf = np.concatenate([np.asarray(t.value)[:, 0, glitch] for t in trees])
        flat = cls(
            used=used,
            roots=roots,
            left=left,
            right=child("children_right"),
            feature=feature,
            compact=np.searchsorted(used, feature).astype(np.int64),
            threshold=nodes("threshold", np.float64),
            nan_left=nan_left,
            leaf=np.ascontiguousarray(leaf, dtype=np.float64),
            n_features=int(forest.n_features_in_),
        )
        if len(_FLAT) > 16:  # models are replaced: keep the few in use
            _FLAT.clear()
        _FLAT[id(forest)] = (forest, flat)
        return flat

    def glitch_proba(self, X: np.ndarray, compact: bool) -> np.ndarray:
        """Mean glitch-class leaf fraction over the trees, per row of a C-contiguous
        float32 ``X`` (all ``n_features`` columns, or the ``used`` ones if ``compact``)."""
        from idq_common.science import _windows  # numba: imported on first use only

        out = np.empty(X.shape[0], dtype=np.float64)
        feature = self.compact if compact else self.feature
        _windows.forest_sum(
            X,
            self.roots,
            self.left,
            self.right,
            feature,
            self.threshold,
            self.nan_left,
            self.leaf,
            out,
        )
        out /= self.roots.size
        return out


#: the flat form of each fitted forest in use (computed once per model)
_FLAT: dict[int, tuple[Any, FlatForest]] = {}


def _tree_input(
    forest: Any,
    spec: FeatureSpec,
    signed: bool,
    lags: np.ndarray | None,
    tol: np.ndarray | None = None,
    cols: np.ndarray | None = None,
) -> TreeInput | None:
    width = int(forest.n_features_in_)
    has_dt = "dt" in spec.columns
    full = spec.width + len(spec.channels) * (int(signed and has_dt) + int(tol is not None))
    if width != (full if cols is None else cols.size):
        return None  # trained with another signed_dt: the matrix path says what is wrong
    used = FlatForest.of(forest).used
    return TreeInput(spec.columns, spec.window, used, lags, cols, signed, tol)


class _BatchBase(_SklearnMixin, SupervisedClassifier):
    """A scikit-learn estimator fitted once on the whole training set.

    ``estimator`` is built from the parameters named in ``estimator_params`` (the same
    names as in :attr:`params`), ``class_weight="balanced"`` (``balanced = true``, else
    unweighted) and ``random_state=seed``.
    """

    #: the scikit-learn class, ``module.Name`` (imported when one is made)
    estimator: ClassVar[str]
    estimator_params: ClassVar[tuple[str, ...]]

    def _new_estimator(self) -> Any:
        p = self.params
        kw = {name: p[name] for name in self.estimator_params}
        cls = _sklearn(self.estimator)
        weight = "balanced" if p.get("balanced", True) else None
        return cls(**kw, class_weight=weight, random_state=p["seed"])

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        self._spec, self._scaler = self.feature_spec, None
        self._lags = self._learn_lags(X, y)
        self._learn_witnesses(X, y)
        self._est = fit_forest(self._new_estimator(), self._prep(X), y)


class RandomForest(_BatchBase):
    """``RandomForestClassifier``, unweighted unless ``balanced`` (module docstring)."""

    flavor: ClassVar[str] = "random_forest"
    defaults: ClassVar[dict[str, Any]] = {
        "n_estimators": 100,
        "max_depth": 12,
        "min_samples_leaf": 2,
        "max_features": "sqrt",
        "n_jobs": 1,
        "seed": 0,
        "signed_dt": True,
        "lags": True,
        "lag_snr": True,
        "witness_select": 3.0,
        "balanced": False,
    }

    estimator = "sklearn.ensemble.RandomForestClassifier"
    estimator_params = ("n_estimators", "max_depth", "min_samples_leaf", "max_features", "n_jobs")


class HistGradientBoosting(_BatchBase):
    """``HistGradientBoostingClassifier`` with balanced class weights."""

    flavor: ClassVar[str] = "hist_gradient_boosting"
    defaults: ClassVar[dict[str, Any]] = {
        "max_iter": 200,
        "learning_rate": 0.1,
        "max_leaf_nodes": 31,
        "l2_regularization": 0.0,
        "early_stopping": "auto",
        "seed": 0,
        "signed_dt": False,
        "lags": False,
        "balanced": True,
    }

    estimator = "sklearn.ensemble.HistGradientBoostingClassifier"
    estimator_params = (
        "max_iter",
        "learning_rate",
        "max_leaf_nodes",
        "l2_regularization",
        "early_stopping",
    )


class _IncrementalBase(_SklearnMixin, IncrementalSupervisedClassifier):
    """``partial_fit`` over ``epochs`` seeded shuffles of each new batch."""

    def _partial_fit(self, X: np.ndarray, y: np.ndarray, first: bool) -> None:
        p = self.params
        if first or self._est is None:
            self._spec = self.feature_spec
            self._est = self._new_estimator()
            scaler = _sklearn("sklearn.preprocessing.StandardScaler")
            self._scaler = scaler() if self._use_scaler else None
        assert self._spec is not None
        Z = preprocess(X, self._spec, bool(p.get("signed_dt", False)))
        if self._scaler is not None:
            # running mean/variance: the scaler learns incrementally like the model
            self._scaler.partial_fit(Z)
            Z = self._scaler.transform(Z)
        rng = np.random.default_rng(int(p["seed"]) + (0 if first else int(y.size)))
        weights = _sklearn("sklearn.utils.class_weight.compute_sample_weight")
        w = weights("balanced", y) if self._balanced else None
        for _ in range(int(p["epochs"])):
            order = rng.permutation(y.size)
            kw = {} if w is None else {"sample_weight": w[order]}
            self._est.partial_fit(Z[order], y[order], classes=np.array([0, 1]), **kw)

    _use_scaler: ClassVar[bool] = False
    _balanced: ClassVar[bool] = False


class SGD(_IncrementalBase):
    """Logistic regression by SGD (``loss="log_loss"``) behind a running StandardScaler."""

    flavor: ClassVar[str] = "sgd"
    defaults: ClassVar[dict[str, Any]] = {
        "alpha": 1e-4,
        "epochs": 5,
        "penalty": "l2",
        "seed": 0,
        "signed_dt": False,
    }
    _use_scaler = True
    _balanced = True

    def _new_estimator(self) -> Any:
        p = self.params
        return _sklearn("sklearn.linear_model.SGDClassifier")(
            loss="log_loss",
            alpha=p["alpha"],
            penalty=p["penalty"],
            random_state=p["seed"],
        )


class NaiveBayes(_IncrementalBase):
    """``GaussianNB`` with equal priors, updated by ``partial_fit``."""

    flavor: ClassVar[str] = "naive_bayes"
    defaults: ClassVar[dict[str, Any]] = {
        "var_smoothing": 1e-9,
        "epochs": 1,
        "seed": 0,
        "signed_dt": False,
    }

    def _new_estimator(self) -> Any:
        return _sklearn("sklearn.naive_bayes.GaussianNB")(
            priors=[0.5, 0.5], var_smoothing=self.params["var_smoothing"]
        )
