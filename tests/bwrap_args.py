"""Reads a bubblewrap command line back into what the sandbox it starts contains.

The unit tests of ``modelhost.sandbox`` judge the argument list it builds by what bwrap makes
of it (bwrap(1)): which namespaces, which mounts in which order, which variables, what runs
inside. An option this reader does not know fails the test, so a misspelt option cannot pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from os import PathLike
from pathlib import PurePosixPath

#: options without an argument
FLAGS = frozenset(
    {
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--unshare-net",
        "--unshare-user",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
    }
)
#: options that make a mount (or a directory or a symlink) at their last argument
MOUNTS = {
    "--ro-bind": 2,
    "--bind": 2,
    "--symlink": 2,
    "--tmpfs": 1,
    "--proc": 1,
    "--dev": 1,
    "--dir": 1,
}
#: other options with arguments
VALUES = {"--hostname": 1, "--uid": 1, "--gid": 1, "--chdir": 1, "--cap-add": 1, "--setenv": 2}


@dataclass(frozen=True)
class Mount:
    kind: str  # the option without its dashes: "ro-bind", "bind", "tmpfs", "dir"...
    dest: PurePosixPath
    source: str | None = None
    perms: str | None = None


@dataclass
class Sandboxed:
    """What one bwrap command line sets up."""

    program: str
    flags: list[str] = field(default_factory=list)
    #: in the order bwrap makes them; a later mount covers what an earlier one showed
    mounts: list[Mount] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    values: dict[str, list[str]] = field(default_factory=dict)
    #: what bwrap runs inside, after ``--``
    inner: list[str] = field(default_factory=list)

    def value(self, option: str) -> str | None:
        given = self.values.get(option, [])
        assert len(given) <= 1, f"{option} given {len(given)} times"
        return given[0] if given else None

    def sees(self, path: str | PathLike[str]) -> Mount | None:
        """The mount that shows ``path`` inside: the last one made at it or above it."""
        path = PurePosixPath(path)
        shown = None
        for mount in self.mounts:
            if mount.kind != "dir" and (mount.dest == path or mount.dest in path.parents):
                shown = mount
        return shown

    def binds(self) -> list[Mount]:
        return [m for m in self.mounts if m.kind in ("bind", "ro-bind")]


def read(argv: list[str]) -> Sandboxed:
    """Parse ``argv`` (``bwrap ... -- program ...``) as bwrap would."""
    sandboxed = Sandboxed(program=argv[0])
    perms: str | None = None
    i = 1
    while i < len(argv):
        option = argv[i]
        if option == "--":
            sandboxed.inner = argv[i + 1 :]
            assert perms is None, "--perms before nothing it could apply to"
            return sandboxed
        if option in FLAGS:
            sandboxed.flags.append(option)
            i += 1
        elif option == "--perms":
            assert perms is None, "--perms twice in a row"
            perms = argv[i + 1]
            i += 2
        elif option in MOUNTS:
            count = MOUNTS[option]
            args = argv[i + 1 : i + 1 + count]
            assert len(args) == count, f"{option} lacks its arguments"
            source = args[0] if count == 2 else None
            sandboxed.mounts.append(
                Mount(option[2:], PurePosixPath(args[-1]), source=source, perms=perms)
            )
            perms = None
            i += 1 + count
        elif option in VALUES:
            count = VALUES[option]
            args = argv[i + 1 : i + 1 + count]
            assert len(args) == count, f"{option} lacks its arguments"
            assert perms is None, f"--perms cannot apply to {option}"
            if option == "--setenv":
                assert args[0] not in sandboxed.env, f"{args[0]} set twice"
                sandboxed.env[args[0]] = args[1]
            else:
                sandboxed.values.setdefault(option, []).append(args[0])
            i += 1 + count
        else:
            raise AssertionError(f"bwrap has no option {option!r}: {argv}")
    raise AssertionError(f"no '--' before the program in {argv}")
