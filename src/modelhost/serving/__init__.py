"""Serving: what keeps the database's desired state running.

- :mod:`~modelhost.serving.children`: the environment and paths of a child process (an
  instance or a run), composed in one place.
- :mod:`~modelhost.serving.supervisor`: starts and stops instances, backs off after crashes,
  records health and ends instances over the memory limit.
- :mod:`~modelhost.serving.router`: version pools and the route table, published to the
  gateway processes (one or more, through one interface).
- :mod:`~modelhost.serving.switches`: where each model's routes point, what they pointed at
  just before (held for ``switch_hold_seconds``), and the way back after a crash.
- :mod:`~modelhost.serving.denials`: denied invocations written to the audit log, rate-limited.
- :mod:`modelhost.reconciler`: the loop that drives them, one tick at a time.

A version that fails records why as data (:class:`modelhost.db.repo.BuildFailure`).
"""
