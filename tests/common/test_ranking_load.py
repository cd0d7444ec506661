"""Models loaded to rank only (evaluate, timeseries): the same ranks, bit for bit, as a
model loaded whole, without importing scikit-learn; and the stage processes' imports."""

from __future__ import annotations

import collections
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from idq_common.exceptions import ClassifierError
from idq_common.science.classifiers import make_classifier
from idq_common.science.classifiers.base import Model
from idq_common.science.classifiers.sklearn import (
    ForestArrays,
    LinearArrays,
    ScalerArrays,
    _dumps,
)
from idq_common.science.features import build_features, feature_matrix, grid_times
from idq_dev.testing.synthetic import small_model, small_quiver, small_spec

T0 = 1_400_000_000.0
#: the demo's configuration (forest, SGD, OVL)
CONFIG = str(Path(__file__).resolve().parents[2] / "etc" / "idq-demo.toml")
#: the flavors read without scikit-learn (the others load whole, also for ranking)
LIGHT: dict[str, dict[str, Any]] = {
    "random_forest": {"n_estimators": 20, "max_depth": 8},
    "sgd": {"epochs": 2},
}
WHOLE: dict[str, dict[str, Any]] = {"naive_bayes": {}, "ovl": {}}


@pytest.fixture(scope="module")
def trained() -> tuple[Any, dict[str, Model]]:
    model = small_model(glitch_rate=0.5)
    train = small_quiver(model, span=(T0, T0 + 1000), random_rate=5.0, seed=1)
    out = {}
    for flavor, params in {**LIGHT, **WHOLE}.items():
        clf = make_classifier(flavor, flavor, params, small_spec(model))
        out[flavor] = clf.train(train)
    return model, out


@pytest.mark.parametrize("flavor", [*LIGHT, *WHOLE])
def test_ranks_are_those_of_the_whole_model(trained: Any, flavor: str) -> None:
    model, models = trained
    spec = small_spec(model)
    whole = make_classifier(flavor, flavor, {**LIGHT, **WHOLE}[flavor], spec)
    whole.model = Model.from_bytes(models[flavor].to_bytes())
    light = make_classifier(flavor, flavor, {**LIGHT, **WHOLE}[flavor], spec)
    light.load_for_ranking(Model.from_bytes(models[flavor].to_bytes()))
    assert light.model.id == whole.model.id
    if flavor in LIGHT:
        est = light._est  # type: ignore[attr-defined]
        assert isinstance(est, ForestArrays | LinearArrays)
        scaler = light._scaler  # type: ignore[attr-defined]
        assert scaler is None or isinstance(scaler, ScalerArrays)
    start = T0 + 3000
    triggers = model.generate(start - 1, start + 9)
    times = grid_times(start, start + 8, 128.0)
    X = feature_matrix(triggers, times, spec)
    np.testing.assert_array_equal(light.rank(X), whole.rank(X))
    builder = whole.feature_builder()
    assert (builder is None) == (light.feature_builder() is None)
    if builder is not None:
        lb = light.feature_builder()
        assert lb is not None
        (b_whole,) = build_features(triggers, times, spec, [builder])
        (b_light,) = build_features(triggers, times, spec, [lb])
        np.testing.assert_array_equal(b_light, b_whole)
        np.testing.assert_array_equal(light.rank_built(b_light), whole.rank_built(b_whole))


def _forest_trees(schema: dict[str, Any]) -> list[dict[str, Any]]:
    est = schema["content"]["estimator"]["content"]["content"]
    return [t["content"]["content"]["tree_"] for t in est["estimators_"]["content"]]


def test_npy_members_read_like_numpy_load(trained: Any) -> None:
    """``read_npy`` (headers matched, each dtype evaluated once) gives ``numpy.load``'s
    arrays: every member of the forest's and SGD's payloads, and the layouts it hands
    to ``numpy.load`` (Fortran order, 0-d, empty, structured, version 2 headers)."""
    from idq_common.science.classifiers.skops_arrays import read_npy

    _, models = trained
    members = []
    for flavor in LIGHT:
        with zipfile.ZipFile(io.BytesIO(models[flavor].payload)) as zf:
            members += [zf.read(n) for n in zf.namelist() if n.endswith(".npy")]
    assert len(members) > 20
    extra = [
        np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        np.float64(2.5),
        np.zeros((0, 3), dtype=np.int32),
        np.array([(1, 2.0)], dtype=[("a", "<i8"), ("b", "<f4")]),
    ]
    for arr in extra:
        buf = io.BytesIO()
        np.save(buf, arr)
        members.append(buf.getvalue())
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.arange(5, dtype=">i2"), version=(2, 0))
    members.append(buf.getvalue())
    for data in members:
        expected = np.load(io.BytesIO(data), allow_pickle=False)
        got = read_npy(data)
        assert got.dtype == expected.dtype and got.shape == expected.shape
        assert got.flags.writeable
        np.testing.assert_array_equal(got, expected)


