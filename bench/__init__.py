"""The benchmark suite for modelhost's invocation path (see ``bench/README.md``).

A package so that ``uvicorn bench.ceiling:app`` and ``python -m bench.floor`` work from the
repository root; ``bench/run.py`` is the entry point.
"""
