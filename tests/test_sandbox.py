"""The sandbox set-up: the bubblewrap command it builds, judged against docs/security.md.

Fast tests of the argument list, read back by ``tests.bwrap_args`` as bwrap reads it, plus a
few that start real bubblewrap sandboxes with it (the probe, the innermost process, a file
the code must not see). ``tests/security/test_sandbox.py`` attacks a real sandboxed server.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from modelhost import errors, sandbox
from modelhost.sandbox import Bubblewrap, Confinement, Unconfined, open_sandbox
from modelhost.settings import Settings, load_settings
from tests.bwrap_args import Mount, Sandboxed, read
from tests.helpers import wait_until

#: docs/security.md: "the system read-only: /usr, /bin, /sbin, /lib*, /etc and /opt"
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt")
#: what the data directory holds that code must never see (docs/security.md)
SECRETS = ("modelhost.db", "server.key", "credentials", "modelhost.toml", "logs/server.log")
NOT_ISOLATED = (
    "Code is NOT isolated: models and runs execute as the server's own user and can read its "
    "data directory (database, server.key, credentials). Fine for one user on a laptop; for "
    "several users install bubblewrap and restart (see docs/security.md)."
)
INSTALL = (
    "Install bubblewrap (Debian and Ubuntu: apt-get install bubblewrap; Fedora: dnf install "
    "bubblewrap), or set isolation = none to run code without a sandbox on a single-user machine."
)
FIRST_UID = 1_000_000_000
LAST_UID = 1_001_048_575


@pytest.fixture(autouse=True)
def _fresh_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test probes anew: the module keeps a probe's answer for the process."""
    monkeypatch.setattr(sandbox, "_probed", {})


def _settings(home: Path, **values: Any) -> Settings:
    return load_settings({"home": str(home), **values}, environ={})


def _home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    for name in SECRETS:
        (home / name).parent.mkdir(parents=True, exist_ok=True)
        (home / name).write_text('# secret = "yes"\n')
    return home


def _copy(home: Path, version: str = "v1") -> Path:
    workdir = home / "work" / "m-1" / version
    workdir.mkdir(parents=True)
    (workdir / "predict.py").write_text("def predict(x):\n    return x\n")
    return workdir


def _built(
    tmp_path: Path, *, as_root: bool = True, home: Path | None = None, **confined: Any
) -> tuple[Sandboxed, Bubblewrap, Confinement]:
    home = home or _home(tmp_path)
    wrap = Bubblewrap(_settings(home), "/usr/bin/bwrap", as_root=as_root)
    confinement = Confinement(
        workdir=confined.pop("workdir", None) or _copy(home), owner="m-1", **confined
    )
    return read(wrap.command(["/usr/bin/python3", "-c", "pass"], confinement)), wrap, confinement


def _prlimit_tail() -> list[str]:
    return [
        sandbox._PRLIMIT,
        "--nproc=512",
        "--nofile=4096",
        "--",
        "/usr/bin/python3",
        "-c",
        "pass",
    ]


# -- namespaces and what runs inside ----------------------------------------------------------


def test_code_gets_its_own_pid_ipc_uts_and_cgroup_namespaces_a_new_session_and_dies_with_its_parent(
    tmp_path: Path,
) -> None:
    built, _, _ = _built(tmp_path)
    assert sorted(built.flags) == sorted(
        [
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--die-with-parent",
            "--new-session",
        ]
    )
    assert built.value("--hostname") == "modelhost"
    assert built.program == "/usr/bin/bwrap"


def test_a_model_with_its_network_off_gets_a_network_namespace_of_its_own(
    tmp_path: Path,
) -> None:
    on, _, _ = _built(tmp_path / "on")
    off, _, _ = _built(tmp_path / "off", network=False)
    assert "--unshare-net" not in on.flags
    assert off.flags.count("--unshare-net") == 1
    assert sorted(set(off.flags) - set(on.flags)) == ["--unshare-net"]


def test_as_root_the_code_runs_as_the_models_uid_with_no_groups_and_no_capabilities(
    tmp_path: Path,
) -> None:
    built, wrap, confinement = _built(tmp_path)
    uid = wrap.uid(confinement)
    assert FIRST_UID <= uid <= LAST_UID
    assert "--unshare-user" not in built.flags
    assert built.value("--uid") is None
    assert built.value("--gid") is None
    # bwrap keeps only what setpriv needs to switch, and setpriv drops everything
    assert sorted(built.values["--cap-add"]) == ["CAP_SETGID", "CAP_SETUID"]
    setpriv = [
        sandbox._SETPRIV,
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
    ]
    assert built.inner == setpriv + _prlimit_tail()


def test_as_another_user_the_code_runs_as_nobody_in_a_user_namespace(tmp_path: Path) -> None:
    built, wrap, confinement = _built(tmp_path, as_root=False)
    assert "--unshare-user" in built.flags
    assert built.value("--uid") == "65534"
    assert built.value("--gid") == "65534"
    assert "--cap-add" not in built.values
    assert built.inner == _prlimit_tail()
    assert wrap.uid(confinement) == os.geteuid()


