"""OVL, the ordered veto list.

A candidate veto is ``(channel, snr threshold, window)``.  **Choice: OVL works on the
feature matrix**, not on raw trigger segments: a veto fires on a sample when that
channel's feature row has ``snr >= threshold`` and ``|dt| <= window``.  Why:

- the same quivers feed every classifier, so OVL trains and ranks exactly like the
  scikit-learn flavors (train stage, evaluate stage, timeseries grid) with no second
  data path;
- it vectorises: per channel, each sample falls in one (threshold-bin, window-bin)
  cell, and the counts of every configuration are 2-D cumulative sums of one
  ``np.bincount`` over the sparse (sample, channel) entries above the lowest
  threshold; hundreds of channels x 9 thresholds x 5 windows cost one pass;
- glitch samples give the efficiency; clean samples are random times in the
  segments, so the fraction of them a veto covers estimates its deadtime, i.e. the
  false-alarm probability of the veto.

Consequences to know:

- The feature window must be >= the largest veto window, since a feature row cannot
  see triggers beyond it: explicit ``windows`` larger than it are refused (a
  configuration error at start); by default the production windows that fit are used.
  Production uses windows up to 1 s; set ``[features] window`` to match.
- A feature row holds the *loudest* trigger within the window, so a veto with a small
  window can miss a quieter coincident trigger when a louder one sits further away
  in the same row.  Raw-segment OVL would catch it; the effect is second order where
  witnesses are louder near glitches, which is what makes them witnesses.

Lags (``lags = true``, the default): a witness may respond with a delay (a control
loop, a seismic path).  Before the rounds, each channel's lag is measured from the
training samples (:meth:`OVL._channel_lags`) and its veto windows are centred on it:
a veto fires when ``|dt - lag| <= window``.  A channel without a clear lag keeps 0,
which is production OVL's symmetric window.

Training (iterative recalculation): every round scores every configuration on the
samples not yet covered, picks the best configuration that passes the minimums
(``min_vetoed`` glitches, Poisson significance >= ``min_significance``, eff/fap > 1),
removes the glitch and clean samples it covers, and repeats until nothing passes or
``max_rounds`` is reached.  Metrics (``metric`` parameter):

- ``eff_fap``: efficiency / deadtime, ``(n_g / G) / ((n_c + 1/2) / (C + 1))`` with G,
  C the glitch and clean samples left; the half-count keeps a veto that happens to
  cover no clean sample finite;
- ``use_percentage``: fraction of the veto's segments that hold a glitch; the number
  of segments is estimated as deadtime x livetime / (2 window);
- ``poisson``: ``-log10 P(N >= n_g)`` for N ~ Poisson(deadtime x G), the chance of
  vetoing that many glitches by accident (capped at 300, where float64 underflows);
- ``combined``: ``sum_m weights[m] * metric_m / max(metric_m)`` over the three.

Rank: the veto list is ordered; at a sample the first veto that fires decides.  Its
rank is ``L / (1 + L)`` where ``L = (n_g / G0) / ((n_c + 1/2) / (C0 + 1))`` is the
likelihood ratio of the region that veto newly covered (G0, C0 the totals), i.e. the
posterior glitch probability at even prior odds; no firing veto gives rank 0.  The
mapping is monotone in L, so ranks order samples by their estimated likelihood ratio.

Two options for scenarios with many weak witnesses (both off by default, which is
production OVL; ``etc/idq.toml`` turns both on):

- ``confidence = q`` (0 < q < 1): each veto's L is computed from one-sided Poisson
  bounds of its counts (glitches low, clean high, level q; 0.84 is one sigma), so a
  veto of a handful of samples chosen among thousands of configurations does not
  outrank well-counted witnesses on its luck (:meth:`OVL._likelihood_ratio`);
- ``combine = "channels"``: each channel's vetoes are learnt on all samples (a chosen
  veto removes what it covers from its own channel only) and a sample's L is the
  product over channels of its first firing veto's L per channel: several weak
  witnesses firing together add up, where the ordered list takes only the first.
  Measured on the multi-family generator (``bench.science.families``, 4,000 s
  spans): tuning seeds 1, 11-16 mean 0.597 -> 0.658 of the witnessed bound at FAP
  1e-2; held-out seeds 2-10 mean 0.666 -> 0.717, minimum 0.443 -> 0.560.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from idq_common.exceptions import ClassifierError, ClassifierParamError
from idq_common.science.classifiers.base import SupervisedClassifier
from idq_common.science.classifiers.lags import channel_lags
from idq_common.science.features import FeatureSpec, Picks

log = logging.getLogger(__name__)

METRICS = ("eff_fap", "use_percentage", "poisson", "combined")
COMBINE = ("first", "channels")


def _livetime(quiver: Any) -> float:
    try:
        return float(abs(quiver.segs))
    except (AttributeError, TypeError):
        try:
            return float(quiver.end) - float(quiver.start)
        except (AttributeError, TypeError):
            return 0.0


@dataclass(frozen=True)
class VetoInput:
    """OVL's rank input: snr cells then dt cells of ``channels`` (spec indices)."""

    channels: tuple[int, ...]

    def new(self, n: int) -> np.ndarray:
        return np.empty((n, 2 * len(self.channels)))

    def fill(self, picks: Picks, out: np.ndarray) -> None:
        if not self.channels:
            return
        chans = np.asarray(self.channels, dtype=np.int64)
        k = np.arange(chans.size, dtype=np.int64)
        picks.write(picks.rows("snr"), out, k, chans)
        picks.write_dt(out, k + chans.size, chans)


