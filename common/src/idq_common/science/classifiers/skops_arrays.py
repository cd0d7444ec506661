"""The fitted arrays of a stored scikit-learn model, read without scikit-learn or skops.

A stage that only *ranks* with a model (evaluate, timeseries) needs a forest's node
arrays or a linear model's coefficients and its scaler's mean and scale: the compiled
tree walk and the builders do the arithmetic (``classifiers.sklearn``). Importing
scikit-learn (scipy.stats, pandas) and skops to rebuild the estimator objects cost
~3 CPU s per process, more than half of a 600 s replay's budget at 100x real time.

This reads the skops zip (``schema.json`` plus ``.npy`` members) directly: the JSON is
walked for the few node kinds an idq estimator bundle holds, arrays are read with
``numpy.load(allow_pickle=False)``, and nothing is imported or constructed from the
payload. Any node outside that vocabulary (another estimator, a function, an object
array, a type skops would not trust) makes :func:`read_bundle` return None: the caller
then loads the payload the full way (skops with the trusted-type list), which decides
whether it is refused. What is returned is plain data: dicts, lists, numbers, arrays.
"""

from __future__ import annotations

import ast
import io
import json
import math
import re
import zipfile
from typing import Any

import numpy as np

#: estimators and parts whose state is read (module, class); their parameters are
#: JSON, their fitted attributes arrays
OBJECTS = frozenset(
    {
        ("sklearn.ensemble._forest", "RandomForestClassifier"),
        ("sklearn.tree._classes", "DecisionTreeClassifier"),
        ("sklearn.linear_model._stochastic_gradient", "SGDClassifier"),
        ("sklearn.preprocessing._data", "StandardScaler"),
    }
)
#: SGD's loss object: not needed to rank (the decision is coef_ . z + intercept_)
LOSSES = frozenset({("sklearn._loss._loss", "CyHalfBinomialLoss")})
#: the class name of the ``"__class__"`` key of each estimator state read
CLASS = "__class__"


#: an ``.npy`` header of a C-order array (``numpy.lib.format``'s layout): descr, shape
_NPY_HEADER = re.compile(
    r"\{'descr': (.+), 'fortran_order': False, 'shape': \(([0-9, ]*)\), \} *\n"
)
#: descr text -> dtype (a forest's hundreds of arrays share a few)
_DTYPES: dict[str, np.dtype[Any]] = {}


def read_npy(data: bytes) -> np.ndarray:
    """``numpy.load(io.BytesIO(data), allow_pickle=False)``, a fresh writable array.

    A forest's payload holds three arrays per tree, and ``numpy.load`` evaluates each
    header with ``ast.literal_eval`` (about half of reading a 100-tree model): here the
    header of a version 1 or 2 file of a C-order array is matched, each distinct
    ``descr`` evaluated once (as numpy does: ``literal_eval`` then ``descr_to_dtype``)
    and the data copied out. Anything else (Fortran order, object dtypes, other
    versions, a malformed header) goes to ``numpy.load``, which reads or refuses it.
    """
    major = data[6] if len(data) > 8 and data[:6] == b"\x93NUMPY" else 0
    if major in (1, 2):
        size = 2 if major == 1 else 4
        start = 8 + size
        end = start + int.from_bytes(data[8:start], "little")
        m = _NPY_HEADER.fullmatch(data[start:end].decode("latin1"))
        if m is not None:
            descr = m.group(1)
            dtype = _DTYPES.get(descr)
            if dtype is None:
                dtype = np.lib.format.descr_to_dtype(ast.literal_eval(descr))
                if len(_DTYPES) < 64:
                    _DTYPES[descr] = dtype
            if not dtype.hasobject:
                shape = tuple(int(x) for x in m.group(2).split(",") if x.strip())
                count = math.prod(shape)
                if len(data) - end >= count * dtype.itemsize:
                    flat = np.frombuffer(data, dtype=dtype, count=count, offset=end)
                    return flat.reshape(shape).copy()
    return np.load(io.BytesIO(data), allow_pickle=False)


