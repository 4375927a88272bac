"""Keep a run's process out of the platform's home, with Linux's Landlock.

A warm worker's child runs an author's code as the worker's own user. Before the run
starts, the child restricts itself (irrevocably, it and anything it starts) so that,
inside the platform's home, it reaches only what a run needs: the code cache, the
environments and the DVC remote to read (what a run wrote there would run in other
runs: each version's checkout, each lock's libraries), the local storage and result
folders to write (the warm worker's child narrows both to the run's own in further
layers). The operator's token, the Prefect API's auth string, the Prefect server's
database and the logs are out of its reach; everything outside the home is as before.

Landlock (Linux 5.13 and later, when the kernel enables it) needs no privilege. Where it
is missing, :class:`Unavailable` says why and the run goes on unconfined: the platform
then trusts its authors, as ``acc up`` says at start.
"""

from __future__ import annotations

import ctypes
import functools
import os
import stat
from collections.abc import Iterable
from pathlib import Path

# Syscall numbers (the same on x86_64 and aarch64) and Landlock's ABI constants.
_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38
_O_PATH = 0o10000000

# What a rule may allow: on a file, these; on a folder, every right up to TRUNCATE.
_FILE_RIGHTS = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 14)  # execute, write, read, truncate
_RIGHTS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1}  # ABI 2 adds REFER, 3 TRUNCATE
_ALL_RIGHTS = (1 << 15) - 1

RUN_NEEDS = ("code", "environments", "storage", "results", "dvc-remote")
"""The folders of the platform's home a run reaches (the others, and every file directly
in the home, are out of its reach)."""
RUN_READS = ("code", "environments", "dvc-remote")
"""Of :data:`RUN_NEEDS`, the folders a run reads and never writes: the code cache (the
checkout is made before the run confines itself), the environments (the worker builds
them) and the DVC remote (the checkout reads it)."""

READ_ONLY = (1 << 0) | (1 << 2) | (1 << 3)  # execute, read a file, read a folder


def asked() -> bool:
    """Whether warm runs are to be confined: unless ``ACC_WARM_CONFINE`` says false."""
    return os.environ.get("ACC_WARM_CONFINE", "true").strip().lower() not in ("0", "false", "no")


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


@functools.cache
def abi() -> int:
    """The kernel's Landlock ABI version; 0 where Landlock is not available."""
    version = _libc().syscall(_CREATE_RULESET, None, ctypes.c_size_t(0), _CREATE_RULESET_VERSION)
    return max(int(version), 0)


def _handled() -> int:
    """Every right this kernel's Landlock knows: what a ruleset handles, and a rule allows
    unless told otherwise."""
    return _RIGHTS_BY_ABI.get(abi(), _ALL_RIGHTS)


class Unavailable(Exception):
    """Why this process cannot be confined (nothing was restricted)."""


def _failed(what: str) -> Unavailable:
    return Unavailable(f"{what} ({os.strerror(ctypes.get_errno())})")


def new_ruleset() -> int:
    """An empty ruleset handling every right this kernel knows (nothing allowed yet)."""
    if abi() < 1:
        raise Unavailable("this kernel offers no Landlock")
    attr = _RulesetAttr(_handled())
    fd = int(_libc().syscall(_CREATE_RULESET, ctypes.byref(attr), ctypes.sizeof(attr), 0))
    if fd < 0:
        raise _failed("Landlock refused a ruleset")
    return fd


def ruleset(home: Path, needs: Iterable[str] = RUN_NEEDS, reads: Iterable[str] = RUN_READS) -> int:
    """A Landlock ruleset (its file descriptor) allowing everything but ``home``, and in
    ``home`` the folders ``needs`` names (those ``reads`` names to read only). Made once,
    in the warm parent: each child restricts itself with it (:func:`restrict`), for
    nothing more than two system calls.

    Raises :class:`Unavailable` where Landlock is not."""
    home = home.resolve()
    if home == Path("/"):
        raise Unavailable("the platform's home is the root folder")
    fd = new_ruleset()
    for path in _around(home):
        allow(fd, path, follow=False)
    read_only = set(reads)
    for name in needs:
        if (home / name).is_dir():
            allow(fd, (home / name).resolve(), rights=READ_ONLY if name in read_only else None)
    return fd


def open_around(folder: Path) -> list[int]:
    """Handles (``O_PATH``) on every entry beside the way from the root down to
    ``folder``, opened once so that a ruleset keeping everything but ``folder`` is made
    from them again and again without looking a path up (:func:`allow_opened`)."""
    opened = []
    for path in _around(folder.resolve()):
        try:
            opened.append(os.open(path, _O_PATH | os.O_CLOEXEC | os.O_NOFOLLOW))
        except OSError:
            continue
    return opened


def allow_opened(fd: int, target: int, rights: int | None = None) -> None:
    """Add to the ruleset ``fd``: ``rights`` (all) beneath the opened ``target``."""
    rights = _handled() if rights is None else rights
    folder = stat.S_ISDIR(os.fstat(target).st_mode)
    rule = _PathBeneathAttr(rights if folder else rights & _FILE_RIGHTS, target)
    _libc().syscall(_ADD_RULE, fd, _RULE_PATH_BENEATH, ctypes.byref(rule), 0)


def restrict(fd: int) -> None:
    """Restrict this process (and whatever it starts) to the ruleset ``fd``, for good."""
    if _libc().prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise _failed("no_new_privs refused")
    if _libc().syscall(_RESTRICT_SELF, fd, 0) != 0:
        raise _failed("Landlock refused to restrict")


def _around(home: Path) -> list[Path]:
    """Every entry beside each folder on the way from the root down to ``home`` (and
    beside ``home`` itself): what stays reachable. The folders on the way are not
    allowed whole, or the home would be reachable through them."""
    around = []
    for folder in reversed(home.parents):
        on_the_way = home.parts[len(folder.parts)]
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        around += [folder / name for name in names if name != on_the_way]
    return around


def allow(fd: int, path: Path, *, follow: bool = True, rights: int | None = None) -> None:
    """Add to the ruleset ``fd``: ``rights`` (all that it handles) beneath ``path``.

    An entry beside the way to the home is taken as it is (``follow`` false): a symbolic
    link there allows the link, never its target, so a link into the home opens nothing."""
    flags = _O_PATH | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        target = os.open(path, flags)
    except OSError:
        return  # gone since it was listed
    try:
        allow_opened(fd, target, rights)
    finally:
        os.close(target)
