"""The environment and paths of a child process: an instance of a version, or a run.

Both start in the same way: the server variables the ``instance_env_passthrough`` setting lets
through, one BLAS/OpenMP thread, ``HOME`` in their working copy, the model's variables (secret
ones decrypted), then modelhost's own. Composing that once keeps the two from drifting apart.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from modelhost.crypto import ServerKey
from modelhost.db.repo import EnvVar, Model
from modelhost.settings import Settings

#: One BLAS/OpenMP thread per child: instances, not threads, are how a model scales, and a
#: run shares the machine with them.
THREAD_CAPS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class Children:
    """Builds a child process's environment and knows where its files go.

    >>> children = Children(settings, key)
    >>> env = children.env(home=children.instance_workdir(version.id), model=model, env_vars=[])
    """

    def __init__(
        self, settings: Settings, key: ServerKey, environ: Mapping[str, str] | None = None
    ) -> None:
        self.settings = settings
        self.key = key
        self._environ = os.environ if environ is None else environ

    # ------------------------------------------------------------------ paths

    def instance_workdir(self, version_id: str) -> Path:
        """The extracted bundle a version's instances run in (shared by its instances)."""
        return self.settings.home_path / "work" / version_id

    def log_dir(self, model_id: str) -> Path:
        """Where a model's instance logs go."""
        return self.settings.home_path / "logs" / model_id

    def run_dir(self, run_id: str) -> Path:
        """A run's directory: its working copy (``work``) and its log."""
        return self.settings.home_path / "runs" / run_id

    # ------------------------------------------------------------------ environment

    def env(
        self,
        *,
        home: Path,
        model: Model | None,
        env_vars: Iterable[EnvVar],
        ours: Mapping[str, str] = {},
        path_prefix: str | None = None,
    ) -> dict[str, str]:
        """The child's environment, in order of precedence (later wins): passed-through server
        variables and the thread caps (defaults), ``HOME``, the model's variables, then
        modelhost's (``ours`` last). ``path_prefix`` goes in front of ``PATH``, as if the
        child's own environment were activated."""
        environ = self._environ
        passthrough = self.settings.instance_env_passthrough
        env = {k: environ[k] for k in passthrough if k in environ}
        env.setdefault("PATH", os.defpath)
        for name in THREAD_CAPS:
            env.setdefault(name, "1")
        env["HOME"] = str(home)
        for var in env_vars:
            env[var.name] = self.key.decrypt(var.value) if var.secret else var.value
        if path_prefix:
            env["PATH"] = f"{path_prefix}{os.pathsep}{env['PATH']}"
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        # the project folder, as DOMINO_WORKING_DIR is on the hosted product (HOME is /tmp in
        # a sandbox, where the copy is read-only)
        env["MODELHOST_WORKING_DIR"] = str(home)
        if model is not None:
            env["MODELHOST_MODEL_ID"] = model.id
            env["MODELHOST_MODEL_NAME"] = model.name
        env.update(ours)
        return env
