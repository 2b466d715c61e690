"""Sandboxes for user code: every instance and every run starts inside one.

A model or a run is code from anyone who may publish, so it must never reach the server's
secrets. On Linux the sandbox is bubblewrap (``bwrap``): a new mount namespace in which the
system directories and the code's interpreter are bound read-only, the working copy (read-only
for instances, writable for runs) and nothing else of the data directory, a private ``/tmp``,
its own ``/proc`` in its own PID namespace (so no other process is visible), its own IPC and UTS
namespaces and, when a model turns its network off, its own network namespace. Process and
open-file limits are set with ``prlimit`` before the code starts.

Who the code runs as depends on who the server runs as:

- as root, bwrap binds the directories (root can reach them in the 0700 data directory) and
  ``setpriv`` then drops to an unprivileged uid of the model's own, from a range no account
  uses (setting ``sandbox_first_uid``), with no groups and no capabilities;
- as an ordinary user, bwrap runs in a user namespace that shows the code as ``nobody``; the
  kernel still counts the code as the server's user, so the mount and PID namespaces are what
  keep the data directory and the server's processes out of reach.

``isolation = auto`` (the default) sandboxes where bwrap works and otherwise says loudly that
code is not isolated; ``sandbox`` refuses to start without it; ``none`` turns it off.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from modelhost import errors
from modelhost.settings import Settings

logger = logging.getLogger(__name__)

MODES = ("auto", "sandbox", "none")
#: the worker's own files, bound read-only into every instance
RUNTIME_DIR = Path(__file__).resolve().parent / "runtime"
#: Top-level system directories bound read-only (or recreated as the symlinks they are).
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt")
#: how many uids, from ``sandbox_first_uid`` on, the models' code is spread over
UID_SPAN = 1 << 20
NOBODY = 65534
#: the sandbox's private /tmp (a fresh tmpfs, not the machine's), also its HOME when read-only
SANDBOX_TMP = "/tmp"  # noqa: S108
SANDBOX_SHM = "/dev/shm"  # noqa: S108 - a tmpfs of the sandbox's own, like its /tmp
INSTALL_HINT = (
    "Install bubblewrap (Debian and Ubuntu: apt-get install bubblewrap; Fedora: dnf install "
    "bubblewrap), or set isolation = none to run code without a sandbox on a single-user machine."
)
NOT_ISOLATED = (
    "Code is NOT isolated: models and runs execute as the server's own user and can read its "
    "data directory (database, server.key, credentials). Fine for one user on a laptop; for "
    "several users install bubblewrap and restart (see docs/security.md)."
)


@dataclass(frozen=True)
class Confinement:
    """What one sandboxed process may see and do."""

    #: the working copy, its current directory
    workdir: Path
    #: whose code it is: the uid is derived from it (a model id, or a run id without a model)
    owner: str
    #: runs write to their copy; instances only read theirs
    writable: bool = False
    #: programs the code runs with; their installations are bound read-only
    programs: tuple[str, ...] = ()
    #: further directories or files bound read-only (the worker's own files)
    read_only: tuple[Path, ...] = ()
    #: further directories the code writes to (an environment build: uv's cache, its target)
    read_write: tuple[Path, ...] = ()
    network: bool = True


@dataclass(frozen=True)
class Status:
    """What ``/health`` and the start-up log say about isolation."""

    isolated: bool
    #: "bubblewrap" or "none"
    sandbox: str
    #: who the code runs as
    user: str
    reason: str = ""
    limits: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        shown: dict[str, object] = {
            "isolated": self.isolated,
            "sandbox": self.sandbox,
            "user": self.user,
            "limits": self.limits,
        }
        if self.reason:
            shown["warning"] = self.reason
        return shown


class Unconfined:
    """No sandbox: the command runs as it is (``isolation = none``, or no working bwrap)."""

    def __init__(self, reason: str) -> None:
        self.status = Status(
            isolated=False, sandbox="none", user="the server's user", reason=reason
        )

    def command(self, argv: Sequence[str], confinement: Confinement) -> list[str]:
        return list(argv)

    def prepare(self, confinement: Confinement) -> None:
        """Nothing to do: the code runs as the server's user, who owns everything it uses."""

    def uid(self, confinement: Confinement) -> int:
        return os.geteuid()

    def exit_code(self, code: int) -> int:
        return code


