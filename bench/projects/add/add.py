"""The smallest possible model: the benchmark measures modelhost's overhead, not the function."""


def add(x: float, y: float) -> float:
    """Return ``x + y``; HTTP body ``{"data": {"x": 1, "y": 2}}`` gives ``3``."""
    return x + y
