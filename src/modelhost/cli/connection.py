"""The CLI's connection to the server: one client per command, made only when needed."""

from __future__ import annotations

import click

from modelhost.client import Client


class Connection:
    """Creates the client lazily, so --help and usage errors need no server."""

    def __init__(self, url: str | None, api_key: str | None) -> None:
        self.url = url
        self.api_key = api_key
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.url, self.api_key)
        return self._client

    def close(self) -> None:
        """Close the client's connections (when the command is done)."""
        if self._client is not None:
            self._client.close()
            self._client = None


pass_connection = click.make_pass_decorator(Connection)
