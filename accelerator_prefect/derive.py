"""Deriving a jobflow's parameter schema in a process of its own, holding no credentials.

Publishing needs the JSON Schema Prefect derives from a jobflow's signature, and
deriving it means importing the author's module, which runs whatever it runs at
import. Code that reaches the platform through the portal is not trusted with
the platform, so :func:`derive_schema` imports it in a child Python
(``python -m accelerator_prefect.derive``) that:

- gets an environment of its own, not the portal's: ``PATH``, a throwaway
  ``HOME``, ``TMPDIR`` and ``PREFECT_HOME``, and the few settings Python and
  Prefect need to start quietly. No Prefect API URL or auth string, no
  ``ACC_*`` setting or token, no storage or cloud credentials;
- runs in the code's folder, in a session of its own (so that whatever it
  starts is stopped with it), with nothing on stdin;
- answers one JSON document (the flow's name and schema, or what went wrong)
  on a descriptor of its own: whatever the author's code prints goes to stderr,
  which is read and dropped;
- is stopped after ``timeout`` seconds, or once it has answered more than
  :data:`MAX_ANSWER_BYTES`; at most :data:`CONCURRENT_IMPORTS` run at once.

What the author's code raised comes back as a :class:`~accelerator_prefect.ManifestError`
naming the exception and where in the author's files it was raised, never a
traceback or a path of the server.

The child runs as the same operating-system user as the caller: it holds none of
the credentials the caller has in its environment, but it can read what that user
can read on disk. Where the portal's machine keeps secrets in files, run the portal
as a user that cannot read them, or in a container.

Example:
    >>> derived = asyncio.run(derive_schema(Path("."), "flows/echo.py:echo"))  # doctest: +SKIP
    >>> derived.name, sorted(derived.schema["properties"])  # doctest: +SKIP
    ('echo', ['conf'])
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import traceback
import weakref
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from accelerator_prefect.errors import ManifestError

SCHEMA_TIMEOUT = 120.0  # seconds an import may take
# Imports one process runs at once; more wait their turn. Each child is a Python importing
# Prefect (2-10 s of a core on a 2-core machine), so a burst of publishes must not start
# one each.
CONCURRENT_IMPORTS = 2
MAX_ANSWER_BYTES = 4 << 20  # a parameter schema is a few kB
MAX_NOTE_BYTES = 8 << 10  # the last bytes of stderr kept, for a child that dies unanswered
_READ = 64 << 10


@dataclass(frozen=True)
class DerivedFlow:
    """What importing a jobflow told: the flow's name and its parameter schema."""

    name: str
    schema: dict[str, Any]


def isolated_env(scratch: Path, *, own_runtime: bool = True) -> dict[str, str]:
    """The whole environment of the child: nothing of the caller's but ``PATH``.

    ``PYTHONPATH`` names where this package is, so the child imports the same
    ``accelerator_prefect`` the caller runs (``own_runtime``), unless the child runs in a
    version's environment, which has the runtime it locked.
    """
    package = Path(__file__).resolve().parent.parent
    for name in ("home", "tmp", "prefect"):
        (scratch / name).mkdir(parents=True, exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(scratch / "home"),
        "TMPDIR": str(scratch / "tmp"),
        "LANG": "C.UTF-8",
        **({"PYTHONPATH": str(package)} if own_runtime else {}),
        "PYTHONIOENCODING": "utf-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "PREFECT_HOME": str(scratch / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "DO_NOT_TRACK": "1",
    }


def _entry_inside(code: Path, jobflow: str, label: str) -> str:
    """The jobflow's file, relative to ``code``, if it is a file inside it."""
    path, _, function = jobflow.rpartition(":")
    relative = PurePosixPath(path)
    if relative.is_absolute() or ".." in relative.parts or "\\" in path:
        raise ManifestError(
            f"{label}: jobflow: {path} must be a path inside the repository, relative to its root"
        )
    entry = code / relative
    root = code.resolve()
    resolved = entry.resolve()
    if resolved != root and not resolved.is_relative_to(root):
        raise ManifestError(f"{label}: jobflow: {path} leads outside the repository")
    if not entry.is_file():
        raise ManifestError(f"{label}: jobflow: {path} does not exist")
    return f"{relative}:{function}"


