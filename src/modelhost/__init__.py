"""modelhost: publish a Python function as a versioned, access-controlled REST endpoint.

>>> from modelhost import Client
>>> client = Client("http://127.0.0.1:8000", api_key="mh_...")  # doctest: +SKIP
>>> client.predict("wine-quality", parameters=[[5.6, 0.615, 0, 1.6, 0.089, 16, 59,
...                                              0.9943, 3.58, 0.52, 9.9]])  # doctest: +SKIP
"""

__version__ = "0.1.0"

from modelhost.client import (
    AsyncPrediction,
    Client,
    Instance,
    Model,
    Prediction,
    Record,
    Run,
    Schedule,
    Token,
    User,
    Version,
)
from modelhost.errors import ModelhostError

__all__ = [
    "AsyncPrediction",
    "Client",
    "Instance",
    "Model",
    "ModelhostError",
    "Prediction",
    "Record",
    "Run",
    "Schedule",
    "Token",
    "User",
    "Version",
    "__version__",
]
