"""Train the wine-quality classifier that ``predict.py`` serves.

Reads ``data/winequality-red.csv``, reports accuracy on a 20 % hold-out so you can see the model
learned something, then refits on every row (the served model should use all the data) and
writes it to ``results/classifier.pkl``. Paths are relative to this file, so it runs from any
working directory::

    python train.py
"""

from __future__ import annotations

from pathlib import Path

import joblib
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import train_test_split

HERE = Path(__file__).parent
DATA = HERE / "data" / "winequality-red.csv"
MODEL = HERE / "results" / "classifier.pkl"


def make_model() -> RandomForestClassifier:
    """The classifier configuration; random_state fixed so retraining gives the same model."""
    return RandomForestClassifier(
        n_estimators=100, max_features=5, min_samples_split=5, random_state=0
    )


def main() -> None:
    """Evaluate on a hold-out split, then fit on all rows and save the model."""
    wine = pd.read_csv(DATA, sep=";")
    # Plain arrays, not DataFrames: the model then carries no column names, so predict.py can
    # pass a bare list of 11 numbers without pandas and without feature-name warnings.
    X = wine.drop(columns="quality").to_numpy()
    y = wine["quality"].to_numpy()

    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.2, random_state=0, stratify=y
    )
    model = make_model().fit(X_train, y_train)
    print(f"train accuracy: {model.score(X_train, y_train):.3f}")
    print(f"test accuracy:  {model.score(X_test, y_test):.3f}")

    model = make_model().fit(X, y)
    MODEL.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, MODEL)
    print(f"saved {MODEL} ({MODEL.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