async def derive_schema(
    code: Path,
    jobflow: str,
    *,
    timeout: float = SCHEMA_TIMEOUT,
    label: str = "manifest",
    python: Path | None = None,
) -> DerivedFlow:
    """Import ``jobflow`` (``path/to/file.py:function``, relative to ``code``) in a child
    Python holding no credentials, and return the flow's name and parameter schema.

    ``python``: the interpreter of the version's environment (its libraries and runtime);
    this process's own when ``None``.

    Raises :class:`~accelerator_prefect.ManifestError` when the file is missing, the
    import raises, the function is not a ``@jobflow``, or the import outlasts ``timeout``.
    """
    entrypoint = _entry_inside(code, jobflow, label)
    scratch = Path(tempfile.mkdtemp(prefix="acc-derive-"))
    try:
        async with _turn():
            env = isolated_env(scratch, own_runtime=python is None)
            answer, note, exit_code = await _run_child(
                code, entrypoint, env, timeout, str(python or sys.executable)
            )
    except TimeoutError:
        raise ManifestError(
            f"{label}: jobflow: importing {jobflow} took longer than {timeout:g} s; "
            "a jobflow's module should only define things at import, and work when it runs"
        ) from None
    except _TooLong:
        raise ManifestError(
            f"{label}: jobflow: importing {jobflow} answered more than {MAX_ANSWER_BYTES:,} bytes"
        ) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    hide = _hider(code, scratch)
    try:
        found = json.loads(answer) if answer else None
    except ValueError:
        found = None
    if not isinstance(found, dict):
        last = hide(note.decode(errors="replace").strip().splitlines()[-1:] or [""])[0]
        raise ManifestError(
            f"{label}: jobflow: importing {jobflow} ended its process (exit code {exit_code}) "
            f"before the jobflow was found{': ' + last if last else ''}"
        )
    if "error" in found:
        raise ManifestError(f"{label}: jobflow: cannot load {jobflow}: {hide([found['error']])[0]}")
    name, schema = found.get("name"), found.get("schema")
    if not isinstance(name, str) or not isinstance(schema, dict):
        raise ManifestError(f"{label}: jobflow: importing {jobflow} gave no parameter schema")
    return DerivedFlow(name, schema)


_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def _turn() -> asyncio.Semaphore:
    """The running loop's share of :data:`CONCURRENT_IMPORTS`."""
    loop = asyncio.get_running_loop()
    if loop not in _turns:
        _turns[loop] = asyncio.Semaphore(CONCURRENT_IMPORTS)
    return _turns[loop]


def _hider(*folders: Path) -> Any:
    """Messages without the server's folders in them."""
    spelled = sorted(
        {str(f) for f in folders} | {str(f.resolve()) for f in folders}, key=len, reverse=True
    )

    def hide(lines: list[str]) -> list[str]:
        out = []
        for line in lines:
            for folder in spelled:
                line = line.replace(folder + os.sep, "").replace(folder, ".")
            out.append(line)
        return out

    return hide


class _TooLong(Exception):
    pass


async def _run_child(
    code: Path, entrypoint: str, env: dict[str, str], timeout: float, python: str
) -> tuple[bytes, bytes, int | None]:
    """Run the child; its answer, the tail of its stderr and its exit code."""
    process = await asyncio.create_subprocess_exec(
        python,
        "-P",  # the code's folder is not where `accelerator_prefect` is looked for
        "-m",
        "accelerator_prefect.derive",
        entrypoint,
        cwd=code,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        async with asyncio.timeout(timeout):
            answer, note = await asyncio.gather(
                _read(process.stdout, MAX_ANSWER_BYTES, refuse=True),
                _read(process.stderr, MAX_NOTE_BYTES, refuse=False),
            )
            await process.wait()
    except BaseException:
        _stop(process.pid)
        with contextlib.suppress(ProcessLookupError):
            await process.wait()
        raise
    return answer, note, process.returncode


async def _read(stream: asyncio.StreamReader, limit: int, *, refuse: bool) -> bytes:
    """Everything ``stream`` says; past ``limit``: refused, or only its last bytes kept."""
    kept = b""
    while chunk := await stream.read(_READ):
        kept += chunk
        if len(kept) > limit:
            if refuse:
                raise _TooLong
            kept = kept[-limit:]
    return kept


def _stop(pid: int) -> None:
    """Stop the child's whole session: it and whatever it started."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


# -- the child -------------------------------------------------------------------------------------


def _describe(entrypoint: str) -> dict[str, Any]:
    from prefect.exceptions import MissingFlowError
    from prefect.flows import Flow, load_flow_from_entrypoint
    from prefect.utilities.callables import parameter_schema

    try:
        flow = load_flow_from_entrypoint(entrypoint, use_placeholder_flow=False)
    except MissingFlowError as exc:
        name = entrypoint.rpartition(":")[2]
        if "is not a flow" in str(exc):
            return {"error": f"{name} is not a @jobflow"}
        return {"error": f"{name} is not defined in {entrypoint.rpartition(':')[0]}"}
    if not isinstance(flow, Flow):
        return {"error": f"{entrypoint} is not a @jobflow"}
    return {"name": flow.name, "schema": parameter_schema(flow).model_dump_for_openapi()}


def _explain(exc: BaseException) -> str:
    """``RuntimeError: no GPU here (flows/echo.py, line 3)``: what the author's code
    raised, and the last place in the author's files it passed through."""
    from prefect.exceptions import ScriptError

    if isinstance(exc, ScriptError):
        exc = exc.user_exc
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, SyntaxError):
        return text
    here = Path.cwd().resolve()
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        try:
            relative = Path(frame.filename).resolve().relative_to(here)
        except ValueError:
            continue
        return f"{text} ({relative}, line {frame.lineno})"
    return text


def main(argv: list[str]) -> int:
    """Import the jobflow ``argv[0]`` and answer its name and schema as JSON on stdout."""
    answer = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # what the author's code prints must not mix with the answer
    try:
        found = _describe(argv[0])
    except BaseException as exc:  # the author's code may raise anything, SystemExit too
        found = {"error": _explain(exc)}
    with answer:
        json.dump(found, answer)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
