"""skops' ``get_state`` for the objects of an idq estimator bundle, without skops.

Storing a model with ``skops.io`` imports ``skops.io._trusted_types``, which walks
every scikit-learn estimator (``all_estimators``: every sklearn submodule, pytest,
scipy.io): ~1-1.5 CPU s per train process, more than its get_state and zip work over
a whole 600 s replay. This module writes the same state tree, node for node and key
for key, for the few types an idq bundle holds (the estimators of
``classifiers.sklearn``, their trees and loss, numpy arrays and scalars, JSON
primitives, lists, tuples, dicts, types), in the order skops 0.16's ``get_state``
does; ``__id__`` values and array file names are ``id(obj)`` of the same objects, kept
alive until the end as skops' memo does, so ``canonical`` renumbering gives the same
bytes. Anything else raises :class:`Unsupported` and the caller uses skops itself
(tests/common/test_classifiers.py compares the bytes with skops' own for every
flavor). Only the skops versions in :data:`VERIFIED` are reproduced; another version
falls back to skops, so an upgrade cannot silently change the format written.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np

#: skops versions whose get_state this reproduces, and their format's ``PROTOCOL``
VERIFIED = {"0.16.0": 2}

#: estimator classes stored as skops' ``ObjectNode`` (their ``__getstate__`` dict)
OBJECTS = frozenset(
    {
        ("sklearn.ensemble._forest", "RandomForestClassifier"),
        ("sklearn.tree._classes", "DecisionTreeClassifier"),
        ("sklearn.linear_model._stochastic_gradient", "SGDClassifier"),
        ("sklearn.preprocessing._data", "StandardScaler"),
        ("sklearn.naive_bayes", "GaussianNB"),
    }
)
#: types skops stores through their ``__reduce__`` (loader name by class)
TREE = ("sklearn.tree._tree", "Tree")
LOSS_MODULE = "sklearn._loss._loss"
#: JSON primitives (skops' ``object_get_state`` writes them with ``json.dumps``)
_JSON = (type(None), bool, int, float, str)


class Unsupported(Exception):
    """An object this writer does not reproduce: store the bundle with skops itself."""


def skops_version() -> str | None:
    """The installed skops version (``skops/__init__`` only: cheap), None if absent."""
    try:
        import skops
    except ImportError:
        return None
    return str(skops.__version__)


def get_state(obj: Any) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The schema state skops' ``dumps`` writes for ``obj`` and its array members.

    Raises
    ------
    Unsupported
        A type outside the vocabulary above, or a skops version not verified.
    """
    version = skops_version()
    if version not in VERIFIED:
        raise Unsupported(f"skops {version} not verified")
    writer = _Writer()
    state = writer.state(obj)
    # what skops.io._persist._save adds, in its order
    state["protocol"] = VERIFIED[version]
    state["_skops_version"] = version
    return state, writer.members


