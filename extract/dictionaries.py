"""Read a model's gene dictionaries (token ids, median expression) without running their code.

Geneformer ships its token and gene-median dictionaries as Python pickles.  ``pickle.load`` on a
file runs whatever the file says, so a dictionary is never unpickled freely: `read_dictionary`
uses an unpickler that builds only str, int, float, bool and None inside dicts (lists and tuples
as containers), plus NumPy numeric scalars (a median saved as ``np.float64``), rebuilt from their
bytes after checking the dtype is numeric.  Any other global - a function, a class, ``os.system``
- is refused with one line before it is called.  A JSON file with the same mapping is read as
well, and `write_json_dictionary` converts a pickle once for people who would rather keep JSON.
"""

from __future__ import annotations

import io
import json
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from geoscreen.errors import GeoscreenError

_NUMPY_SCALAR = {("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}
_NUMPY_DTYPE = {("numpy", "dtype")}
#: the largest dictionary file read (Geneformer's are 0.3-1 MB)
MAX_BYTES = 256 * 2**20


def _numeric_dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    if not isinstance(spec, str):
        raise pickle.UnpicklingError(f"numpy.dtype({spec!r}) is not a numeric dtype")
    dt = np.dtype(spec)
    if dt.kind not in "biuf":
        raise pickle.UnpicklingError(f"numpy.dtype({spec!r}) is not a numeric dtype")
    return dt


def _numeric_scalar(dtype: Any, data: Any = b"") -> float | int | bool:
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biuf" or not isinstance(data, bytes):
        raise pickle.UnpicklingError("a NumPy scalar that is not a plain number")
    if len(data) != dtype.itemsize:
        raise pickle.UnpicklingError("a NumPy scalar with the wrong number of bytes")
    return np.frombuffer(data, dtype=dtype)[0].item()


class DataOnlyUnpickler(pickle.Unpickler):
    """Builds plain data; every global except NumPy's numeric scalar and dtype is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_SCALAR:
            return _numeric_scalar
        if (module, name) in _NUMPY_DTYPE:
            return _numeric_dtype
        raise pickle.UnpicklingError(f"needs code to load ({module}.{name})")


def _load_pickle(path: Path) -> Any:
    data = path.read_bytes()
    try:
        return DataOnlyUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        if msg.startswith("needs code"):
            raise GeoscreenError(f"{msg}, so it was refused; a gene dictionary holds only "
                                 "names and numbers", path=str(path),
                                 fix="use the dictionary file distributed with the model, or a "
                                     "JSON object of the same mapping") from None
        raise GeoscreenError(f"is not a plain data pickle ({msg})", path=str(path),
                             fix="use the dictionary file distributed with the model") from None
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            RecursionError, MemoryError) as exc:
        raise GeoscreenError(f"cannot be read as a pickled dictionary ({type(exc).__name__})",
                             path=str(path), fix="the file looks damaged; copy it again") from None


def read_dictionary(path: str | Path, *, field: str) -> dict[Any, Any]:
    """A mapping from a ``.pkl`` (read data-only) or ``.json`` file; `field` is the option
    that named the file, for error messages."""
    path = Path(path)
    if not path.is_file():
        raise GeoscreenError("does not exist", path=str(path), field=field)
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise GeoscreenError(f"is {size:,} bytes; a gene dictionary is under "
                             f"{MAX_BYTES // 2**20} MiB", path=str(path), field=field)
    if path.suffix.lower() == ".json":
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise GeoscreenError(f"is not valid JSON ({type(exc).__name__})", path=str(path),
                                 field=field) from None
    else:
        obj = _load_pickle(path)
    if not isinstance(obj, dict) or not obj:
        raise GeoscreenError(f"holds a {type(obj).__name__}, not a non-empty dictionary",
                             path=str(path), field=field)
    return obj


def token_dictionary(path: str | Path, *, field: str = "--token-dictionary") -> dict[str, int]:
    """Token -> id, ids 0..n-1 without gaps or repeats."""
    raw = read_dictionary(path, field=field)
    bad = next((k for k, v in raw.items() if not isinstance(k, str)
                or isinstance(v, bool) or not isinstance(v, int)), None)
    if bad is not None:
        raise GeoscreenError(f"entry {bad!r} is not a token -> integer id", path=str(path),
                             field=field, fix="pass the token dictionary (token_dictionary_*.pkl)")
    ids = sorted(raw.values())
    if ids != list(range(len(ids))):
        raise GeoscreenError(f"ids must be 0..{len(ids) - 1} with no gaps or repeats",
                             path=str(path), field=field,
                             fix="pass the token dictionary saved with the model")
    return dict(raw)


def median_dictionary(path: str | Path, *, field: str = "--gene-median") -> dict[str, float]:
    """Gene -> its nonzero median expression (a finite positive number)."""
    raw = read_dictionary(path, field=field)
    out: dict[str, float] = {}
    for k, v in raw.items():
        ok = isinstance(k, str) and not isinstance(v, bool) and isinstance(v, (int, float))
        if not ok or not math.isfinite(float(v)) or float(v) <= 0:
            raise GeoscreenError(f"entry {k!r}: {v!r} is not a positive finite median",
                                 path=str(path), field=field,
                                 fix="pass the gene median dictionary "
                                     "(gene_median_dictionary_*.pkl)")
        out[k] = float(v)
    return out


def write_json_dictionary(src: str | Path, dst: str | Path, *, overwrite: bool = False) -> int:
    """Convert a pickled dictionary to JSON (read data-only); returns the number of entries."""
    dst = Path(dst)
    if dst.exists() and not overwrite:
        raise GeoscreenError("already exists", path=str(dst), fix="pass --overwrite")
    obj = read_dictionary(src, field="SRC")
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.write_text(json.dumps(obj, sort_keys=False), encoding="utf-8")
    tmp.replace(dst)
    return len(obj)


__all__ = ["DataOnlyUnpickler", "median_dictionary", "read_dictionary", "token_dictionary",
           "write_json_dictionary"]
