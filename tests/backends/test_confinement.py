"""What an instance's sandbox holds, and that a fork server gets the same (its forked
instances run inside it): docs/security.md, "The sandbox"."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from modelhost.backends.base import InstanceSpec, InstanceState
from modelhost.backends.local import LocalBackend, confinement_of
from modelhost.json_conversions import __file__ as conversions_file
from modelhost.sandbox import RUNTIME_DIR, Bubblewrap, Confinement, Unconfined
from modelhost.settings import load_settings
from tests.bwrap_args import read
from tests.helpers import PROJECTS

LOAD_TIMEOUT = 30.0


def _spec(tmp_path: Path, **changes: object) -> InstanceSpec:
    workdir = tmp_path / "home" / "work" / "m-1" / "v1"
    shutil.copytree(PROJECTS / "calc", workdir)
    spec = InstanceSpec(
        instance_id="i-1",
        model_id="m-1",
        version_id="v-1",
        version_number=1,
        workdir=workdir,
        file="calc.py",
        function="add",
        interpreter=sys.executable,
        log_path=tmp_path / "logs" / "i-1.log",
    )
    return dataclasses.replace(spec, **changes)


def test_an_instance_reads_its_copy_the_worker_and_its_libraries_and_writes_only_to_tmp(
    tmp_path: Path,
) -> None:
    library = tmp_path / "home" / "envs" / "r-1" / "library"
    library.mkdir(parents=True)
    spec = _spec(tmp_path, libraries=(library,), network=False)
    confinement = confinement_of(spec)
    assert confinement.owner == "m-1"  # its uid is its model's
    assert not confinement.writable
    assert not confinement.network
    assert confinement.read_write == ()
    settings = load_settings({"home": str(tmp_path / "home")}, environ={})
    built = read(Bubblewrap(settings, "/usr/bin/bwrap", as_root=True).command(["x"], confinement))
    for path in (
        spec.workdir / "calc.py",
        library / "jsonlite",
        RUNTIME_DIR / "worker.py",
        Path(conversions_file),
    ):
        shown = built.sees(path)
        assert shown is not None, path
        assert shown.kind in ("ro-bind", "symlink"), path
    assert [m for m in built.binds() if m.kind == "bind"] == []
    assert "--unshare-net" in built.flags
    assert built.sees(tmp_path / "home" / "server.key").dest == PurePosixPath(tmp_path / "home")  # type: ignore[union-attr]


class Recording(Unconfined):
    """No sandbox, but it keeps the confinement each command was built with."""

    def __init__(self) -> None:
        super().__init__("tests")
        self.commands: list[tuple[list[str], Confinement]] = []

    def command(self, argv: Sequence[str], confinement: Confinement) -> list[str]:
        self.commands.append((list(argv), confinement))
        return super().command(argv, confinement)


def test_a_fork_server_starts_in_the_sandbox_of_the_instances_forked_from_it(
    tmp_path: Path,
) -> None:
    spec = _spec(tmp_path, fork=True, network=False)
    recording = Recording()

    async def main() -> None:
        backend = LocalBackend(recording)
        try:
            instance = await backend.start(spec, LOAD_TIMEOUT)

            async def loaded() -> None:
                while instance.state is InstanceState.STARTING:
                    await asyncio.sleep(0.02)

            await asyncio.wait_for(loaded(), LOAD_TIMEOUT)
            assert instance.state is InstanceState.READY, instance.failure
        finally:
            await backend.close()

    asyncio.run(main())
    fork_servers = [c for argv, c in recording.commands if "--fork-server-fd" in argv]
    assert fork_servers == [confinement_of(spec)]
    assert fork_servers[0].workdir == spec.workdir
    assert not fork_servers[0].network
