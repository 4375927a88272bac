"""``acc://`` storage as a warm run reaches it on an object store: through the worker's
run-scoped proxy, never with the storage's keys.

The worker keeps the keys. A child on an object store gets ``ACC_STORAGE_URL=accrun://``
and, as ``ACC_STORAGE_OPTIONS``, the proxy's address and its run's token: this module's
:class:`RunStoreFileSystem` (fsspec's protocol ``accrun``) turns each storage call into a
request to the proxy, which reads the run's inputs and its output folder, writes only
its output folder, and refuses the rest (:meth:`StorageScope.check`).

The requests, under ``/storage`` (each with the run's token, as the API's):

- ``GET info?path=``, ``GET ls?path=``: an entry, a folder's entries (``name``,
  ``size``, ``type``, ``mtime``);
- ``GET link?path=``: a URL the store signed for reading that one object for ten minutes,
  where it signs them (S3): the run reads from the store itself, at its speed;
- ``GET read?path=&start=&end=``: bytes of a file, where it does not;
- ``POST uploads?path=``: a new upload, ``{"id": …}``; ``PUT uploads/<id>``: the next
  part; ``POST uploads/<id>/commit``: the file appears, whole; ``DELETE uploads/<id>``:
  nothing appears;
- ``DELETE file?path=``: remove a file of the output folder;
- ``POST copy?source=&target=``: copy a readable file into the output folder.
"""

from __future__ import annotations

import base64
import contextlib
from dataclasses import dataclass
from typing import Any

from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from accelerator_prefect.storage import RUN_ID
from accelerator_prefect.storage import RUNSTORE as PROTOCOL

_REQUEST_BYTES = 32 << 20
"""The most one upload request carries: the proxy refuses a body over 64 MiB."""
_READ_BLOCK = 32 << 20  # a read of a signed link: one request to the store per block
_WRITE_BLOCK = 8 << 20  # a part sent to the proxy, which writes it on while the next comes
_LINK_KEPT = 300.0  # seconds a signed link is used (the proxy signs them for ten minutes)


@dataclass(frozen=True)
class StorageScope:
    """What one run may reach in storage: its ``acc://`` inputs, to read, and its output
    folder, to read and write (both as paths below the root, without ``acc://``)."""

    readable: tuple[str, ...]
    output: str | None

    @classmethod
    def of(cls, flow_run: Any) -> StorageScope:
        from accelerator_prefect.outputs import run_folder
        from accelerator_prefect.storage import PREFIX, StoragePathError, check_path

        parameters = flow_run.parameters or {}
        inputs = parameters.get("inputs") or {}
        readable = []
        for key in ("selected_files", "selected_folders"):
            for uri in inputs.get(key) or [] if isinstance(inputs, dict) else []:
                if isinstance(uri, str) and uri.startswith(PREFIX):
                    try:
                        readable.append(check_path(uri))
                    except StoragePathError:
                        continue
        folder = run_folder(parameters, flow_run.id)
        output = None
        if folder is not None and folder.startswith(PREFIX):
            try:
                output = check_path(folder) or None
            except StoragePathError:
                output = None
        return cls(tuple(readable), output)

    def allows(self, path: str) -> bool:
        """Whether the run may read ``path`` (a listing shows only such entries)."""
        try:
            self.check(path)
        except (PermissionError, ValueError):
            return False
        return True

    def check(self, path: str, *, write: bool = False) -> str:
        """``path`` (checked, below the root) if the run may reach it; else ``PermissionError``.

        Never another run's folder below a granted one (a folder named by a run id): an
        input folder or an output folder above other runs' opens none of them."""
        from accelerator_prefect.storage import check_path

        relative = check_path(path)
        granted = [self.output] if self.output is not None else []
        if not write:
            granted += self.readable
        for folder in granted:
            if relative == folder and write:
                break  # the output folder itself is no file to write
            if _inside(relative, folder):
                below = relative[len(folder) + 1 :].split("/")
                if not any(RUN_ID.fullmatch(part) for part in below):
                    return relative
        what = "write to" if write else "read"
        raise PermissionError(
            f"acc://{relative}: a run may {what} "
            + ("its output folder only" if write else "its inputs and its output folder only")
        )


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder + "/")


