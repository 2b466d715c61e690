"""The Python client: ``Client(url, api_key)`` for publishing, listing and calling models.

Errors from the server come back as the same :mod:`modelhost.errors` classes. Answers are typed
records (:class:`Model`, :class:`Version`, :class:`Run`, ...) that also read like the JSON
objects they came from (``version["status"]``).
"""

from modelhost.client._client import AsyncPrediction, Client, Prediction
from modelhost.client._results import Instance, Model, Record, Run, Schedule, Token, User, Version

__all__ = [
    "AsyncPrediction",
    "Client",
    "Instance",
    "Model",
    "Prediction",
    "Record",
    "Run",
    "Schedule",
    "Token",
    "User",
    "Version",
]
