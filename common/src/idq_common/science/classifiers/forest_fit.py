"""``RandomForestClassifier.fit`` with scikit-learn's per-tree Python overhead cut.

A train round fits 100 trees on a few hundred samples: scikit-learn's tree builder
(Cython) takes ~1/3 of the fit; the rest is Python per tree (``clone`` and
``get_params`` through ``inspect.signature``, ``check_classification_targets``,
``check_random_state``, ``_check_sample_weight``, joblib's dispatch): ~0.2 CPU s per
forest, every round. Here scikit-learn fits the forest with its first tree (all
input checks, the forest's fitted attributes, its random stream's first draw), and
each further tree is made by the forest's own ``_make_estimator`` from the same
``RandomState`` stream and built as ``DecisionTreeClassifier._fit(check_input=False)``
builds it: the same bootstrap draw, criterion, splitter, builder and attributes, set
in the same order (the stored bytes, hence the model id, are those of ``fit``:
tests/common/test_classifiers.py compares them). Parameters outside what is
reproduced here, or another scikit-learn version, go to ``fit`` itself.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

#: scikit-learn versions whose forest and tree ``fit`` this reproduces
VERIFIED = frozenset({"1.9.1"})


def fit_forest(est: Any, X: np.ndarray, y: np.ndarray) -> Any:
    """``est.fit(X, y)`` for an unfitted ``RandomForestClassifier``, the same result."""
    import sklearn

    if sklearn.__version__ not in VERIFIED or not _reproduced(est, y):
        return est.fit(X, y)
    n_trees = est.n_estimators
    est.n_estimators = 1  # scikit-learn fits the first tree, and checks everything
    try:
        est.fit(X, y)
    finally:
        est.n_estimators = n_trees
    if n_trees == 1:
        return est
    from sklearn.ensemble._forest import MAX_INT

    rs = np.random.RandomState(est.random_state)
    rs.randint(MAX_INT)  # the first tree's seed, drawn in fit
    # what fit gives its trees: X as validated (float32), y as class indices
    X32 = np.asarray(X, dtype=np.float32)
    y_idx = np.unique(y, return_inverse=True)[1].reshape(-1, 1)
    y_fit = np.ascontiguousarray(y_idx, dtype=np.float64)
    missing = type(est.estimator_)(criterion=est.criterion)._compute_missing_values_in_feature_mask(
        X32, estimator_name=type(est).__name__
    )
    trees = _make_trees(est, rs, n_trees - 1)
    for tree in trees:
        _fit_tree(tree, X32, y_fit, est._n_samples_bootstrap, missing)
    est.estimators_.extend(trees)
    return est


def _make_trees(est: Any, rs: np.random.RandomState, n: int) -> list[Any]:
    """``[est._make_estimator(append=False, random_state=rs) for _ in range(n)]``.

    ``_make_estimator`` clones the template tree (``get_params`` through
    ``inspect.signature``, twice per tree) and draws its seed from ``rs``. With only
    atomic parameter values (``clone`` keeps those objects, it copies containers)
    the first tree's attributes are copied, in order, with the next seed instead.
    """
    from sklearn.ensemble._forest import MAX_INT

    first = est._make_estimator(append=False, random_state=rs)
    trees = [first]
    if not all(type(v) in _ATOMIC for v in vars(first).values()):
        trees += [est._make_estimator(append=False, random_state=rs) for _ in range(n - 1)]
        return trees
    for _ in range(n - 1):
        tree = object.__new__(type(first))
        tree.__dict__.update(vars(first))
        tree.random_state = rs.randint(MAX_INT)  # _set_random_states' one draw
        trees.append(tree)
    return trees


#: parameter values ``clone`` passes on as the same object (``copy.deepcopy`` of them)
_ATOMIC = (type(None), bool, int, float, str)


def _reproduced(est: Any, y: np.ndarray) -> bool:
    """Whether ``fit`` takes the path reproduced here (else ``fit`` itself runs)."""
    return (
        type(est).__name__ == "RandomForestClassifier"
        and type(est).__module__ == "sklearn.ensemble._forest"
        and isinstance(est.random_state, numbers.Integral)
        and not isinstance(est.random_state, bool)
        and isinstance(est.n_estimators, numbers.Integral)
        and est.bootstrap is True
        and not est.oob_score
        and not est.warm_start
        and est.max_samples is None
        and est.class_weight is None
        and est.max_leaf_nodes is None
        and est.monotonic_cst is None
        and est.ccp_alpha == 0.0
        and est.criterion in ("gini", "entropy", "log_loss")
        and isinstance(est.min_samples_leaf, numbers.Integral)
        and isinstance(est.min_samples_split, numbers.Integral)
        and np.ndim(y) == 1
    )


def _fit_tree(
    tree: Any, X: np.ndarray, y: np.ndarray, n_bootstrap: int, missing: np.ndarray | None
) -> None:
    """``_parallel_build_trees`` then ``tree._fit(check_input=False)``, classifier, 1 output."""
    from sklearn.tree._classes import CRITERIA_CLF, DENSE_SPLITTERS
    from sklearn.tree._tree import DepthFirstTreeBuilder, Tree

    n_samples = X.shape[0]
    # _generate_sample_indices: the tree's seed draws the bootstrap, counts as weights
    indices = np.random.RandomState(tree.random_state).randint(0, n_samples, n_bootstrap)
    weight = np.bincount(indices.astype(np.int32), minlength=n_samples)
    # DecisionTreeClassifier._fit, attributes in its order
    random_state = np.random.RandomState(tree.random_state)
    _, tree.n_features_in_ = X.shape
    tree.n_outputs_ = y.shape[1]
    y = np.copy(y)
    tree.classes_ = []
    tree.n_classes_ = []
    y_encoded = np.zeros(y.shape, dtype=int)
    classes_k, y_encoded[:, 0] = np.unique(y[:, 0], return_inverse=True)
    tree.classes_.append(classes_k)
    tree.n_classes_.append(classes_k.shape[0])
    y = np.ascontiguousarray(y_encoded, dtype=np.float64)
    tree.n_classes_ = np.array(tree.n_classes_, dtype=np.intp)
    max_depth = np.iinfo(np.int32).max if tree.max_depth is None else tree.max_depth
    min_samples_leaf = tree.min_samples_leaf
    min_samples_split = max(tree.min_samples_split, 2 * min_samples_leaf)
    nf = tree.n_features_in_
    mf = tree.max_features
    max_features: Any  # the parameter's own object where fit keeps it (skops ids)
    if mf == "sqrt":
        max_features = max(1, int(np.sqrt(nf)))
    elif mf == "log2":
        max_features = max(1, int(np.log2(nf)))
    elif mf is None:
        max_features = nf
    elif isinstance(mf, numbers.Integral):
        max_features = mf
    else:
        max_features = max(1, int(mf * nf)) if mf > 0.0 else 0
    tree.max_features_ = max_features
    sample_weight = np.ascontiguousarray(weight, dtype=np.float64)
    min_weight_leaf = tree.min_weight_fraction_leaf * np.sum(sample_weight)
    criterion = CRITERIA_CLF[tree.criterion](tree.n_outputs_, tree.n_classes_)
    splitter = DENSE_SPLITTERS[tree.splitter](
        criterion, tree.max_features_, min_samples_leaf, min_weight_leaf, random_state, None
    )
    tree.tree_ = Tree(tree.n_features_in_, tree.n_classes_, tree.n_outputs_)
    builder = DepthFirstTreeBuilder(
        splitter,
        min_samples_split,
        min_samples_leaf,
        min_weight_leaf,
        max_depth,
        tree.min_impurity_decrease,
    )
    builder.build(tree.tree_, X, y, sample_weight, missing)
    tree.n_classes_ = tree.n_classes_[0]
    tree.classes_ = tree.classes_[0]
