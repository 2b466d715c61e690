"""Serve the wine-quality classifier trained by ``train.py``.

modelhost runs this module with the bundle directory as the working directory and calls one of
the functions below per request. The model is loaded once, at import time, so requests only pay
for the prediction itself.

HTTP bodies, for example::

    predict:        {"parameters": [[5.6, 0.615, 0, 1.6, 0.089, 16, 59, 0.9943, 3.58, 0.52, 9.9]]}
    predict_named:  {"data": {"fixed_acidity": 5.6, "volatile_acidity": 0.615, ...}}
    predict_batch:  the same body as predict, for a version published with --batch-max-size
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real
from pathlib import Path
from typing import Any

import joblib
import numpy as np

# Column order the model was trained on (the CSV header, minus "quality").
FEATURES: tuple[str, ...] = (
    "fixed acidity",
    "volatile acidity",
    "citric acid",
    "residual sugar",
    "chlorides",
    "free sulfur dioxide",
    "total sulfur dioxide",
    "density",
    "pH",
    "sulphates",
    "alcohol",
)

_RELATIVE_MODEL_PATH = Path("results") / "classifier.pkl"


def _find_model() -> Path:
    """Prefer the bundle's cwd (how modelhost runs us), else the copy next to this file."""
    for candidate in (_RELATIVE_MODEL_PATH, Path(__file__).resolve().parent / _RELATIVE_MODEL_PATH):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{_RELATIVE_MODEL_PATH} not found in the working directory or next to {__file__}; "
        "run `python train.py` first"
    )


_MODEL: Any = joblib.load(_find_model())


def predict(features: Sequence[float]) -> int:
    """Predict the quality grade (3..8) of one wine from its 11 measurements.

    ``features`` is a list of 11 numbers in the order of ``FEATURES``. HTTP body::

        {"parameters": [[5.6, 0.615, 0, 1.6, 0.089, 16, 59, 0.9943, 3.58, 0.52, 9.9]]}

    Returns a plain ``int`` (not a numpy integer) so the result serialises as JSON as-is.
    Raises ``ValueError`` if the row is not exactly 11 finite numbers.
    """
    _checked(features)
    row = np.asarray(features, dtype=np.float64).reshape(1, -1)
    return int(_MODEL.predict(row)[0])


def _checked(features: Any) -> Sequence[float]:
    """``features`` if it is a list of 11 finite numbers, else a ``ValueError`` saying why."""
    if isinstance(features, (str, bytes)) or not isinstance(features, Sequence):
        kind = type(features).__name__
        raise ValueError(f"expected a list of {len(FEATURES)} numbers, got {kind}")
    if len(features) != len(FEATURES):
        raise ValueError(
            f"expected {len(FEATURES)} numbers ({', '.join(FEATURES)}), got {len(features)}"
        )
    for name, value in zip(FEATURES, features, strict=True):
        if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
            raise ValueError(f"{name!r} must be a finite number, got {value!r}")
    return features


def predict_batch(inputs: Sequence[Any]) -> list[int]:
    """``predict`` for many calls at once: one forest pass for the whole batch.

    Publish it as a batching function (``modelhost publish predict.py:predict_batch --name
    wine-batch --batch-max-size 64``). Callers send the same body as for ``predict``; each
    input is one call's ``parameters`` array (``[[5.6, 0.615, ...]]``) or its ``data`` object
    (``{"features": [5.6, 0.615, ...]}``). A forest takes about as long for 1 row as for 100,
    so under load this answers many times the calls per second that ``predict`` does.
    """
    rows = []
    for item in inputs:
        if isinstance(item, dict):
            item = [item.get("features")]
        if not isinstance(item, Sequence) or len(item) != 1:
            raise ValueError('send {"parameters": [[11 numbers]]} or {"data": {"features": [...]}}')
        rows.append(_checked(item[0]))
    if not rows:
        return []
    return [int(grade) for grade in _MODEL.predict(np.asarray(rows, dtype=np.float64))]


def _normalise(name: str) -> str:
    """Key form that makes "fixed acidity", "fixed_acidity" and "Fixed-Acidity" equal."""
    return name.strip().lower().replace("_", " ").replace("-", " ")


_BY_KEY: dict[str, int] = {_normalise(name): i for i, name in enumerate(FEATURES)}


def predict_named(**features: float) -> int:
    """Same as ``predict`` but with the 11 measurements passed by name.

    Keys may be the CSV column names or use underscores (``fixed_acidity``, ``pH`` or ``ph``),
    which suits callers that send a JSON object. HTTP body::

        {"data": {"fixed_acidity": 5.6, "volatile_acidity": 0.615, "citric_acid": 0,
                  "residual_sugar": 1.6, "chlorides": 0.089, "free_sulfur_dioxide": 16,
                  "total_sulfur_dioxide": 59, "density": 0.9943, "pH": 3.58,
                  "sulphates": 0.52, "alcohol": 9.9}}

    Raises ``ValueError`` naming any missing, unknown or duplicated features.
    """
    row: list[Any] = [None] * len(FEATURES)
    unknown: list[str] = []
    for key, value in features.items():
        index = _BY_KEY.get(_normalise(key))
        if index is None:
            unknown.append(key)
        elif row[index] is not None:
            raise ValueError(f"feature {FEATURES[index]!r} given more than once")
        else:
            row[index] = value
    missing = [name for name, value in zip(FEATURES, row, strict=True) if value is None]
    if unknown or missing:
        raise ValueError(
            f"expected the {len(FEATURES)} features {', '.join(FEATURES)}; "
            f"unknown: {unknown or 'none'}, missing: {missing or 'none'}"
        )
    return predict(row)