#: JSON text -> its value, for immutable values (a forest's trees repeat the same
#: parameters: thousands of small ``JsonNode``s per model, a few distinct texts)
_SCALARS: dict[str, Any] = {}


def _json(text: str) -> Any:
    """``json.loads(text)``; scalar values (numbers, strings, null, booleans) are
    decoded once per text and shared (they cannot be changed by a caller)."""
    got = _SCALARS.get(text, _SCALARS)
    if got is not _SCALARS:
        return got
    value = json.loads(text)
    if isinstance(value, int | float | str | bool | None) and len(_SCALARS) < 4096:
        _SCALARS[text] = value
    return value


class Unreadable(Exception):
    """The payload holds something this reader does not read (load it the full way)."""


def read_bundle(payload: bytes) -> dict[str, Any] | None:
    """The bundle ``{"estimator": ..., "scaler": ..., "lags": ...}`` as plain data.

    Each estimator (and the scaler) is a dict of its state with its class name under
    ``"__class__"``; a forest's trees (``tree_``) are dicts with ``nodes`` (the
    structured node array) and ``values``. None: the payload holds a node this
    reader does not know, or is not a readable zip (the full load says why).
    """
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as zf:
            schema = json.loads(zf.read("schema.json"))
            obj = _Reader(zf).node(schema)
    except (Unreadable, zipfile.BadZipFile, KeyError, ValueError, TypeError, OSError):
        return None
    if not isinstance(obj, dict) or "estimator" not in obj:
        return None
    return obj


class _Reader:
    """Walks a skops schema; arrays from the zip's members."""

    def __init__(self, zf: zipfile.ZipFile) -> None:
        self.zf = zf
        self.memo: dict[int, Any] = {}

    def node(self, n: Any) -> Any:
        if not isinstance(n, dict):
            raise Unreadable(f"not a node: {type(n).__name__}")
        loader = n.get("__loader__")
        if loader == "CachedNode":
            return self.memo[int(n["__id__"])]
        out = self._read(loader, n)
        if "__id__" in n:
            self.memo[int(n["__id__"])] = out
        return out

    def _read(self, loader: Any, n: dict[str, Any]) -> Any:
        mod, cls = n.get("__module__"), n.get("__class__")
        if loader == "JsonNode":
            return _json(n["content"])
        if loader == "DictNode" and (mod, cls) == ("builtins", "dict"):
            keys = [self.node(k) for k in n["key_types"]["content"]]
            if any(k != "str" for k in keys):
                raise Unreadable("dict with non-string keys")
            return {str(k): self.node(v) for k, v in n["content"].items()}
        if loader == "ListNode" and (mod, cls) == ("builtins", "list"):
            return [self.node(v) for v in n["content"]]
        if loader == "TupleNode" and (mod, cls) == ("builtins", "tuple"):
            return tuple(self.node(v) for v in n["content"])
        if loader == "TypeNode" and (mod, cls) == ("builtins", "str"):
            return "str"
        if loader == "NdArrayNode" and mod == "numpy" and n.get("type") == "numpy":
            return read_npy(self.zf.read(n["file"]))
        if loader == "ObjectNode" and (mod, cls) in OBJECTS:
            state = self.node(n["content"])
            if not isinstance(state, dict):
                raise Unreadable(f"{cls} state is not a dict")
            return {**state, CLASS: cls}
        if loader == "TreeNode" and (mod, cls) == ("sklearn.tree._tree", "Tree"):
            state = self.node(n["content"])
            if not isinstance(state, dict) or not {"nodes", "values"} <= set(state):
                raise Unreadable("tree without nodes and values")
            return {**state, CLASS: cls}
        if loader == "LossNode" and (mod, cls) in LOSSES:
            return None
        raise Unreadable(f"node {loader} {mod}.{cls}")
