"""Runs and schedules: a command executed in a fresh copy of a project, by hand or on a
schedule, that can publish the files it leaves behind as a new version of a model.

``timing`` is pure schedule arithmetic (cron with a time zone, or a fixed interval),
``scheduler`` turns due schedules into runs, and ``runner`` executes runs as processes
inside ``modelhost serve``.
"""