def test_the_process_and_open_file_limits_come_from_the_settings(tmp_path: Path) -> None:
    home = _home(tmp_path)
    settings = _settings(home, sandbox_max_processes=7, sandbox_max_open_files=33)
    wrap = Bubblewrap(settings, "/usr/bin/bwrap", as_root=False)
    argv = wrap.command(["/bin/true"], Confinement(workdir=_copy(home), owner="m-1"))
    assert read(argv).inner == [sandbox._PRLIMIT, "--nproc=7", "--nofile=33", "--", "/bin/true"]
    assert wrap.limits == {"processes": 7, "open_files": 33}


# -- what the code sees -----------------------------------------------------------------------


def test_the_system_directories_are_bound_read_only_or_recreated_as_the_links_they_are(
    tmp_path: Path,
) -> None:
    built, _, _ = _built(tmp_path)
    for name in SYSTEM:
        path = Path(name)
        shown = built.sees(name)
        if path.is_symlink():
            assert _kind(built, name) == "symlink", name
            assert shown is not None
            assert shown.source == os.readlink(path)
            assert shown.dest == PurePosixPath(name)
        elif path.is_dir():
            assert _kind(built, name) == "ro-bind", name
            assert shown is not None
            assert (shown.source, shown.dest) == (name, PurePosixPath(name))
        else:
            assert shown is None, name


def test_nothing_else_of_the_machine_is_there(tmp_path: Path) -> None:
    built, _, _ = _built(tmp_path)
    for name in ("/", "/home/someone", "/root", "/var/lib", "/srv", "/run/secrets", "/mnt"):
        assert built.sees(name) is None, name
    assert built.sees("/var/tmp/x") is None


def test_code_gets_its_own_proc_a_minimal_dev_and_a_private_tmp_that_is_its_tmpdir(
    tmp_path: Path,
) -> None:
    built, _, _ = _built(tmp_path)
    assert built.sees("/proc/1/environ") == Mount("proc", PurePosixPath("/proc"))
    assert built.sees("/dev/null") == Mount("dev", PurePosixPath("/dev"))
    private = built.sees("/tmp/anything")
    assert private is not None
    assert (private.kind, private.dest, private.perms) == ("tmpfs", PurePosixPath("/tmp"), "1777")
    assert built.env["TMPDIR"] == "/tmp"


def test_code_gets_a_dev_shm_of_its_own_that_its_uid_may_write(tmp_path: Path) -> None:
    built, _, _ = _built(tmp_path)
    shm = built.sees("/dev/shm/semaphore")
    assert shm is not None
    assert (shm.kind, shm.dest, shm.perms) == ("tmpfs", PurePosixPath("/dev/shm"), "1777")


