"""Owner-only places for secrets: key stores, raw detection data of key runs, authentication keys.

Every such file is created 0600 inside a directory that is 0700 (created so, or tightened if it existed),
so no other local user can list or read them whatever the umask.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

FILE_MODE = stat.S_IRUSR | stat.S_IWUSR  # 0600
DIR_MODE = stat.S_IRWXU  # 0700


def secret_dir(path: str | Path) -> Path:
    """Create ``path`` (and missing parents) and make it 0700. Parents that already exist keep their mode;
    new ones are 0700 too. Returns the path."""
    p = Path(path)
    p.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(p, DIR_MODE)  # mkdir's mode is masked by the umask, and an existing directory keeps its own
    return p


def create_secret_file(path: str | Path, exclusive: bool = False) -> Path:
    """Create (or truncate) ``path`` as an empty 0600 file inside a 0700 directory, before any secret is
    written to it. Raises FileExistsError if ``exclusive`` and the file exists."""
    p = Path(path)
    secret_dir(p.parent)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (os.O_EXCL if exclusive else 0)
    fd = os.open(p, flags, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # a file that existed with wider rights is tightened too
    finally:
        os.close(fd)
    return p


def open_secret_append(path: str | Path) -> int:
    """A file descriptor for appending to the owner-only file ``path`` (created 0600 in a 0700 directory)."""
    p = Path(path)
    secret_dir(p.parent)
    fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    return fd


def write_secret_atomic(path: str | Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` atomically (temporary 0600 file, fsync, rename) in a 0700 directory."""
    p = Path(path)
    secret_dir(p.parent)
    tmp = p.with_name(p.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, p)


def is_private(path: str | Path) -> bool:
    """True if ``path`` is accessible by its owner only (no group or other bits)."""
    return stat.S_IMODE(os.stat(path).st_mode) & (stat.S_IRWXG | stat.S_IRWXO) == 0
