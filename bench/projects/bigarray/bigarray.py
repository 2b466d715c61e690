"""A model that holds a large array, built at import: 200 MB of float64 (25 million values).

The copy-on-write benchmark (bench/cow.py) measures how much of it each extra instance of a
version shares with the first, and how fast an extra instance starts.
"""

import numpy as np

WEIGHTS = np.random.default_rng(0).random(25_000_000)


def score(i: int = 0) -> float:
    """One weight: reads the array without writing to it."""
    return float(WEIGHTS[i % WEIGHTS.size])