def test_sandboxed_code_makes_multiprocessing_semaphores_in_its_own_dev_shm(
    tmp_path: Path,
) -> None:
    # joblib (scikit-learn) and multiprocessing need a /dev/shm the code's uid may write to;
    # as root, as the tests run, the sandbox drops to the model's own uid
    home = _home(tmp_path)
    wrap = Bubblewrap(_settings(home), "/usr/bin/bwrap", as_root=True)
    confinement = Confinement(workdir=_copy(home), owner="m-1")
    wrap.prepare(confinement)
    name = f"modelhost-test-{os.getpid()}"
    code = (
        "import multiprocessing, os\n"
        "multiprocessing.Semaphore()\n"
        f"open('/dev/shm/{name}', 'w').write('1')\n"
        "print(os.getuid())\n"
    )
    done = subprocess.run(
        wrap.command(["/usr/bin/python3", "-c", code], confinement),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == wrap.uid(confinement)
    assert not Path(f"/dev/shm/{name}").exists()  # its own: nothing reached the machine's


def test_an_instances_working_copy_is_read_only_at_its_own_path_its_directory_and_tmp_its_home(
    tmp_path: Path,
) -> None:
    built, _, confinement = _built(tmp_path)
    workdir = confinement.workdir
    shown = built.sees(workdir / "predict.py")
    assert shown is not None
    assert (shown.kind, shown.source, shown.dest) == ("ro-bind", str(workdir), workdir)
    assert built.value("--chdir") == str(workdir)
    assert built.env == {"TMPDIR": "/tmp", "HOME": "/tmp"}


def test_a_runs_working_copy_is_writable_and_the_sandbox_leaves_its_home_alone(
    tmp_path: Path,
) -> None:
    built, _, confinement = _built(tmp_path, writable=True)
    workdir = confinement.workdir
    shown = built.sees(workdir / "out.csv")
    assert shown is not None
    assert (shown.kind, shown.source, shown.dest) == ("bind", str(workdir), workdir)
    assert built.value("--chdir") == str(workdir)
    # a run's HOME is its working copy, set by the runner's environment
    assert built.env == {"TMPDIR": "/tmp"}


def test_nothing_of_the_data_directory_shows_but_the_code_s_own_working_copy(
    tmp_path: Path,
) -> None:
    home = _home(tmp_path)
    other = _copy(home, "v2")
    built, _, confinement = _built(tmp_path, home=home)
    for name in SECRETS:
        assert _hidden_by(built, home / name) == ("tmpfs", home), name
    for hidden in (other / "predict.py", home / "envs" / "e1" / "bin" / "python"):
        assert _hidden_by(built, hidden) == ("tmpfs", home), hidden
    mine = built.sees(confinement.workdir)
    assert mine is not None
    assert mine.kind == "ro-bind"


def test_the_data_directory_is_hidden_even_inside_a_system_directory(tmp_path: Path) -> None:
    home = Path("/opt/modelhost-data-of-a-test-that-does-not-exist")
    workdir = tmp_path / "copy"
    workdir.mkdir()
    wrap = Bubblewrap(_settings(home), "/usr/bin/bwrap", as_root=True)
    argv = wrap.command(["/bin/true"], Confinement(workdir=workdir, owner="m-1"))
    built = read(argv)
    shown = built.sees(home / "server.key")
    assert shown is not None
    assert (shown.kind, shown.dest) == ("tmpfs", home)
    # /opt is the machine's, bound read-only: nothing is made in it
    assert not [
        m
        for m in built.mounts
        if m.kind == "dir" and PurePosixPath("/opt") in (m.dest, *m.dest.parents)
    ]


def test_every_directory_above_a_mount_is_made_once_and_traversable_by_any_uid(
    tmp_path: Path,
) -> None:
    home = _home(tmp_path)
    library = tmp_path / "site" / "R" / "library"
    library.mkdir(parents=True)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "inner").mkdir()
    built, _, _ = _built(
        tmp_path,
        home=home,
        read_only=(library, tmp_path / "cache" / "inner"),
        read_write=(tmp_path / "cache",),
    )
    made: list[PurePosixPath] = []
    for mount in built.mounts:
        if mount.kind == "dir":
            assert mount.perms == "0755", mount
            made.append(mount.dest)
            continue
        if mount.kind in ("bind", "ro-bind", "tmpfs") and mount.dest not in map(
            PurePosixPath, SYSTEM
        ):
            for parent in mount.dest.parents:
                if parent == PurePosixPath("/"):
                    continue
                there = parent in made or any(
                    m.dest == parent for m in built.mounts[: built.mounts.index(mount)]
                )
                assert there, f"{parent} is not made before {mount.dest}"
    assert len(made) == len(set(made)), "a directory is made twice"
    assert PurePosixPath("/") not in made
    mounted = {m.dest for m in built.mounts if m.kind != "dir"}
    assert not mounted & set(made), "a directory made over a mount"
    assert PurePosixPath(home) in mounted


def test_the_data_directory_is_hidden_before_anything_is_bound_into_it(tmp_path: Path) -> None:
    built, _, confinement = _built(tmp_path)
    kinds = [(m.kind, m.dest) for m in built.mounts]
    hidden = kinds.index(("tmpfs", PurePosixPath(confinement.workdir.parents[2])))
    bound = kinds.index(("ro-bind", PurePosixPath(confinement.workdir)))
    assert hidden < bound


def test_libraries_and_the_workers_files_are_bound_read_only_and_build_paths_writable(
    tmp_path: Path,
) -> None:
    home = _home(tmp_path)
    library = home / "envs" / "r-1" / "library"
    library.mkdir(parents=True)
    cache = home / "uv-cache"
    cache.mkdir()
    runtime = sandbox.RUNTIME_DIR
    built, _, _ = _built(tmp_path, home=home, read_only=(library, runtime), read_write=(cache,))
    for path, kind in ((library / "jsonlite", "ro-bind"), (cache / "wheels", "bind")):
        shown = built.sees(path)
        assert shown is not None, path
        assert (shown.kind, shown.source, shown.dest) == (kind, str(path.parent), path.parent)
    shown = built.sees(runtime / "worker.py")
    if any(runtime.is_relative_to(s) for s in SYSTEM):  # already there, read-only
        assert shown is not None
        assert shown.kind in ("ro-bind", "symlink")
    else:
        assert shown is not None
        assert (shown.kind, shown.dest) == ("ro-bind", PurePosixPath(runtime))


def test_a_path_bound_read_only_inside_a_writable_one_stays_read_only_and_vice_versa(
    tmp_path: Path,
) -> None:
    home = _home(tmp_path)
    outer = tmp_path / "outer"
    (outer / "inner").mkdir(parents=True)
    other = tmp_path / "other"
    (other / "inner").mkdir(parents=True)
    built, _, _ = _built(
        tmp_path,
        home=home,
        read_write=(outer, other / "inner"),
        read_only=(outer / "inner", other),
    )
    assert _kind(built, outer / "file") == "bind"
    assert _kind(built, outer / "inner" / "file") == "ro-bind"
    assert _kind(built, other / "file") == "ro-bind"
    assert _kind(built, other / "inner" / "file") == "bind"


