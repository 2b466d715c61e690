"""Fixtures of the builder tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    for name, text in {
        "predict.py": "def predict(x):\n    return x\n",
        "results/model.pkl": "weights",
        "data/raw.csv": "a,b\n",
        "notes.ipynb": "{}",
        "__pycache__/predict.cpython-311.pyc": "",
        ".git/HEAD": "ref",
        "sub/keep.txt": "keep",
    }.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / ".modelignore").write_text("# comments are fine\n*.ipynb\ndata/\n")
    return root
