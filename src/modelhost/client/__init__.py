"""The Python client: ``Client(url, api_key)`` for publishing, listing and calling models.

Errors from the server come back as the same :mod:`modelhost.errors` classes.
"""

from modelhost.client._client import Client, Prediction

__all__ = ["Client", "Prediction"]