def _hidden_by(built: Sandboxed, path: Path) -> tuple[str, Path] | None:
    shown = built.sees(path)
    return (shown.kind, Path(shown.dest)) if shown is not None else None


def _kind(built: Sandboxed, path: Path | str) -> str | None:
    shown = built.sees(path)
    return shown.kind if shown is not None else None


def test_each_path_is_bound_once_and_missing_or_system_paths_not_at_all(tmp_path: Path) -> None:
    home = _home(tmp_path)
    library = tmp_path / "lib"
    library.mkdir()
    built, _, _ = _built(
        tmp_path,
        home=home,
        read_only=(library, library, tmp_path / "missing", Path("/usr/share")),
    )
    dests = [m.dest for m in built.binds()]
    assert dests.count(PurePosixPath(library)) == 1
    assert PurePosixPath(tmp_path / "missing") not in dests
    assert PurePosixPath("/usr/share") not in dests
    assert all(Path(m.source or "").exists() for m in built.binds())


# -- interpreters -----------------------------------------------------------------------------


def _venv(tmp_path: Path, *, copies: bool = False) -> tuple[Path, Path]:
    """A base Python and a virtual environment made from it (files only: nothing runs);
    with ``copies``, its python is a copy (``venv --copies``): only pyvenv.cfg's ``home``
    leads to the base."""
    base = tmp_path / "pythons" / ("py=3.12" if copies else "3.12")
    for part in ("bin", "lib", "lib64", "include", "share"):
        (base / part).mkdir(parents=True)
    (base / "bin" / "python3.12").write_text("")
    venv = tmp_path / "projects" / "p" / ".venv"
    for part in ("bin", "lib", "include"):
        (venv / part).mkdir(parents=True)
    (venv / "lib64").symlink_to("lib")
    if copies:
        (venv / "bin" / "python").write_text("")
    else:
        (venv / "bin" / "python").symlink_to(base / "bin" / "python3.12")
    config = f"home = {base / 'bin'}\nversion = 3.12.1\nprompt = caf".encode() + b"\xe9\n"
    (venv / "pyvenv.cfg").write_bytes(config)  # a prompt in Latin-1, not UTF-8
    (tmp_path / "projects" / "p" / "secret.txt").write_text("not for the code")
    return base, venv


@pytest.mark.parametrize("copies", [False, True], ids=["linked", "copied"])
def test_an_environments_python_brings_its_bin_lib_and_config_and_those_of_its_base_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, copies: bool
) -> None:
    base, venv = _venv(tmp_path, copies=copies)
    # a relative bin or lib where the server runs must not be taken for one of them
    (tmp_path / "cwd" / "bin").mkdir(parents=True)
    (tmp_path / "cwd" / "lib").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    built, _, _ = _built(tmp_path, programs=(str(venv / "bin" / "python"),))
    bound = {Path(m.dest) for m in built.binds()}
    expected = {
        venv / "bin",
        venv / "lib",
        venv / "pyvenv.cfg",
        base / "bin",
        base / "lib",
        base / "lib64",
    }
    assert expected <= bound
    # under the sandbox's own /tmp (the tests' directories are in the machine's /tmp)
    for kept_out in (venv / "include", base / "include", base / "share", venv.parent):
        assert _kind(built, kept_out / "x") == "tmpfs", kept_out
    assert _kind(built, tmp_path / "projects" / "p" / "secret.txt") == "tmpfs"
    assert all(m.kind == "ro-bind" for m in built.binds() if Path(m.dest) in expected)
    assert all(Path(m.dest).is_absolute() for m in built.mounts)


def test_a_program_named_without_a_path_is_found_on_the_path_and_an_unknown_one_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tool = tmp_path / "tools" / "bin" / "mytool"
    tool.parent.mkdir(parents=True)
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    (tmp_path / "tools" / "lib").mkdir()
    monkeypatch.setenv("PATH", str(tool.parent))
    built, _, _ = _built(tmp_path, programs=("no-such-program-here", "mytool"))
    bound = {Path(m.dest) for m in built.binds()}
    assert {tool.parent, tmp_path / "tools" / "lib"} <= bound


def test_a_pyvenv_cfg_without_a_home_brings_no_other_python(tmp_path: Path) -> None:
    venv = tmp_path / "env"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")
    (venv / "pyvenv.cfg").write_text("home =\ninclude-system-site-packages = false\n")
    built, _, _ = _built(tmp_path, programs=(str(venv / "bin" / "python"),))
    outside = [
        m.dest
        for m in built.binds()
        if str(m.dest) not in SYSTEM and not Path(m.dest).is_relative_to(tmp_path)
    ]
    assert outside == []
    assert {Path(m.dest) for m in built.binds()} >= {venv / "bin", venv / "pyvenv.cfg"}