def _positive_numbers(value: Any, name: str) -> np.ndarray:
    if (
        not isinstance(value, list | tuple)
        or not value
        or any(isinstance(v, bool) or not isinstance(v, int | float) for v in value)
    ):
        raise ClassifierParamError(name, f"expected a non-empty array of numbers, got {value!r}")
    out = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(out) & (out > 0)):
        raise ClassifierParamError(name, f"every entry must be a finite number > 0, got {value!r}")
    return out


def poisson_logsf(k: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """``scipy.stats.poisson.logsf(k, mu)`` for integer ``k`` and ``mu > 0``, the same values.

    scipy 1.17's ``rv_discrete.logsf`` is ``log(pdtrc(floor(k), mu))`` inside the
    support (``k >= 0``) and 0 below it, after argument checks and gathering the cells
    to compute (``argsreduce``): most of its cost on OVL's ~10^4-cell grids, each round
    (tests/common/test_ovl.py compares the two bit for bit). ``scipy.special`` alone
    is also a fraction of ``scipy.stats``' import.
    """
    from scipy.special import pdtrc

    k = np.asarray(k)
    with np.errstate(divide="ignore"):
        inside = np.log(pdtrc(np.floor(np.maximum(k, 0)).astype(np.float64), mu))
    return np.where(k >= 0, inside, 0.0)


class OVL(SupervisedClassifier):
    """Ordered veto list trained on the feature matrix (see the module docstring)."""

    flavor: ClassVar[str] = "ovl"
    defaults: ClassVar[dict[str, Any]] = {
        "metric": "eff_fap",
        "weights": {"eff_fap": 1.0, "use_percentage": 1.0, "poisson": 1.0},
        "thresholds": [6.5, 8, 10, 15, 20, 30, 50, 100, 1000],
        "windows": [1.0, 0.5, 0.25, 0.125, 0.0625],
        "min_vetoed": 3,
        "min_significance": 3.0,
        "max_rounds": 200,
        "lags": True,
        "confidence": 0.0,
        "combine": "first",
    }

    def __init__(self, nickname: str, params: Any = None, feature_spec: Any = None) -> None:
        super().__init__(nickname, params, feature_spec)
        p = self.params
        if p["metric"] not in METRICS:
            raise ClassifierParamError(
                "metric", f"unknown OVL metric {p['metric']!r}; known {', '.join(METRICS)}"
            )
        if not isinstance(p["weights"], dict):
            raise ClassifierParamError("weights", "expected a table of metric = weight")
        bad = sorted(set(p["weights"]) - {"eff_fap", "use_percentage", "poisson"})
        if bad:
            raise ClassifierParamError("weights", f"unknown OVL weight(s) {bad}")
        for col in ("snr", "dt"):
            if col not in self.feature_spec.columns:
                raise ClassifierParamError(
                    "features.columns", f"OVL ({nickname}) needs a '{col}' feature column"
                )
        self.thresholds = np.unique(_positive_numbers(p["thresholds"], "thresholds"))
        window = self.feature_spec.window
        if "windows" in (params or {}):
            windows = _positive_numbers(p["windows"], "windows")
            if windows.max() > window * (1 + 1e-12):
                raise ClassifierParamError(
                    "windows",
                    f"OVL window {windows.max():g} s is larger than the feature window "
                    f"(features.window = {window:g} s): a feature row cannot see that far",
                )
        else:
            # production windows that fit in the feature window (or the window itself)
            windows = np.asarray([w for w in p["windows"] if w <= window] or [window])
        self.windows = np.unique(windows)
        for name, low in (("min_vetoed", 1), ("max_rounds", 1)):
            v = p[name]
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ClassifierParamError(name, f"expected an integer >= {low}, got {v!r}")
        if not isinstance(p["lags"], bool):
            raise ClassifierParamError("lags", f"expected true or false, got {p['lags']!r}")
        self._lags = np.zeros(len(self.feature_spec.channels))
        if p["combine"] not in COMBINE:
            raise ClassifierParamError(
                "combine", f"unknown OVL combine {p['combine']!r}; known {', '.join(COMBINE)}"
            )
        conf = p["confidence"]
        if isinstance(conf, bool) or not isinstance(conf, int | float) or not 0 <= conf < 1:
            raise ClassifierParamError("confidence", f"expected a number in [0, 1), got {conf!r}")
        self._combine = str(p["combine"])
        sig = p["min_significance"]
        if isinstance(sig, bool) or not isinstance(sig, int | float) or not sig >= 0:
            raise ClassifierParamError("min_significance", f"expected a number >= 0, got {sig!r}")
        #: the trained list: dicts with channel, threshold, window, counts and rank
        self.vetoes: list[dict[str, Any]] = []
        self.rounds_log: list[dict[str, float]] = []

    # -- training --------------------------------------------------------------------
    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        raise AssertionError("OVL overrides train")  # pragma: no cover

    def train(self, quiver: Any) -> Any:
        X, y = self._training_arrays(quiver)
        self._train_matrix(X, y, _livetime(quiver))
        from idq_common.science.classifiers.base import _quiver_span

        return self._make_model(int(y.size), _quiver_span(quiver))

    def _channel_lags(self, X: np.ndarray, y: np.ndarray, spec: FeatureSpec) -> np.ndarray:
        """Per channel, the lag of its triggers behind glitches (0 where none stands out).

        The ``dt`` of triggers above the lowest threshold is histogrammed in bins of the
        smallest window, for glitch and for clean samples; the bin where the glitch
        fraction most exceeds the clean fraction, if that excess is at least
        ``min_vetoed`` glitches, gives the lag: the median ``dt`` of the glitch triggers
        within one bin of it. A witness whose response is delayed by 0.2 s then gets
        windows centred on 0.2 s, not on 0 (where it would need a 0.25 s window and
        five times the deadtime).
        """
        if not self.params["lags"]:
            return np.zeros(len(spec.channels))
        k = len(spec.columns)
        return channel_lags(
            X[:, spec.columns.index("snr") :: k],
            X[:, spec.columns.index("dt") :: k],
            y,
            spec.window,
            float(self.windows.min()),
            float(self.thresholds[0]),
            int(self.params["min_vetoed"]),
        )

    def _cells(self, X: np.ndarray, spec: FeatureSpec) -> tuple[np.ndarray, ...]:
        """Sparse (sample, channel, cell) entries of rows above the lowest threshold."""
        k = len(spec.columns)
        S = X[:, spec.columns.index("snr") :: k]
        D = np.abs(X[:, spec.columns.index("dt") :: k] - self._lags[None, :])
        ti = np.searchsorted(self.thresholds, S, side="right")  # thresholds passed
        wi = np.searchsorted(self.windows, D, side="left")  # smallest window holding |dt|
        sample, chan = np.nonzero((ti > 0) & (wi < self.windows.size))
        cell = (ti[sample, chan] - 1) * self.windows.size + wi[sample, chan]
        return sample, chan, cell

    def _train_matrix(self, X: np.ndarray, y: np.ndarray, livetime: float) -> None:
        spec = self.feature_spec
        nT, nW, nC = self.thresholds.size, self.windows.size, len(spec.channels)
        self._lags = self._channel_lags(X, y, spec)
        sample, chan, cell = self._cells(X, spec)
        flat = chan * (nT * nW) + cell
        glitch = y == 1
        G0, C0 = int(glitch.sum()), int((~glitch).sum())
        # combine = "channels": each channel's list is learnt on all samples (a veto
        # removes the samples it covers from its own channel only), so a channel's
        # ratios hold wherever other channels fire too and can be multiplied
        per_channel = self._combine == "channels"
        active = np.ones((y.size, nC) if per_channel else y.size, dtype=bool)
        # entries grouped by channel, for finding which samples a chosen veto covers
        order = np.argsort(chan, kind="stable")
        bounds = np.searchsorted(chan[order], np.arange(nC + 1))
        win_b = np.broadcast_to(self.windows, (nT, nW))
        self.vetoes, self.rounds_log = [], []
        p = self.params
        # cell counts of the live entries (every entry is live at first): a veto then
        # subtracts its newly covered samples' entries (np.nonzero gives the entries
        # sample by sample) instead of recounting all of them each round; integers, so
        # the counts are the recount's exactly
        size = nC * nT * nW
        entry_g = glitch[sample]
        counts_g = np.bincount(flat[entry_g], minlength=size)
        counts_c = np.bincount(flat[~entry_g], minlength=size)
        by_sample = np.searchsorted(sample, np.arange(y.size + 1))
        for rnd in range(int(p["max_rounds"])):
            ng = self._cumulate(counts_g, nC, nT, nW)
            nc = self._cumulate(counts_c, nC, nT, nW)
            if per_channel:
                G = (glitch[:, None] & active).sum(axis=0)[:, None, None]
                C = (~glitch[:, None] & active).sum(axis=0)[:, None, None]
            else:
                G, C = int((glitch & active).sum()), int((~glitch & active).sum())
            if not np.any(G > 0):
                break
            ng = np.where(G > 0, ng, 0)
            G = np.maximum(G, 1)
            fap = (nc + 0.5) / (C + 1.0)
            eff_fap = (ng / G) / fap
            # -log10 p underflows to inf past ~1e-308: cap so metrics stay comparable
            # the significance decides only among cells passing the other two tests (the
            # score and its normalisation read passing cells only): computed there alone
            passing = (ng >= int(p["min_vetoed"])) & (eff_fap > 1.0)
            signif = np.zeros(ng.shape)
            mu = np.broadcast_to(fap * G, ng.shape)
            signif[passing] = np.minimum(
                -poisson_logsf(ng[passing] - 1, mu[passing]) / np.log(10.0), 300.0
            )
            passing &= signif >= float(p["min_significance"])
            if not passing.any():
                break
            score = self._score(ng, fap, eff_fap, signif, win_b, livetime, passing)
            best = int(np.argmax(np.where(passing, score, -np.inf)))
            c, t, w = np.unravel_index(best, (nC, nT, nW))
            sel = order[bounds[c] : bounds[c + 1]]
            hit = (cell[sel] // nW >= t) & (cell[sel] % nW <= w)
            covered = np.zeros(y.size, dtype=bool)
            covered[sample[sel][hit]] = True
            covered &= active[:, c] if per_channel else active
            n_g, n_c = int((covered & glitch).sum()), int((covered & ~glitch).sum())
            lr = self._likelihood_ratio(n_g, n_c, G0, C0)
            self.vetoes.append(
                {
                    "channel": spec.channels[c],
                    "threshold": float(self.thresholds[t]),
                    "window": float(self.windows[w]),
                    "lag": float(self._lags[c]),
                    "round": rnd,
                    "n_glitch": n_g,
                    "n_clean": n_c,
                    "eff": n_g / G0,
                    "fap": n_c / C0,
                    "likelihood_ratio": lr,
                    "rank": lr / (1.0 + lr),
                }
            )
            remaining = int(G.flat[c]) if per_channel else int(G)
            self.rounds_log.append(
                {"metric": float(score.flat[best]), "remaining_glitches": remaining}
            )
            gone = self._entries_of(np.flatnonzero(covered), by_sample)
            if per_channel:
                gone = gone[chan[gone] == c]
            counts_g -= np.bincount(flat[gone[entry_g[gone]]], minlength=size)
            counts_c -= np.bincount(flat[gone[~entry_g[gone]]], minlength=size)
            if per_channel:
                active[:, c] &= ~covered
            else:
                active &= ~covered

    def _likelihood_ratio(self, n_g: int, n_c: int, G0: int, C0: int) -> float:
        """A veto's likelihood ratio from its counts: ``(n_g / G0) / ((n_c + 1/2) / (C0 + 1))``.

        With ``confidence = q > 0`` the counts are replaced by one-sided Poisson bounds
        at level ``q``: the glitch count by its lower bound (the ``1 - q`` quantile of
        the Gamma(n_g) posterior of its mean), the clean count by its upper bound (the
        ``q`` quantile of Gamma(n_c + 1)). Why: the list is chosen on the same samples
        that count it, so a veto of 4 glitches and no clean sample out of thousands of
        configurations is as often luck as a witness; its plain ratio (~50 on a 4,000 s
        span) then outranks real witnesses and spends the 1 % false-alarm budget on
        held-out data. The bounds rank well-counted vetoes above such ones.
        """
        conf = float(self.params["confidence"])
        if conf <= 0:
            return (n_g / G0) / ((n_c + 0.5) / (C0 + 1.0))
        from scipy.stats import gamma

        lo = float(gamma.ppf(1.0 - conf, n_g)) if n_g > 0 else 0.0
        hi = float(gamma.ppf(conf, n_c + 1.0))
        return (lo / G0) / (hi / (C0 + 1.0))

    @staticmethod
    def _entries_of(samples: np.ndarray, by_sample: np.ndarray) -> np.ndarray:
        """Indices of the entries of ``samples`` (entries sorted by sample; ``by_sample``
        their start per sample, and the end)."""
        lo, hi = by_sample[samples], by_sample[samples + 1]
        n = hi - lo
        if not n.sum():
            return np.zeros(0, dtype=np.int64)
        # concatenated ranges lo[i]..hi[i]: a running index minus each range's offset
        starts = np.repeat(lo - np.concatenate([[0], np.cumsum(n)[:-1]]), n)
        return starts + np.arange(int(n.sum()))

    @staticmethod
    def _cumulate(counts: np.ndarray, nC: int, nT: int, nW: int) -> np.ndarray:
        """Cell counts -> configuration counts: snr >= thr_t and |dt| <= win_w."""
        h = counts.reshape(nC, nT, nW)
        return np.cumsum(np.cumsum(h[:, ::-1, :], axis=1)[:, ::-1, :], axis=2)

    def _score(
        self,
        ng: np.ndarray,
        fap: np.ndarray,
        eff_fap: np.ndarray,
        signif: np.ndarray,
        win: np.ndarray,
        livetime: float,
        passing: np.ndarray,
    ) -> np.ndarray:
        metric = self.params["metric"]
        if metric == "eff_fap":
            return eff_fap
        if metric == "poisson":
            return signif
        segments = fap * livetime / (2.0 * win) if livetime > 0 else np.full_like(fap, np.inf)
        use = np.minimum(ng / np.maximum(segments, np.maximum(ng, 1)), 1.0)
        if metric == "use_percentage":
            return use
        total = np.zeros_like(eff_fap)
        for name, values in (("eff_fap", eff_fap), ("use_percentage", use), ("poisson", signif)):
            weight = float(self.params["weights"].get(name, 0.0))
            top = values[passing].max()
            if weight and top > 0:
                total += weight * values / top
        return total

    # -- ranking and storage ---------------------------------------------------------
    def _rank(self, X: np.ndarray) -> np.ndarray:
        spec = self._spec_loaded
        cols = [
            (spec.column_index(v["channel"], "snr"), spec.column_index(v["channel"], "dt"))
            for v in self.vetoes
        ]
        return self._veto_ranks(X, cols)

    def _veto_ranks(self, X: np.ndarray, cols: list[tuple[int, int]]) -> np.ndarray:
        """The first firing veto's rank per row; ``cols``: each veto's snr and dt column."""
        if self._combine == "channels":
            return self._channel_ranks(X, cols)
        ranks = np.zeros(X.shape[0])
        unset = np.ones(X.shape[0], dtype=bool)
        for v, (i_snr, i_dt) in zip(self.vetoes, cols, strict=True):
            near = np.abs(X[:, i_dt] - v.get("lag", 0.0)) <= v["window"]
            fires = unset & (X[:, i_snr] >= v["threshold"]) & near
            ranks[fires] = v["rank"]
            unset &= ~fires
        return ranks

    def _channel_ranks(self, X: np.ndarray, cols: list[tuple[int, int]]) -> np.ndarray:
        """``combine = "channels"``: per channel its first firing veto; ratios multiply.

        Each channel's vetoes were learnt on all samples, so a veto's ratio is that of
        its cell of the channel's (snr, dt) plane; the product over channels is the
        naive-Bayes ratio (channels independent given the class), and a sample that
        no veto covers gets rank 0 as in the ordered list.
        """
        log_lr = np.zeros(X.shape[0])
        fired = np.zeros(X.shape[0], dtype=bool)
        unset: dict[int, np.ndarray] = {}
        for v, (i_snr, i_dt) in zip(self.vetoes, cols, strict=True):
            left = unset.setdefault(i_snr, np.ones(X.shape[0], dtype=bool))
            near = np.abs(X[:, i_dt] - v.get("lag", 0.0)) <= v["window"]
            fires = left & (X[:, i_snr] >= v["threshold"]) & near
            lr = max(float(v["likelihood_ratio"]), 1e-300)
            log_lr[fires] += math.log(lr)
            fired |= fires
            left &= ~fires
        # L / (1 + L) as a logistic of log L: no overflow for large or tiny products
        return np.where(fired, 1.0 / (1.0 + np.exp(-np.clip(log_lr, -700.0, 700.0))), 0.0)

    def feature_builder(self) -> VetoInput | None:
        """The snr and dt cells of the veto channels only (a handful of the spec's)."""
        if self._model is None or self._model.spec != self.feature_spec:
            return None
        names = list(dict.fromkeys(v["channel"] for v in self.vetoes))
        index = {c: i for i, c in enumerate(self.feature_spec.channels)}
        return VetoInput(tuple(index[c] for c in names))

    def _rank_built(self, built: np.ndarray) -> np.ndarray:
        builder = self.feature_builder()
        assert builder is not None
        pos = {c: i for i, c in enumerate(dict.fromkeys(v["channel"] for v in self.vetoes))}
        k = len(builder.channels)
        return self._veto_ranks(
            built, [(pos[v["channel"]], k + pos[v["channel"]]) for v in self.vetoes]
        )

    @property
    def _spec_loaded(self) -> FeatureSpec:
        return self._model.spec if self._model is not None else self.feature_spec

    def _dump(self) -> bytes:
        body = {
            "format": "idq-ovl-1",
            "thresholds": self.thresholds.tolist(),
            "windows": self.windows.tolist(),
            "metric": self.params["metric"],
            "combine": self._combine,
            "vetoes": self.vetoes,
        }
        return json.dumps(body, sort_keys=True).encode()

    def _load(self, payload: bytes, spec: FeatureSpec) -> None:
        try:
            body = json.loads(payload)
            if body.get("format") != "idq-ovl-1":
                raise ValueError(f"format {body.get('format')!r}")
            vetoes = [
                {**v, "threshold": float(v["threshold"]), "window": float(v["window"])}
                for v in body["vetoes"]
            ]
        except (ValueError, KeyError, TypeError) as exc:
            raise ClassifierError(f"malformed OVL payload: {exc}") from exc
        missing = sorted({v["channel"] for v in vetoes} - set(spec.channels))
        if missing:
            raise ClassifierError(f"OVL payload names channels outside its spec: {missing}")
        self.vetoes = vetoes
        # the ranking rule travels with the list it was learnt for (older payloads:
        # the ordered list's first firing veto)
        self._combine = str(body.get("combine", "first"))