class Bubblewrap:
    """bubblewrap around each command (see the module docstring)."""

    def __init__(self, settings: Settings, bwrap: str, *, as_root: bool) -> None:
        self.settings = settings
        self.bwrap = bwrap
        self.as_root = as_root
        self.home = settings.home_path
        self._system = _system_paths()
        self.limits = {
            "processes": settings.sandbox_max_processes,
            "open_files": settings.sandbox_max_open_files,
        }
        first = settings.sandbox_first_uid
        user = (
            f"an unprivileged uid of each model's own ({first} to {first + UID_SPAN - 1})"
            if as_root
            else "nobody in a user namespace (the kernel still counts it as the server's user)"
        )
        self.status = Status(isolated=True, sandbox="bubblewrap", user=user, limits=self.limits)

    def uid(self, confinement: Confinement) -> int:
        """The uid the code runs as: stable per model, so its runs and instances share it."""
        if not self.as_root:
            return os.geteuid()
        digest = hashlib.sha256(confinement.owner.encode()).digest()
        return int(self.settings.sandbox_first_uid + int.from_bytes(digest[:4], "big") % UID_SPAN)

    def exit_code(self, code: int) -> int:
        """The code's own exit status as a process's would read (negative for a signal):
        bwrap exits with 128 + N when the code was killed by signal N."""
        return -(code - 128) if 128 < code < 128 + 65 else code

    def prepare(self, confinement: Confinement) -> None:
        """Make what the code uses reachable by the uid it runs as, before it starts: its
        working copy becomes that uid's (the data directory above it stays the server's and
        0700, so no other local user reaches it), and environments in the data directory,
        which versions of several models share, become readable by all (likewise behind it).
        """
        if not self.as_root:
            return
        uid = self.uid(confinement)
        for mine in (confinement.workdir, *confinement.read_write):
            if mine.stat().st_uid != uid:
                _walk(mine, lambda p: os.chown(p, uid, uid, follow_symlinks=False))
        for path in _installations(confinement.programs):
            if _within(path, self.home) and path.stat().st_mode & 0o005 != 0o005:
                _walk(path, _share)

    def command(self, argv: Sequence[str], confinement: Confinement) -> list[str]:
        args = [
            self.bwrap,
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--die-with-parent",
            "--new-session",
            "--hostname",
            "modelhost",
        ]
        if not confinement.network:
            args.append("--unshare-net")
        if not self.as_root:
            args += ["--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY)]
        args += self._system
        # /dev/shm of its own, writable by the code's uid, as multiprocessing's semaphores and
        # joblib need (bwrap's /dev has one only root may write to)
        args += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", SANDBOX_SHM]
        args += ["--perms", "1777", "--tmpfs", SANDBOX_TMP]
        workdir = confinement.workdir
        binds = [(path, "--ro-bind") for path in _installations(confinement.programs)]
        binds += [(path, "--ro-bind") for path in confinement.read_only]
        binds += [(path, "--bind") for path in confinement.read_write]
        binds.append((workdir, "--bind" if confinement.writable else "--ro-bind"))
        args += self._binds(binds)
        args += ["--chdir", str(workdir), "--setenv", "TMPDIR", SANDBOX_TMP]
        if not confinement.writable:  # a home the code can write to, as libraries expect
            args += ["--setenv", "HOME", SANDBOX_TMP]
        if self.as_root:
            uid = str(self.uid(confinement))
            args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--"]
            args += [_SETPRIV, f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
            args += ["--inh-caps=-all", "--bounding-set=-all"]
        else:
            args.append("--")
        args += [
            _PRLIMIT,
            f"--nproc={self.limits['processes']}",
            f"--nofile={self.limits['open_files']}",
            "--",
            *argv,
        ]
        return args

    def _binds(self, binds: Iterable[tuple[Path, str]]) -> list[str]:
        """Bind arguments in path order, each mount point's parents made traversable first
        (bwrap would create them 0700, which an unprivileged uid cannot pass). The data
        directory is hidden first, so nothing of it shows but what is bound on purpose."""
        args: list[str] = []
        made: set[Path] = {Path("/"), Path(SANDBOX_TMP)}
        if any(_within(self.home, Path(s)) for s in SYSTEM_PATHS):
            args += ["--tmpfs", str(self.home)]  # under a system directory bound above
        else:
            args += [*_dirs(self.home.parent, made), "--tmpfs", str(self.home)]
        made.add(self.home)
        for path, how in sorted(set(binds), key=lambda item: (len(item[0].parts), item[0])):
            if not path.exists() or any(_within(path, Path(s)) for s in SYSTEM_PATHS):
                continue
            args += _dirs(path.parent, made)
            args += [how, str(path), str(path)]
            made.add(path)
        return args


Sandbox = Bubblewrap | Unconfined

_SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"
_PRLIMIT = shutil.which("prlimit") or "/usr/bin/prlimit"


def open_sandbox(settings: Settings) -> Sandbox:
    """The sandbox ``settings.isolation`` asks for, checked by starting a real one.

    Raises :class:`errors.InvalidSetting` when ``isolation = sandbox`` and none works.
    """
    mode = settings.isolation
    if mode == "none":
        return Unconfined("Sandboxing is turned off (isolation = none). " + NOT_ISOLATED)
    problem = _probe(settings)
    if problem is None:
        sandbox = Bubblewrap(settings, _bwrap_path(), as_root=os.geteuid() == 0)
        return sandbox
    if mode == "sandbox":
        raise errors.InvalidSetting(
            f"isolation = sandbox, but no sandbox works here: {problem} {INSTALL_HINT}"
        )
    return Unconfined(f"No sandbox: {problem} " + NOT_ISOLATED)


def _bwrap_path() -> str:
    return shutil.which("bwrap") or ""


#: probe results by (bwrap, euid): the answer does not change while the process runs
_probed: dict[tuple[str, int], str | None] = {}


def _probe(settings: Settings) -> str | None:
    """None when a sandbox starts and runs a program here; otherwise what went wrong."""
    key = (_bwrap_path(), os.geteuid())
    if key not in _probed:
        _probed[key] = _try_sandbox(settings)
    return _probed[key]


def _try_sandbox(settings: Settings) -> str | None:
    bwrap = _bwrap_path()
    if not bwrap:
        return "bubblewrap (bwrap) is not installed."
    for helper in (_PRLIMIT, *((_SETPRIV,) if os.geteuid() == 0 else ())):
        if not os.access(helper, os.X_OK):
            return f"{helper} (util-linux) is missing."
    sandbox = Bubblewrap(settings, bwrap, as_root=os.geteuid() == 0)
    probe = Confinement(workdir=Path("/"), owner="probe")
    argv = sandbox.command(["/bin/sh", "-c", "exit 0"], probe)
    try:
        result = subprocess.run(
            argv, capture_output=True, timeout=30, stdin=subprocess.DEVNULL, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap could not be run ({exc})."
    if result.returncode != 0:
        said = result.stderr.decode("utf-8", "replace").strip().splitlines()
        return f"bwrap failed ({said[-1] if said else f'exit code {result.returncode}'})."
    return None


def _system_paths() -> list[str]:
    args: list[str] = []
    for name in SYSTEM_PATHS:
        path = Path(name)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), name]
        elif path.is_dir():
            args += ["--ro-bind", name, name]
    return args


def _installations(programs: Iterable[str]) -> set[Path]:
    """What a program needs to run, outside the system directories: for a Python, its
    environment's ``bin``/``lib`` and ``pyvenv.cfg``, and those of the Python it was made
    from. Whole prefixes are not bound, so a Python in a home directory does not bring the
    rest of that home with it."""
    found: set[Path] = set()
    for program in programs:
        path = Path(program)
        if not path.is_absolute():
            located = shutil.which(program)
            if located is None:
                continue
            path = Path(located)
        prefixes = {path.parent.parent, path.resolve().parent.parent}
        config = path.parent.parent / "pyvenv.cfg"
        if config.is_file():
            found.add(config)
            for line in config.read_text(errors="replace").splitlines():
                key, _, value = line.partition("=")
                if key.strip() == "home" and value.strip():
                    prefixes.add(Path(value.strip()).parent)
        for prefix in prefixes:
            for part in ("bin", "lib", "lib64"):
                candidate = prefix / part
                if candidate.exists() and not candidate.is_symlink():
                    found.add(candidate)
    return found


def _walk(top: Path, apply: Callable[[str], None]) -> None:
    apply(str(top))
    if top.is_dir() and not top.is_symlink():
        for root, dirs, files in os.walk(top):
            for name in dirs + files:
                apply(os.path.join(root, name))


def _share(path: str) -> None:
    """Readable by all, and searchable for directories and programs (never writable)."""
    mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode):
        return
    extra = 0o005 if stat.S_ISDIR(mode) or mode & 0o100 else 0o004
    os.chmod(path, stat.S_IMODE(mode) | extra)


def _within(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def _dirs(path: Path, made: set[Path]) -> list[str]:
    """``--dir`` for each directory from the root down to ``path`` not yet made, mode 0755."""
    args: list[str] = []
    for directory in [*reversed(path.parents), path]:
        if directory in made:
            continue
        made.add(directory)
        args += ["--perms", "0755", "--dir", str(directory)]
    return args


def innermost_pid(pid: int) -> int | None:
    """The process that runs the code: ``pid`` itself, or, for a sandbox, the first process
    below it that is not bubblewrap (bwrap starts the sandbox's init, which starts the code).
    None while it cannot be told (the sandbox is still starting). Linux only."""
    current = pid
    for _ in range(4):
        try:
            if not os.readlink(f"/proc/{current}/exe").endswith("/bwrap"):
                return current
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            return None
        if not children:
            return None
        current = int(children[0])
    return None