# -- uids, exit codes and status --------------------------------------------------------------


def test_as_root_each_model_gets_a_stable_uid_of_its_own_from_the_configured_range(
    tmp_path: Path,
) -> None:
    home = _home(tmp_path)
    wrap = Bubblewrap(_settings(home), "/usr/bin/bwrap", as_root=True)
    uids = {wrap.uid(Confinement(workdir=home, owner=f"m-{n}")) for n in range(200)}
    assert all(FIRST_UID <= uid <= LAST_UID for uid in uids)
    assert len(uids) >= 195  # a hash over about a million uids: collisions are rare
    assert max(uids) - min(uids) > 1_048_576 // 2  # spread over the whole range
    run = Confinement(workdir=home / "run", owner="m-7", writable=True)
    instance = Confinement(workdir=home / "work", owner="m-7")
    assert wrap.uid(run) == wrap.uid(instance)  # a model's runs and instances share it
    moved = Bubblewrap(_settings(home, sandbox_first_uid=2_000_000), "/usr/bin/bwrap", as_root=True)
    assert 2_000_000 <= moved.uid(instance) < 2_000_000 + 1_048_576
    assert moved.uid(instance) - 2_000_000 == wrap.uid(instance) - FIRST_UID
    assert isinstance(wrap.uid(instance), int)


def test_an_exit_status_of_128_plus_n_is_the_codes_death_by_signal_n(tmp_path: Path) -> None:
    wrap = Bubblewrap(_settings(tmp_path), "/usr/bin/bwrap", as_root=True)
    assert wrap.exit_code(0) == 0
    assert wrap.exit_code(1) == 1
    assert wrap.exit_code(128) == 128
    assert wrap.exit_code(128 + signal.SIGHUP) == -signal.SIGHUP
    assert wrap.exit_code(128 + signal.SIGKILL) == -signal.SIGKILL
    assert wrap.exit_code(128 + 64) == -64  # SIGRTMAX
    assert wrap.exit_code(128 + 65) == 193
    assert wrap.exit_code(255) == 255
    assert Unconfined("off").exit_code(-9) == -9
    assert Unconfined("off").exit_code(137) == 137


def test_the_status_health_shows_for_a_sandbox_as_root_and_as_another_user(
    tmp_path: Path,
) -> None:
    root = Bubblewrap(_settings(tmp_path), "/usr/bin/bwrap", as_root=True)
    assert root.status.as_dict() == {
        "isolated": True,
        "sandbox": "bubblewrap",
        "user": "an unprivileged uid of each model's own (1000000000 to 1001048575)",
        "limits": {"processes": 512, "open_files": 4096},
    }
    user = Bubblewrap(_settings(tmp_path), "/usr/bin/bwrap", as_root=False)
    assert user.status.as_dict()["user"] == (
        "nobody in a user namespace (the kernel still counts it as the server's user)"
    )
    moved = Bubblewrap(_settings(tmp_path, sandbox_first_uid=5000), "/usr/bin/bwrap", as_root=True)
    assert moved.status.user == "an unprivileged uid of each model's own (5000 to 1053575)"


def test_without_a_sandbox_the_command_is_unchanged_and_the_status_warns(tmp_path: Path) -> None:
    unconfined = Unconfined("No sandbox: because. " + NOT_ISOLATED)
    argv = ["/usr/bin/python3", "-c", "pass"]
    confinement = Confinement(workdir=tmp_path, owner="m-1", network=False)
    command = unconfined.command(argv, confinement)
    assert command == argv
    assert command is not argv
    assert unconfined.uid(confinement) == os.geteuid()
    before = tmp_path.stat()
    unconfined.prepare(confinement)
    assert (tmp_path.stat().st_uid, tmp_path.stat().st_mode) == (before.st_uid, before.st_mode)
    assert unconfined.status.as_dict() == {
        "isolated": False,
        "sandbox": "none",
        "user": "the server's user",
        "limits": {},
        "warning": "No sandbox: because. " + NOT_ISOLATED,
    }


# -- prepare ----------------------------------------------------------------------------------