class RunStoreFileSystem(AbstractFileSystem):  # type: ignore[misc]
    """The client side, in the run's process (see the module)."""

    protocol = PROTOCOL
    root_marker = ""
    cachable = False

    def __init__(self, url: str, token: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        import httpx

        basic = base64.b64encode(token.encode()).decode()
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Basic {basic}"},
            timeout=httpx.Timeout(300.0, connect=10.0),
        )
        # For the store itself, with signed links: never with the proxy's token.
        self._store = httpx.Client(timeout=httpx.Timeout(300.0, connect=10.0))

    @classmethod
    def _strip_protocol(cls, path: Any) -> str:
        text = "" if path is None else str(path)
        if text.startswith(f"{PROTOCOL}://"):
            text = text[len(PROTOCOL) + 3 :]
        return text.strip("/")

    # -- requests --------------------------------------------------------------------------

    def _call(self, method: str, route: str, **kwargs: Any) -> Any:
        answer = self._http.request(method, f"/{route}", **kwargs)
        if answer.status_code < 300:
            return answer
        try:
            detail = str(answer.json().get("detail") or answer.text)
        except ValueError:
            detail = answer.text
        path = (kwargs.get("params") or {}).get("path", "")
        if answer.status_code == 404:
            raise FileNotFoundError(2, "No such file or directory", f"acc://{path}")
        if answer.status_code in (401, 403):
            raise PermissionError(detail)
        if answer.status_code == 409:
            raise FileExistsError(detail)
        raise OSError(f"storage: {detail}")

    def _entry(self, found: dict[str, Any]) -> dict[str, Any]:
        return {**found, "name": str(found["name"])}

    # -- fsspec ----------------------------------------------------------------------------

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> Any:
        path = self._strip_protocol(path)
        entries = [self._entry(e) for e in self._call("GET", "ls", params={"path": path}).json()]
        return entries if detail else [e["name"] for e in entries]

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        path = self._strip_protocol(path)
        return self._entry(self._call("GET", "info", params={"path": path}).json())

    def modified(self, path: str) -> Any:
        import datetime

        mtime = self.info(path).get("mtime")
        return None if mtime is None else datetime.datetime.fromtimestamp(mtime, datetime.UTC)

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        """Folders are implied by the files in them, as on any object store."""

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        """As :meth:`mkdir`."""

    def rmdir(self, path: str) -> None:
        """As :meth:`mkdir`."""

    def rm_file(self, path: str) -> None:
        self._call("DELETE", "file", params={"path": self._strip_protocol(path)})

    def _rm(self, path: str) -> None:
        self.rm_file(path)

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        params = {"source": self._strip_protocol(path1), "target": self._strip_protocol(path2)}
        self._call("POST", "copy", params=params)

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | None = None,
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> RunStoreFile:
        if mode not in ("rb", "wb"):
            raise ValueError(f"{path}: a run's storage opens files as 'rb' or 'wb' only")
        return RunStoreFile(
            self,
            self._strip_protocol(path),
            mode,
            block_size=block_size or (_READ_BLOCK if mode == "rb" else _WRITE_BLOCK),
            autocommit=autocommit,
            cache_options=cache_options,
            **kwargs,
        )


class RunStoreFile(AbstractBufferedFile):  # type: ignore[misc]
    """A file read in ranges, or written in parts that appear together on commit."""

    fs: RunStoreFileSystem

    upload: str | None = None

    link: str | None = None
    linked_at = 0.0
    unsigned = False  # the store signs no links: read through the proxy

    def _fetch_range(self, start: int, end: int) -> bytes:
        """Straight from the store with a URL the proxy signed for this one object, where
        the store signs them (S3); else through the proxy, 32 MiB a request at most."""
        if end <= start:
            return b""
        signed = None if self.unsigned else self._signed_range(start, end)
        if signed is not None:
            return signed
        pieces = []
        for at in range(start, end, _REQUEST_BYTES):
            params = {"path": self.path, "start": at, "end": min(end, at + _REQUEST_BYTES)}
            pieces.append(self.fs._call("GET", "read", params=params).content)
        return b"".join(pieces)

    def _signed_range(self, start: int, end: int) -> bytes | None:
        import time

        for _ in range(2):  # once more with a fresh link if the one held has run out
            if self.link is None or time.monotonic() - self.linked_at > _LINK_KEPT:
                try:
                    found = self.fs._call("GET", "link", params={"path": self.path}).json()
                except FileNotFoundError:
                    self.unsigned = True
                    return None
                self.link, self.linked_at = str(found["url"]), time.monotonic()
            answer = self.fs._store.get(self.link, headers={"Range": f"bytes={start}-{end - 1}"})
            if answer.status_code in (200, 206):
                data = answer.content
                return data if answer.status_code == 206 else data[start:end]
            self.link = None
        return None

    def _initiate_upload(self) -> None:
        answer = self.fs._call("POST", "uploads", params={"path": self.path})
        self.upload = str(answer.json()["id"])

    def _upload_chunk(self, final: bool = False) -> bool:
        assert self.upload is not None
        part = self.buffer.getbuffer()
        try:
            for at in range(0, len(part), _REQUEST_BYTES):  # a large write: several requests
                piece = bytes(part[at : at + _REQUEST_BYTES])
                self.fs._call("PUT", f"uploads/{self.upload}", content=piece)
        finally:
            part.release()
        if final:
            self.fs._call("POST", f"uploads/{self.upload}/commit")
            self.upload = None
        return True

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        closed: bool = getattr(self, "_closed", True)  # what fsspec's ``closed`` reads
        if exc_type is not None and self.mode == "wb" and not closed:
            self.discard()  # an error mid-write publishes nothing
            self._closed = True
            return
        self.close()

    def discard(self) -> None:
        if self.upload is not None:
            upload, self.upload = self.upload, None
            # (If this fails, the proxy drops what the run left open when the run ends.)
            with contextlib.suppress(OSError):
                self.fs._call("DELETE", f"uploads/{upload}")