class _Writer:
    def __init__(self) -> None:
        # skops memoizes every object by id() until the dump ends: ids are unique
        self.memo: dict[int, Any] = {}
        self.members: dict[str, bytes] = {}

    def memoize(self, obj: Any) -> int:
        self.memo.setdefault(id(obj), obj)
        return id(obj)

    def state(self, obj: Any) -> dict[str, Any]:
        obj_id = self.memoize(obj)
        res = self._dispatch(obj)
        res["__id__"] = obj_id
        return res

    def _dispatch(self, obj: Any) -> dict[str, Any]:
        t = type(obj)
        if t is dict:
            return self._dict(obj)
        if t is list or t is tuple:
            return {
                "__class__": t.__name__,
                "__module__": "builtins",
                "__loader__": "ListNode" if t is list else "TupleNode",
                "content": [self.state(v) for v in obj]
                if t is list
                else tuple(self.state(v) for v in obj),
            }
        if t is type:
            if obj.__module__ != "builtins":
                raise Unsupported(f"type {obj!r}")
            return {"__class__": obj.__name__, "__module__": "builtins", "__loader__": "TypeNode"}
        if t is np.ndarray or isinstance(obj, np.number | np.bool_):
            return self._ndarray(obj)
        if t in _JSON:
            return {
                "__class__": "str",
                "__module__": "builtins",
                "__loader__": "JsonNode",
                "content": json.dumps(obj),
                "is_json": True,
            }
        name = (t.__module__, t.__name__)
        if name == TREE:
            res = self._reduce(obj)
            res["__loader__"] = "TreeNode"
            return res
        if t.__module__ == LOSS_MODULE and any(c.__name__ == "CyLossFunction" for c in t.__mro__):
            return self._loss(obj)
        if name in OBJECTS:
            return self._object(obj)
        raise Unsupported(f"{t.__module__}.{t.__name__}")

    def _dict(self, obj: dict[Any, Any]) -> dict[str, Any]:
        res: dict[str, Any] = {
            "__class__": "dict",
            "__module__": "builtins",
            "__loader__": "DictNode",
        }
        key_types = self.state([type(key) for key in obj])
        content = {}
        for key, value in obj.items():
            if isinstance(value, property):
                continue
            if np.isscalar(key) and hasattr(key, "item"):
                key = key.item()  # numpy value to python object, as skops
            content[key] = self.state(value)
        res["content"] = content
        res["key_types"] = key_types
        return res

    def _ndarray(self, obj: Any) -> dict[str, Any]:
        t = type(obj)
        res: dict[str, Any] = {
            "__class__": t.__name__,
            "__module__": t.__module__,
            "__loader__": "NdArrayNode",
        }
        if obj.dtype == object:
            raise Unsupported("object array")
        f_name = f"{self.memoize(obj)}.npy"
        if f_name not in self.members:
            self.members[f_name] = _npy(obj)
        res.update(type="numpy", file=f_name)
        return res

    def _object(self, obj: Any) -> dict[str, Any]:
        # skops' object_get_state: json (fails for an estimator), then a constructor
        # that restores from __reduce__ alone (not ours: fall back), then __getstate__
        reduced = obj.__reduce__()
        if (
            len(reduced) >= 2
            and reduced[0] is type(obj)
            and all(item is None for item in reduced[2:])
        ):
            raise Unsupported(f"{type(obj).__name__} restores from its reduce")
        t = type(obj)
        res: dict[str, Any] = {
            "__class__": t.__name__,
            "__module__": t.__module__,
            "__loader__": "ObjectNode",
        }
        res["content"] = self.state(obj.__getstate__())
        return res

    def _reduce(self, obj: Any) -> dict[str, Any]:
        t = type(obj)
        res: dict[str, Any] = {"__class__": t.__name__, "__module__": t.__module__}
        reduced = obj.__reduce__()
        res["__reduce__"] = {"args": self.state(reduced[1])}
        attrs = reduced[2] if len(reduced) == 3 else (obj.__getstate__() or {})
        if not isinstance(attrs, dict | tuple):
            raise Unsupported(f"{t.__name__} state of type {type(attrs).__name__}")
        res["content"] = self.state(attrs)
        return res

    def _loss(self, obj: Any) -> dict[str, Any]:
        reduced = obj.__reduce__()
        t = type(obj)
        if t is reduced[0]:
            res = self._reduce(obj)
            res["__loader__"] = "LossNode"
            return res
        if t is not reduced[1][0]:
            raise Unsupported(f"loss {t.__name__} reduces to {reduced!r}")
        res = {"__class__": t.__name__, "__module__": t.__module__, "__loader__": "LossNode"}
        res["__reduce__"] = {}
        if len(reduced) == 3:
            res["__reduce__"]["args"] = self.state(())
            res["content"] = self.state(reduced[2])
        else:
            res["__reduce__"]["args"] = self.state(reduced[1][2])
            res["content"] = self.state({})
        return res


def _npy(obj: Any) -> bytes:
    """``np.save(buffer, obj, allow_pickle=False)``'s bytes.

    ``np.save`` costs ~65 us per array in Python (header dict, ``repr``, padding,
    ``nditer`` chunks): ~35 ms for a forest's ~500 arrays, each round. For a
    C-contiguous array the same header is formatted here, once checked against
    ``np.save`` per dtype in the process (any difference: ``np.save`` for that dtype).
    """
    if type(obj) is not np.ndarray or not obj.flags.c_contiguous or obj.ndim == 0:
        return _np_save(obj)
    descr = _DESCR.get(obj.dtype)
    if descr is None:
        from numpy.lib.format import dtype_to_descr

        descr = repr(dtype_to_descr(obj.dtype))
        _DESCR[obj.dtype] = descr
        got, want = _npy_header(descr, obj.shape) + obj.tobytes(), _np_save(obj)
        if got != want:
            _DESCR[obj.dtype] = ""
            return want
    if not descr:
        return _np_save(obj)
    return _npy_header(descr, obj.shape) + obj.tobytes()


#: per dtype, the ``repr`` of its npy ``descr`` ("": write with ``np.save``)
_DESCR: dict[np.dtype[Any], str] = {}
#: npy format: magic, version 1.0; headers padded to 64 bytes with spare room for
#: the first axis to grow to 21 digits (numpy's ``GROWTH_AXIS_MAX_DIGITS``)
_MAGIC = b"\x93NUMPY\x01\x00"


def _npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    header = f"{{'descr': {descr}, 'fortran_order': False, 'shape': {shape!r}, }}"
    header += " " * (21 - len(repr(shape[0])))
    hlen = len(header) + 1
    pad = 64 - ((len(_MAGIC) + 2 + hlen) % 64)
    if hlen + pad > 0xFFFF:
        raise Unsupported("npy header beyond version 1.0")
    return (
        _MAGIC + (hlen + pad).to_bytes(2, "little") + header.encode("latin1") + b" " * pad + b"\n"
    )


def _np_save(obj: Any) -> bytes:
    buf = io.BytesIO()
    np.save(buf, obj, allow_pickle=False)
    return bytes(buf.getbuffer())
