"""``Reconciler.sync``: an API thread waits for a tick that began after its change."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path

from modelhost.app import create_app
from modelhost.settings import load_settings
from tests.fakes import FakeBackend


def test_sync_returns_only_after_a_tick_that_began_after_the_call_has_ended(
    tmp_path: Path,
) -> None:
    settings = load_settings(
        {"home": str(tmp_path / "home"), "reconcile_interval_seconds": 30}, environ={}
    )
    reconciler = create_app(settings, backend=FakeBackend()).services.reconciler
    ticks: list[tuple[float, float]] = []

    async def slow_tick() -> None:
        began = time.monotonic()
        await asyncio.sleep(0.3)
        ticks.append((began, time.monotonic()))

    reconciler._reconcile = slow_tick  # type: ignore[method-assign]
    loop = asyncio.new_event_loop()

    def run() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(reconciler.run_forever())

    runner = threading.Thread(target=run)
    runner.start()
    try:
        while not ticks:  # the first tick, at start-up, has ended; the next waits 30 s
            time.sleep(0.01)
        called = time.monotonic()
        assert reconciler.sync(timeout=5) is True
        returned = time.monotonic()
        began, ended = ticks[-1]
        assert len(ticks) == 2
        assert called <= began
        assert ended <= returned
    finally:
        loop.call_soon_threadsafe(lambda: [t.cancel() for t in asyncio.all_tasks(loop)])
        runner.join(5)
        loop.close()


def test_sync_on_the_event_loop_itself_only_wakes_instead_of_blocking_the_tick(
    tmp_path: Path,
) -> None:
    settings = load_settings({"home": str(tmp_path / "home")}, environ={})
    reconciler = create_app(settings, backend=FakeBackend()).services.reconciler

    waits: list[object] = []
    original = reconciler._ticks.wait_for

    def wait_for(*args: object, **kwargs: object) -> bool:
        waits.append(args)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    reconciler._ticks.wait_for = wait_for  # type: ignore[method-assign]

    async def on_the_loop() -> bool:
        reconciler._loop = asyncio.get_running_loop()
        return reconciler.sync(timeout=5)

    assert asyncio.run(on_the_loop()) is False
    assert waits == []  # it never waited for a tick on the loop that runs the ticks
    assert reconciler._wake.is_set()  # but asked for one
