"""Persistence: the engine, the tables, the repository (all SQL lives here) and migrations."""