def test_as_root_prepare_gives_the_working_copy_and_build_paths_to_the_models_uid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = _home(tmp_path)
    workdir = _copy(home)
    (workdir / "pkg").mkdir()
    (workdir / "pkg" / "data.csv").write_text("1")
    (workdir / "key").symlink_to(home / "server.key")
    cache = tmp_path / "cache"
    (cache / "wheels").mkdir(parents=True)
    server_dir = tmp_path / "server-dir"
    server_dir.mkdir()
    (server_dir / "file").write_text("")
    linked = tmp_path / "linked"
    linked.symlink_to(server_dir)
    wrap = Bubblewrap(_settings(home), "/usr/bin/bwrap", as_root=True)
    confinement = Confinement(workdir=workdir, owner="m-1", read_write=(cache, linked))
    uid = wrap.uid(confinement)
    chowned: list[tuple[str, int, int, bool]] = []

    def chown(path: str, user: int, group: int, *, follow_symlinks: bool = True) -> None:
        chowned.append((path, user, group, follow_symlinks))

    monkeypatch.setattr(os, "chown", chown)
    wrap.prepare(confinement)
    expected = {
        str(p)
        for p in (
            workdir,
            workdir / "predict.py",
            workdir / "pkg",
            workdir / "pkg" / "data.csv",
            workdir / "key",
            cache,
            cache / "wheels",
            linked,  # the link itself, not the directory it points to
        )
    }
    assert {c[0] for c in chowned} == expected
    assert len(chowned) == len(expected)
    # the link itself, never the server file it points to
    assert all(c[1:] == (uid, uid, False) for c in chowned)


def test_prepare_leaves_a_working_copy_that_is_the_models_already(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = _home(tmp_path)
    workdir = _copy(home)
    wrap = Bubblewrap(_settings(home), "/usr/bin/bwrap", as_root=True)
    confinement = Confinement(workdir=workdir, owner="m-1")
    monkeypatch.setattr(
        Path, "stat", _stat_owned_by(Path.stat, wrap.uid(confinement)), raising=True
    )
    chowned: list[str] = []
    monkeypatch.setattr(os, "chown", lambda path, *a, **k: chowned.append(path))
    wrap.prepare(confinement)
    assert chowned == []


def _stat_owned_by(real: Any, uid: int) -> Any:
    def fake(self: Path, **kwargs: Any) -> Any:
        result = real(self, **kwargs)
        values = list(result)
        values[stat.ST_UID] = uid
        return os.stat_result(values)

    return fake


def test_as_root_prepare_makes_environments_in_the_data_directory_readable_never_writable(
    tmp_path: Path,
) -> None:
    home = _home(tmp_path)
    env = home / "envs" / "e-1"
    (env / "bin").mkdir(parents=True)
    (env / "lib" / "site").mkdir(parents=True)
    python = env / "bin" / "python"
    python.write_text("")
    python.chmod(0o700)
    module = env / "lib" / "site" / "m.py"
    module.write_text("")
    module.chmod(0o600)
    for directory in (env / "lib" / "site", env / "lib", env / "bin"):  # umask 0o077
        directory.chmod(0o700)
    (env / "lib" / "link").symlink_to("site")
    elsewhere = tmp_path / "elsewhere" / "bin"  # say, a Python in root's home
    elsewhere.mkdir(parents=True)
    (elsewhere / "python").write_text("")
    (elsewhere / "python").chmod(0o700)
    elsewhere.chmod(0o700)
    wrap = Bubblewrap(_settings(home), "/usr/bin/bwrap", as_root=True)
    workdir = _copy(home)
    wrap.prepare(
        Confinement(workdir=workdir, owner="m-1", programs=(str(python), str(elsewhere / "python")))
    )
    assert stat.S_IMODE(python.stat().st_mode) == 0o705
    assert stat.S_IMODE(module.stat().st_mode) == 0o604
    assert stat.S_IMODE((env / "lib" / "site").stat().st_mode) == 0o705
    assert stat.S_IMODE((env / "bin").stat().st_mode) == 0o705
    assert stat.S_IMODE((env / "lib").stat().st_mode) == 0o705
    # outside the data directory the machine's own modes are left as they are
    assert stat.S_IMODE((elsewhere / "python").stat().st_mode) == 0o700
    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o700


def test_an_environment_shared_once_is_not_walked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = _home(tmp_path)
    env = home / "envs" / "e-1" / "bin"
    env.mkdir(parents=True)
    (env / "python").write_text("")
    env.chmod(0o700)
    wrap = Bubblewrap(_settings(home), "/usr/bin/bwrap", as_root=True)
    confinement = Confinement(workdir=_copy(home), owner="m-1", programs=(str(env / "python"),))
    wrap.prepare(confinement)
    assert stat.S_IMODE(env.stat().st_mode) == 0o705
    changed: list[str] = []
    monkeypatch.setattr(os, "chmod", lambda path, mode: changed.append(path))
    wrap.prepare(confinement)  # the next instance of a version: a big environment is not walked
    assert changed == []


def test_prepare_does_nothing_when_the_server_is_not_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = _home(tmp_path)
    env = home / "envs" / "e-1" / "bin"
    env.mkdir(parents=True)
    (env / "python").write_text("")
    (env / "python").chmod(0o700)
    chowned: list[str] = []
    monkeypatch.setattr(os, "chown", lambda path, *a, **k: chowned.append(path))
    wrap = Bubblewrap(_settings(home), "/usr/bin/bwrap", as_root=False)
    wrap.prepare(Confinement(workdir=_copy(home), owner="m-1", programs=(str(env / "python"),)))
    assert chowned == []
    assert stat.S_IMODE((env / "python").stat().st_mode) == 0o700


# -- opening one: the probe starts a real sandbox ---------------------------------------------


def test_isolation_none_is_unconfined_and_says_so(tmp_path: Path) -> None:
    opened = open_sandbox(_settings(tmp_path, isolation="none"))
    assert isinstance(opened, Unconfined)
    assert opened.status.reason == ("Sandboxing is turned off (isolation = none). " + NOT_ISOLATED)


def test_auto_and_sandbox_open_bubblewrap_where_a_real_sandbox_starts(tmp_path: Path) -> None:
    for mode in ("auto", "sandbox"):
        opened = open_sandbox(_settings(tmp_path, isolation=mode))
        assert isinstance(opened, Bubblewrap), mode
        assert opened.bwrap.endswith("/bwrap")
        assert os.access(opened.bwrap, os.X_OK)
        assert opened.as_root is (os.geteuid() == 0)
        assert opened.status.isolated


def _fake_bwrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str | None) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if script is not None:
        (bin_dir / "bwrap").write_text(script)
        (bin_dir / "bwrap").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


