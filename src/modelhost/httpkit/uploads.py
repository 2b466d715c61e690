"""Receiving a project archive in a request body, with the size limit and clear errors."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Request
from starlette.requests import ClientDisconnect

from modelhost import errors
from modelhost.httpkit.bodies import allow_body
from modelhost.operations import Services

ARCHIVE_TYPES = {
    "application/gzip",
    "application/x-gzip",
    "application/x-tar",
    "application/octet-stream",
}


def check_archive_type(request: Request) -> None:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ARCHIVE_TYPES:
        raise errors.UnsupportedMediaType(
            "Send the project as a .tar.gz archive with 'Content-Type: application/gzip'; "
            "the modelhost CLI and client pack it for you."
        )


def _too_large(limit: int) -> errors.BundleTooLarge:
    return errors.BundleTooLarge(
        f"The upload is over the limit of {limit} bytes (setting max_bundle_bytes); leave "
        "large files out with .modelignore or --exclude."
    )


def allow_upload(request: Request, services: Services) -> int:
    """Let this request's body be as large as an upload may be, and return that size. The
    archive is compressed: allow it some room, so that extraction, which counts the real
    sizes, can name the largest files when the project is too big."""
    limit = int(services.settings.max_bundle_bytes * 1.1) + (64 << 20)
    allow_body(request, limit, _too_large(limit))
    return limit


@asynccontextmanager
async def received_archive(request: Request, services: Services) -> AsyncIterator[Any]:
    """The uploaded ``.tar.gz``, spooled to a temporary file and rewound; closed afterwards.

    Publish, runs and schedules all receive their project through here.
    """
    check_archive_type(request)
    limit = allow_upload(request, services)
    with tempfile.SpooledTemporaryFile(max_size=8 << 20) as upload:
        received = 0
        try:
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:  # the body limit stops it first; this is for other callers
                    raise _too_large(limit)
                upload.write(chunk)
        except ClientDisconnect:
            # Nobody is left to read the answer; it keeps the log to one line, not a traceback.
            raise errors.InvalidBundle(
                f"The upload was cut off after {received} bytes, before the archive ended; "
                "nothing was stored. Publish again."
            ) from None
        if not received:
            raise errors.InvalidBundle("The request body is empty; send the project archive.")
        upload.seek(0)
        yield upload
