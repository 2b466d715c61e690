"""URLs as shown and recorded: never with credentials in them."""

from __future__ import annotations

import pytest

from modelhost.urls import without_credentials


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("git+https://TOKEN@host/o/r@v1", "git+https://host/o/r@v1"),
        ("https://user:pass@host/o/r", "https://host/o/r"),
        (
            "fatal: repository 'https://u:p@h.example/r/' not found",
            "fatal: repository 'https://h.example/r/' not found",
        ),
        ("https://host/o/r@v1", "https://host/o/r@v1"),
        ("git@github.com:o/r.git", "git@github.com:o/r.git"),
    ],
)
def test_the_user_name_and_password_of_every_url_are_taken_out(text: str, shown: str) -> None:
    assert without_credentials(text) == shown