def test_without_bubblewrap_sandbox_refuses_to_start_and_auto_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_bwrap(tmp_path, monkeypatch, None)
    with pytest.raises(errors.InvalidSetting) as refused:
        open_sandbox(_settings(tmp_path, isolation="sandbox"))
    assert refused.value.message == (
        "isolation = sandbox, but no sandbox works here: bubblewrap (bwrap) is not installed. "
        + INSTALL
    )
    opened = open_sandbox(_settings(tmp_path, isolation="auto"))
    assert isinstance(opened, Unconfined)
    assert (
        opened.status.reason == "No sandbox: bubblewrap (bwrap) is not installed. " + NOT_ISOLATED
    )


def test_a_bwrap_that_fails_is_reported_with_the_last_line_it_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_bwrap(
        tmp_path,
        monkeypatch,
        "#!/bin/sh\necho 'bwrap: starting' >&2\nprintf 'bwrap: \\377\\n' >&2\n"
        "echo 'bwrap: No permissions to creating new namespace' >&2\nexit 1\n",
    )
    opened = open_sandbox(_settings(tmp_path, isolation="auto"))
    assert isinstance(opened, Unconfined)
    assert opened.status.reason == (
        "No sandbox: bwrap failed (bwrap: No permissions to creating new namespace). "
        + NOT_ISOLATED
    )


def test_a_bwrap_that_says_bytes_that_are_not_utf_8_is_reported_all_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_bwrap(tmp_path, monkeypatch, "#!/bin/sh\nprintf 'bwrap: caf\\351\\n' >&2\nexit 1\n")
    opened = open_sandbox(_settings(tmp_path, isolation="auto"))
    assert isinstance(opened, Unconfined)
    assert opened.status.reason.startswith("No sandbox: bwrap failed (bwrap: caf\ufffd).")


def test_a_bwrap_that_fails_silently_is_reported_with_its_exit_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_bwrap(tmp_path, monkeypatch, "#!/bin/sh\nexit 3\n")
    with pytest.raises(errors.InvalidSetting, match=r"bwrap failed \(exit code 3\)\. Install"):
        open_sandbox(_settings(tmp_path, isolation="sandbox"))


def test_a_bwrap_that_cannot_be_executed_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_bwrap(tmp_path, monkeypatch, "#!/no/such/interpreter\n")
    with pytest.raises(
        errors.InvalidSetting, match=r"no sandbox works here: bwrap could not be run \("
    ):
        open_sandbox(_settings(tmp_path, isolation="sandbox"))


def test_the_probe_runs_a_program_in_a_real_sandbox_with_stdin_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = tmp_path / "seen"
    _fake_bwrap(
        tmp_path,
        monkeypatch,
        f'#!/bin/sh\nprintf "%s\\n" "$@" > {seen}\nread line && echo stdin >> {seen}\nexit 0\n',
    )
    opened = open_sandbox(_settings(tmp_path, isolation="sandbox"))
    assert isinstance(opened, Bubblewrap)
    said = seen.read_text().splitlines()
    assert said[-3:] == ["/bin/sh", "-c", "exit 0"]
    assert "--unshare-pid" in said
    assert "stdin" not in said


def test_a_missing_util_linux_helper_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_bwrap(tmp_path, monkeypatch, "#!/bin/sh\nexit 0\n")
    monkeypatch.setattr(sandbox, "_PRLIMIT", str(tmp_path / "gone" / "prlimit"))
    with pytest.raises(errors.InvalidSetting) as refused:
        open_sandbox(_settings(tmp_path, isolation="sandbox"))
    assert f"no sandbox works here: {tmp_path}/gone/prlimit (util-linux) is missing." in (
        refused.value.message
    )


