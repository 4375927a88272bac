"""``acc://<project>/<path>`` URIs and the one place they are mapped to a backend.

``acc://`` maps onto one configured backing URL (``ACC_STORAGE_URL``): a folder
under the platform home by default, or any fsspec URL. Translation happens in
:func:`resolve`, which refuses any path that could escape its root.
"""

from __future__ import annotations

import re
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import unquote

from accelerator_prefect.errors import AcceleratorError

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

PREFIX = "acc://"
_SEGMENT = re.compile(r"^[A-Za-z0-9_.@+=,-][A-Za-z0-9 _.@+=,()-]*$")


class StoragePathError(AcceleratorError):
    """An acc:// path is malformed or would escape its root."""


def split(uri: str) -> list[str]:
    """The checked path segments of an ``acc://`` URI.

    Example:
        >>> split("acc://climate/results/run.csv")
        ['climate', 'results', 'run.csv']
    """
    if not uri.startswith(PREFIX):
        raise StoragePathError(f"{uri!r}: expected a URI starting with {PREFIX}")
    rest = uri[len(PREFIX) :]
    if "\\" in rest or "%" in rest or unquote(rest) != rest:
        raise StoragePathError(f"{uri!r}: backslashes and percent-encoding are not allowed")
    if rest.startswith("/"):
        raise StoragePathError(f"{uri!r}: expected acc://<project>/<path>, not an absolute path")
    parts = [p for p in rest.split("/") if p]
    if not parts:
        raise StoragePathError(f"{uri!r}: expected acc://<project>/<path>")
    for part in parts:
        if part in {".", ".."} or not _SEGMENT.match(part):
            raise StoragePathError(f"{uri!r}: path segment {part!r} is not allowed")
    return parts


def resolve(uri: str, root: str | None = None) -> tuple[AbstractFileSystem, str]:
    """The filesystem and backend path behind ``uri`` (never outside ``root``)."""
    from fsspec.core import url_to_fs

    from accelerator_prefect.settings import get_settings

    fs, base = url_to_fs(root or get_settings().storage_root)
    return fs, "/".join([base.rstrip("/"), *split(uri)])


def open_uri(uri: str, mode: str = "rb", **kwargs: Any) -> IO[Any]:
    """Open an ``acc://`` URI, creating parent folders when writing."""
    fs, path = resolve(uri)
    if any(c in mode for c in "wax"):
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    return fs.open(path, mode, **kwargs)  # type: ignore[no-any-return]
