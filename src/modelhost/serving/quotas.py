"""Token limits, seen from the main process: which limited token has which slot of the shared
counters (:mod:`modelhost.gateway.counters`), the usage a slot starts from, and writing usage
back to the database so that quotas survive a restart.

Each reconcile tick gives every active token that has a rate or a quota a slot (loaded with the
quota usage the database kept) and frees the slots of tokens that lost their limits or were
revoked. Every ``quota_flush_seconds`` the usage that changed is written to the database in the
background, and once more when the server stops; a crash loses at most the calls of the last
interval (they are counted afresh, so a token may get that many calls more).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from modelhost import errors, token_limits
from modelhost.db.repo import Token
from modelhost.gateway.counters import TokenCounters, TokenLimit

logger = logging.getLogger(__name__)


class TokenQuotas:
    def __init__(self, counters: TokenCounters) -> None:
        self.counters = counters
        #: token id -> its slot
        self._slots: dict[str, int] = {}
        #: token id -> (window, used) as last written to (or read from) the database
        self._saved: dict[str, tuple[int, int]] = {}
        #: usage of tokens whose slot was freed, not written yet
        self._left: list[tuple[str, int, int]] = []
        self._full_warned = False

    def limits(self, tokens: Iterable[Token]) -> dict[str, dict[bytes, TokenLimit]]:
        """Model id -> token digest -> limits, for the active ``tokens`` that have any; slots
        are given to new ones and taken from those no longer listed."""
        by_model: dict[str, dict[bytes, TokenLimit]] = {}
        listed: set[str] = set()
        for token in tokens:
            if token.rate_limit is None and token.quota is None:
                continue
            try:
                rate = token_limits.rate_or_none(token.rate_limit)
                quota = token_limits.quota_or_none(token.quota)
            except errors.InvalidLimit:  # never stored: the operations check what they store
                logger.exception("token %s has limits that do not parse", token.id)
                continue
            slot = self._slots.get(token.id)
            if slot is None:
                slot = self.counters.slot(token.quota_window, token.quota_used)
                if slot is None:
                    if not self._full_warned:
                        logger.error(
                            "every token counter slot is taken: token %s is not limited", token.id
                        )
                        self._full_warned = True
                    continue
                self._slots[token.id] = slot
                self._saved[token.id] = (token.quota_window, token.quota_used)
            listed.add(token.id)
            limit = TokenLimit(slot, token.name, rate, quota)
            by_model.setdefault(token.model_id, {})[bytes.fromhex(token.token_hash)] = limit
        for token_id in [t for t in self._slots if t not in listed]:
            slot = self._slots.pop(token_id)
            window, used = self.counters.usage(slot)
            if (window, used) != self._saved.pop(token_id, None):
                self._left.append((token_id, window, used))
            self.counters.free(slot)
        return by_model

    def usage(self, token_id: str) -> tuple[int, int] | None:
        """The token's quota window key and calls used in it now; None: it has no slot."""
        slot = self._slots.get(token_id)
        return None if slot is None else self.counters.usage(slot)

    def changed(self) -> list[tuple[str, int, int]]:
        """(token id, window, used) of every token whose usage changed since it was last
        saved; they count as saved from now on (call :meth:`unsaved` when writing failed)."""
        rows, self._left = self._left, []
        for token_id, slot in self._slots.items():
            usage = self.counters.usage(slot)
            if usage != self._saved.get(token_id):
                self._saved[token_id] = usage
                rows.append((token_id, *usage))
        return rows

    def unsaved(self, rows: list[tuple[str, int, int]]) -> None:
        """Writing ``rows`` failed: write them with the next ones."""
        for token_id, _window, _used in rows:
            self._saved.pop(token_id, None)
            if token_id not in self._slots:
                self._left.append((token_id, _window, _used))