def test_as_root_a_missing_setpriv_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_bwrap(tmp_path, monkeypatch, "#!/bin/sh\nexit 0\n")
    monkeypatch.setattr(sandbox, "_SETPRIV", str(tmp_path / "gone" / "setpriv"))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with pytest.raises(errors.InvalidSetting, match=r"gone/setpriv \(util-linux\) is missing\."):
        open_sandbox(_settings(tmp_path, isolation="sandbox"))


def test_a_server_that_is_not_root_needs_no_setpriv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_bwrap(tmp_path, monkeypatch, "#!/bin/sh\nexit 0\n")
    monkeypatch.setattr(sandbox, "_SETPRIV", str(tmp_path / "gone" / "setpriv"))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    opened = open_sandbox(_settings(tmp_path, isolation="sandbox"))
    assert isinstance(opened, Bubblewrap)
    assert not opened.as_root


@pytest.mark.parametrize("euid", [0, 1000])
def test_the_probe_runs_the_command_instances_get_as_root_or_not_with_stdin_closed_and_a_time_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, euid: int
) -> None:
    _fake_bwrap(tmp_path, monkeypatch, "#!/bin/sh\nexit 0\n")
    monkeypatch.setattr(os, "geteuid", lambda: euid)
    runs: list[tuple[list[str], dict[str, Any]]] = []
    real_run = subprocess.run

    def run(argv: list[str], **kwargs: Any) -> Any:
        runs.append((argv, kwargs))
        return real_run(argv, **kwargs)

    monkeypatch.setattr(subprocess, "run", run)
    opened = open_sandbox(_settings(tmp_path, isolation="sandbox"))
    assert isinstance(opened, Bubblewrap)
    ((argv, kwargs),) = runs
    probe = read(argv)
    assert probe.inner[-3:] == ["/bin/sh", "-c", "exit 0"]
    assert ("--unshare-user" in probe.flags) is (euid != 0)
    assert (probe.inner[0] == sandbox._SETPRIV) is (euid == 0)
    assert probe.value("--chdir") == "/"
    assert kwargs["stdin"] == subprocess.DEVNULL
    assert 0 < kwargs["timeout"] <= 60  # no probe hangs the start-up
    assert kwargs["capture_output"] is True


def test_the_probe_result_is_kept_for_the_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = _fake_bwrap(tmp_path, monkeypatch, "#!/bin/sh\nexit 0\n")
    assert isinstance(open_sandbox(_settings(tmp_path, isolation="sandbox")), Bubblewrap)
    (bin_dir / "bwrap").write_text("#!/bin/sh\nexit 1\n")
    assert isinstance(open_sandbox(_settings(tmp_path, isolation="sandbox")), Bubblewrap)
    # but another bwrap (the PATH changed) is probed anew
    (tmp_path / "other").mkdir()
    _fake_bwrap(tmp_path / "other", monkeypatch, None)
    assert isinstance(open_sandbox(_settings(tmp_path, isolation="auto")), Unconfined)


# -- real sandboxes ---------------------------------------------------------------------------


def _real(tmp_path: Path, **confined: Any) -> tuple[list[str], Confinement]:
    home = _home(tmp_path)
    opened = open_sandbox(_settings(home, isolation="sandbox"))
    assert isinstance(opened, Bubblewrap)
    confinement = Confinement(workdir=_copy(home), owner="m-1", **confined)
    opened.prepare(confinement)
    script = (
        f"cat {home}/server.key; echo cat=$?; touch {confinement.workdir}/w; echo touch=$?; "
        "touch /tmp/t; echo tmp=$?; echo home=$HOME; pwd"
    )
    return opened.command(["/bin/sh", "-c", script], confinement), confinement


def test_in_a_real_sandbox_the_data_directory_is_empty_the_copy_read_only_and_tmp_private(
    tmp_path: Path,
) -> None:
    argv, confinement = _real(tmp_path)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "secret" not in done.stdout  # server.key's text
    assert "cat=1" in lines
    assert "touch=1" in lines
    assert "tmp=0" in lines
    assert lines[-2:] == ["home=/tmp", str(confinement.workdir)]


def test_innermost_pid_finds_the_code_below_bubblewrap(tmp_path: Path) -> None:
    assert sandbox.innermost_pid(os.getpid()) == os.getpid()
    home = _home(tmp_path)
    opened = open_sandbox(_settings(home, isolation="sandbox"))
    confinement = Confinement(workdir=_copy(home), owner="m-1")
    opened.prepare(confinement)
    process = subprocess.Popen(opened.command(["/bin/sleep", "60"], confinement))
    try:

        def sleeping() -> int | None:
            inner = sandbox.innermost_pid(process.pid)
            running = inner is not None and os.readlink(f"/proc/{inner}/exe")
            return inner if running and running.endswith("/sleep") else None

        inner = wait_until(sleeping, timeout=10, interval=0.01)
        assert inner != process.pid
    finally:
        process.kill()
        process.wait()
    assert sandbox.innermost_pid(process.pid) is None  # gone
