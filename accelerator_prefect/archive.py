"""Every output of a run as one zip, made while it is sent ("Download all").

The zip is written to an unseekable stream and handed on in pieces as it grows:
neither the whole zip nor a whole file is ever held in memory, and files are read
in chunks. The run and each file are opened through :class:`~accelerator_prefect.Run`,
so the access layer decides, for the principal the client acts for, exactly as it
does for one file.

Example:
    >>> run = acc.run(run_id)  # doctest: +SKIP
    >>> with open("outputs.zip", "wb") as f:  # doctest: +SKIP
    ...     for piece in outputs_zip(run):
    ...         f.write(piece)
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from accelerator_prefect.outputs import OutputFile
    from accelerator_prefect.runs import Run

CHUNK = 1024 * 1024  # bytes read from a file at a time


class _Pieces(io.RawIOBase):
    """A write-only, unseekable stream keeping what was written until it is taken."""

    def __init__(self) -> None:
        self._pieces: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._pieces.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self._pieces)
        self._pieces.clear()
        return data


def _entry(file: OutputFile, when: datetime) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(file.path, date_time=when.timetuple()[:6])
    info.file_size = file.size  # decides whether the entry needs ZIP64, before it is written
    # Deflated even when already compressed (fast at level 1): a stored entry streamed with
    # its sizes after it is one that some unzip tools cannot read.
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    return info


def outputs_zip(
    run: Run, files: list[OutputFile] | None = None, chunk: int = CHUNK
) -> Iterator[bytes]:
    """The pieces of a zip holding ``files`` (default: every output of ``run``), each
    under its path in the run's output folder, with its bytes as the run wrote them;
    files changed since (altered) are left out."""
    listed = [f for f in (run.outputs() if files is None else files) if not f.altered]
    when = datetime.now(UTC)
    sink = _Pieces()
    with zipfile.ZipFile(sink, "w", compresslevel=1) as archive:
        for file in listed:
            with run.open_output(file.path) as source, archive.open(_entry(file, when), "w") as out:
                while block := source.read(chunk):
                    out.write(block)
                    if piece := sink.take():
                        yield piece
            if piece := sink.take():
                yield piece
    if piece := sink.take():  # the central directory, written on close
        yield piece