def test_an_unknown_type_is_loaded_the_full_way_and_refused(trained: Any) -> None:
    """The arrays reader reads nothing it does not know: skops' trust list decides."""
    model, models = trained
    m = models["random_forest"]
    whole = make_classifier("f", "random_forest", LIGHT["random_forest"], small_spec(model))
    whole.model = m
    est = whole._est  # type: ignore[attr-defined]
    payload = _dumps({"estimator": est, "scaler": None, "lags": collections.Counter(a=1)})
    clf = make_classifier("f", "random_forest", LIGHT["random_forest"], small_spec(model))
    with pytest.raises(ClassifierError, match="untrusted types"):
        clf.load_for_ranking(Model(m.flavor, payload, m.spec))


def test_a_tree_pointing_out_of_bounds_is_refused(trained: Any) -> None:
    """The compiled walk trusts the node indices: a child before its parent (a loop) is refused."""
    model, models = trained
    m = models["random_forest"]
    zin = zipfile.ZipFile(io.BytesIO(m.payload))
    tree = _forest_trees(json.loads(zin.read("schema.json")))[0]
    name = tree["content"]["content"]["nodes"]["file"]
    nodes = np.load(io.BytesIO(zin.read(name)))
    nodes["left_child"][1 if nodes["left_child"][0] != 1 else 2] = 0
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename == name:
                buf = io.BytesIO()
                np.save(buf, nodes)
                data = buf.getvalue()
            zout.writestr(info, data)
    bad = Model(m.flavor, out.getvalue(), m.spec)
    clf = make_classifier("f", "random_forest", LIGHT["random_forest"], small_spec(model))
    with pytest.raises(ClassifierError, match="out-of-range"):
        clf.load_for_ranking(bad)


#: what a ranking stage must not import before it needs it: scikit-learn with scipy.stats
#: and pandas, skops (only train fits and stores), scipy.special (timeseries: at its first
#: calibrated product), dqsegdb2 and requests (only with DQSegDB segments), gwpy; together
#: ~3-4 CPU s per process
HEAVY = (
    "sklearn",
    "skops",
    "scipy.stats",
    "scipy.special",
    "pandas",
    "dqsegdb2",
    "requests",
    "gwpy",
    "astropy",
)


def test_ranking_stages_do_not_import_scikit_learn(trained: Any, tmp_path: Any) -> None:
    """Evaluate's and timeseries' modules, loading models and ranking a stride with them,
    import none of the heavy packages (structure, not timing: each costs 0.3-2 CPU s)."""
    model, models = trained
    for flavor, m in models.items():
        (tmp_path / f"{flavor}.model").write_bytes(m.to_bytes())
    trig = model.generate(T0 + 3000, T0 + 3004)
    cols = {k: getattr(trig, k) for k in ("channel", "time", "snr", "frequency")}
    np.savez(tmp_path / "triggers.npz", names=np.array(trig.channels), **cols)
    code = f"""
import sys
from pathlib import Path
import numpy as np
import idq_evaluate.stage, idq_timeseries.stage, idq_evaluate.cli, idq_timeseries.cli
from idq_common.data.triggers import TriggerSet
from idq_common.science.classifiers import make_classifier
from idq_common.science.classifiers.base import Model
from idq_common.science.features import grid_times
from idq_common.science.stride import rank_grid
from idq_common.stage.cli import run_service

class Idle:
    def run(self):
        return 0

    def close(self):
        pass

# the configuration as evaluate's and timeseries' command lines load it
assert run_service("evaluate", "", lambda settings, ns: Idle(), ["-c", {CONFIG!r}]) == 0
clfs = {{}}
for flavor in {[*LIGHT, "ovl"]!r}:
    m = Model.from_bytes(Path({str(tmp_path)!r}, flavor + ".model").read_bytes())
    clf = make_classifier(flavor, flavor, {{}}, m.spec)
    clf.load_for_ranking(m)
    clfs[flavor] = clf
z = np.load(Path({str(tmp_path)!r}, "triggers.npz"))
triggers = TriggerSet(tuple(z["names"]), z["channel"], z["time"], z["snr"], z["frequency"])
ranks = rank_grid(triggers, grid_times({T0 + 3001}, {T0 + 3003}, 128.0), clfs)
assert all(r.size == 256 for r in ranks.values()), ranks
print("HEAVY", sorted(m for m in {HEAVY!r} if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "HEAVY []", out.stdout + out.stderr[-2000:]
