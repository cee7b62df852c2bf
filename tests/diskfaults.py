"""Full and read-only disks for CLI tests, without root and without touching the machine.

The CLI runs in a child process that sees the broken disk; everything else (the fake Oomnitza on
loopback, the test's own files) stays normal. Ways, best first:

* full disk: a small tmpfs mounted in a private user + mount namespace (``unshare -Urm``), so the
  kernel answers ENOSPC exactly as on a full disk; else ``RLIMIT_FSIZE`` with SIGXFSZ ignored, so a
  write past the limit fails with EFBIG (the connector then says "file too large").
* read-only disk: a read-only bind mount in such a namespace (EROFS); else, when not root,
  ``chmod 0500`` (EACCES); else a read-only mount the machine already has (``/sys`` in most
  containers). Root ignores file modes, so without namespaces or such a mount the test is skipped.
"""

from __future__ import annotations

import functools
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from .helpers import ROOT, CliResult

# The CLI as ``connector.py`` runs it, minus the program folder's logging.json (no log files).
_CLI = "import sys; from oomnitza_connector.cli import main; sys.exit(main(sys.argv[1:]))"
# Every file the child writes stops at N bytes; SIGXFSZ ignored, so the write fails with EFBIG.
_FSIZE = (
    "import resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
    "resource.setrlimit(resource.RLIMIT_FSIZE, ({size}, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))\n"
)
_NAMESPACE = ["unshare", "--user", "--map-root-user", "--mount"]
_THEN = "--- after the CLI ---"


@dataclass
class Disk:
    """How the child process gets its broken disk, and what the connector should then say."""

    how: str  # tmpfs | fsize | ro-bind | chmod | ro-mount
    says: str  # the part of the error line that names the problem
    folder: Path  # the broken folder: the test puts only what the connector writes there
    mount: str = ""  # shell commands run as root of a new user + mount namespace, before the CLI
    prelude: str = ""  # Python run in the child before the CLI

    def run(self, *argv: str, cwd: Path, timeout: float = 120) -> CliResult:
        return self.run_then(*argv, cwd=cwd, timeout=timeout)[0]

    def run_then(self, *argv: str, cwd: Path, then: str = "", timeout: float = 120) -> tuple[CliResult, str]:
        """Run the CLI, then the shell command ``then`` on the same (broken) disk; its output comes
        back apart (a tmpfs is gone once the child exits, so look at it here)."""
        command = [sys.executable, "-c", self.prelude + _CLI, *argv]
        if self.mount or then:
            # cd "$PWD" again: a working directory under the new mount would still show the old folder.
            script = f'set -e\n{self.mount}\nset +e\ncd "$PWD"\nrc=0; "$@" || rc=$?\necho "{_THEN}"\n{then}\nexit $rc'
            command = [*(_NAMESPACE if self.mount else []), "sh", "-c", script, "sh", *command]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
            "PYTHONDONTWRITEBYTECODE": "1",
            "COLUMNS": "200",
        }
        proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        out, _, after = proc.stdout.partition(_THEN + "\n")
        return CliResult(proc.returncode, out, proc.stderr), after


@functools.cache
def namespaces_work() -> bool:
    """Whether this machine lets us mount a tmpfs in a user namespace (needs no privileges)."""
    if sys.platform != "linux" or shutil.which("unshare") is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        try:
            proc = subprocess.run(
                [*_NAMESPACE, "mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", tmp], capture_output=True, timeout=30
            )
        except (OSError, subprocess.SubprocessError):
            return False
    return proc.returncode == 0


def full_disk(folder: Path, how: str, *, size: int) -> Disk:
    """``folder`` (created here, empty) holds at most about ``size`` bytes for the child process.

    ``how``: "tmpfs" (a real full disk; skipped where namespaces are not allowed) or "fsize"
    (every file the child writes stops at ``size`` bytes; always available on POSIX)."""
    folder.mkdir(parents=True, exist_ok=True)
    if how == "tmpfs":
        if not namespaces_work():
            pytest.skip("no user namespaces here (unshare -Urm refused): the fsize variant tests the same path")
        pages = max(1, size // 4096)
        return Disk("tmpfs", "disk full: ", folder, mount=f"mount -t tmpfs -o size={pages * 4}k tmpfs '{folder}'")
    return Disk("fsize", "file too large", folder, prelude=_FSIZE.format(size=size))


def read_only_dir(tmp_path: Path, request: pytest.FixtureRequest) -> Disk:
    """An empty folder the child process cannot write into (may be a system folder such as /sys:
    the test only names paths inside it, it puts nothing there)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if namespaces_work():
        script = f"mount --bind '{folder}' '{folder}'\nmount -o remount,bind,ro '{folder}'"
        return Disk("ro-bind", "read-only file system", folder, mount=script)
    if os.geteuid() != 0:
        folder.chmod(0o500)
        request.addfinalizer(lambda: folder.chmod(0o700))
        return Disk("chmod", "permission denied", folder)
    for candidate in (Path("/sys"), Path("/proc/sys")):
        if _read_only_mount(candidate):
            return Disk("ro-mount", "read-only file system", candidate)
    pytest.skip(
        "no way to make a read-only folder here: running as root (file modes do not stop root), "
        "user namespaces are not allowed, and no read-only mount exists"
    )


def _read_only_mount(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY) and stat.S_ISDIR(path.stat().st_mode)
    except OSError:
        return False
