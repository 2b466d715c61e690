"""Write a synthetic stand-in for the UCI "Wine Quality" red-wine data set.

The example has to work offline, so instead of downloading ``winequality-red.csv`` we ship a
generated file with the same name, format and columns: 1,599 rows, ``;``-separated, a header of
double-quoted column names, and per-column means, spreads, bounds and rounding close to the real
data. Correlations that matter for the real data (acidity vs. citric acid / pH / density, free vs.
total SO2, alcohol vs. density) are built in through shared latent factors, and ``quality`` is
driven by alcohol (+), volatile acidity (-) and sulphates (+) plus noise, so a classifier has
something to learn. The class counts are those of the real file (mostly 5 and 6).

Only numpy and the standard library are used and the seed is fixed, so running this script again
reproduces the shipped CSV byte for byte::

    python data/generate.py
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

SEED = 20240601
N_ROWS = 1599
OUTPUT = Path(__file__).parent / "winequality-red.csv"

COLUMNS = (
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
    "quality",
)

# Quality counts in the real red-wine file (3..8); used as target proportions.
QUALITY_COUNTS = {3: 10, 4: 53, 5: 681, 6: 638, 7: 199, 8: 18}


def mix(rng: np.random.Generator, *terms: tuple[float, np.ndarray]) -> np.ndarray:
    """Combine unit-variance latent columns and top up with fresh noise to unit variance.

    Keeping every latent column at variance 1 lets the marginal transforms below use the real
    data's mean and standard deviation directly; the weights are the (approximate) correlations.
    """
    weight_sq = sum(w * w for w, _ in terms)
    assert weight_sq < 1.0, "latent weights must leave room for noise"
    out = math.sqrt(1.0 - weight_sq) * rng.standard_normal(N_ROWS)
    for weight, column in terms:
        out += weight * column
    return out


def lognormal(z: np.ndarray, mean: float, sd: float, shift: float = 0.0) -> np.ndarray:
    """Map a standard normal column to a right-skewed variable with the given mean and sd.

    Most wine measurements are positive and skewed (long upper tail); a shifted log-normal with
    matched moments reproduces that shape better than a clipped normal.
    """
    m = mean - shift
    s2 = math.log1p((sd / m) ** 2)
    return shift + np.exp(math.log(m) - s2 / 2 + math.sqrt(s2) * z)


def normal(z: np.ndarray, mean: float, sd: float) -> np.ndarray:
    """Map a standard normal column to a symmetric variable (density, pH, citric acid)."""
    return mean + sd * z


def finish(x: np.ndarray, low: float, high: float, decimals: int) -> np.ndarray:
    """Clip to the real data's observed range and round like the real file does."""
    rounded: np.ndarray = np.round(np.clip(x, low, high), decimals)
    return rounded


def quality_from_score(score: np.ndarray) -> np.ndarray:
    """Turn a continuous score into quality grades with the real file's class proportions.

    Ranking instead of fixed thresholds guarantees the skewed class balance (few 3s and 8s,
    mostly 5s and 6s) whatever the score's scale.
    """
    grades = np.array(list(QUALITY_COUNTS))
    counts = np.array(list(QUALITY_COUNTS.values()), dtype=float)
    bounds = np.cumsum(counts) / counts.sum()
    ranks = (np.argsort(np.argsort(score)) + 0.5) / len(score)
    return grades[np.searchsorted(bounds, ranks)]


def generate(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draw all columns; returns them keyed by the real column names."""
    acidity = rng.standard_normal(N_ROWS)  # shared factor: fixed acidity, citric acid, pH, density
    z_volatile = rng.standard_normal(N_ROWS)
    z_citric = mix(rng, (0.60, acidity), (-0.45, z_volatile))
    z_sugar = rng.standard_normal(N_ROWS)
    z_chlorides = rng.standard_normal(N_ROWS)
    z_free = rng.standard_normal(N_ROWS)
    z_total = mix(rng, (0.67, z_free))
    z_alcohol = mix(rng, (-0.20, z_chlorides))
    z_density = mix(rng, (0.60, acidity), (-0.45, z_alcohol), (0.30, z_sugar))
    z_ph = mix(rng, (-0.68, acidity))
    z_sulphates = mix(rng, (0.30, z_chlorides))

    # Quality correlates with alcohol (+0.48), volatile acidity (-0.39), sulphates (+0.25) in
    # the real data; the signal here is a little stronger so a small forest clearly learns it.
    score = mix(rng, (0.60, z_alcohol), (-0.45, z_volatile), (0.35, z_sulphates))

    return {
        "fixed acidity": finish(lognormal(acidity, 8.32, 1.74, shift=3.5), 4.6, 15.9, 1),
        "volatile acidity": finish(lognormal(z_volatile, 0.528, 0.179, 0.1), 0.12, 1.58, 3),
        "citric acid": finish(normal(z_citric, 0.271, 0.195), 0.0, 1.0, 2),
        "residual sugar": finish(lognormal(z_sugar, 2.54, 1.41, shift=0.8), 0.9, 15.5, 1),
        "chlorides": finish(lognormal(z_chlorides, 0.0875, 0.047, 0.01), 0.012, 0.611, 3),
        "free sulfur dioxide": finish(lognormal(z_free, 15.87, 10.46), 1, 72, 0),
        "total sulfur dioxide": finish(lognormal(z_total, 46.47, 32.9, shift=2.0), 6, 289, 0),
        "density": finish(normal(z_density, 0.99675, 0.00189), 0.99007, 1.00369, 4),
        "pH": finish(normal(z_ph, 3.311, 0.154), 2.74, 4.01, 2),
        "sulphates": finish(lognormal(z_sulphates, 0.658, 0.17, shift=0.3), 0.33, 2.0, 2),
        "alcohol": finish(lognormal(z_alcohol, 10.42, 1.07, shift=8.0), 8.4, 14.9, 1),
        "quality": quality_from_score(score),
    }


def fmt(value: float) -> str:
    """Format a number the way the real file does: no trailing zeros, integers without a dot."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def main() -> None:
    """Generate the data and write it next to this script."""
    columns = generate(np.random.default_rng(SEED))
    lines = [";".join(f'"{name}"' for name in COLUMNS)]
    lines += [";".join(fmt(float(columns[name][i])) for name in COLUMNS) for i in range(N_ROWS)]
    OUTPUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {N_ROWS} rows to {OUTPUT}")


if __name__ == "__main__":
    main()
