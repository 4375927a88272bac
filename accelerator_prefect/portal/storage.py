"""``/storage``: list, download and upload ``acc://`` files, inside the caller's areas only
(and, to read, the sample inputs of the models they may run), streamed (never held whole
in memory)."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse

from accelerator_prefect.errors import AcceleratorError, NotFound
from accelerator_prefect.portal.deps import Acc
from accelerator_prefect.portal.problems import problem, responses
from accelerator_prefect.portal.runs import file_responses, ranged
from accelerator_prefect.portal.schemas import AreaUsageOut
from accelerator_prefect.storage import Entry, Storage

if TYPE_CHECKING:
    from accelerator_prefect.catalog import HostedVersion

router = APIRouter(tags=["storage"])

Path = Annotated[str, Query(description="An acc:// path.", examples=["acc://users/alice/"])]


async def _storage(acc: Acc, reading: str | None = None) -> Storage:
    """The caller's storage; the path it is ``reading``, if outside their own areas, may be
    a sample of a model they may run (the storage decides, from their project's versions)."""
    principal = await acc.principal()
    versions = await _versions_around(acc, reading) if reading else []
    loop = asyncio.get_running_loop()

    def named_runs(ids: list[str]) -> dict[str, bool]:  # asked from the storage's thread
        return asyncio.run_coroutine_threadsafe(acc.named_runs(ids), loop).result(timeout=60)

    def over_quota(path: str, size: int) -> str | None:
        future = asyncio.run_coroutine_threadsafe(acc.quota_problem(path, size), loop)
        return future.result(timeout=60)

    return Storage(
        acc.storage_fs(),
        principal=principal,
        versions=lambda _project: versions,
        runs=named_runs,
        quotas=over_quota,
    )


async def _versions_around(acc: Acc, path: str) -> list[HostedVersion]:
    """The hosted versions the caller sees in the project ``path`` lies in, read only when
    their own areas do not hold ``path`` (one read a request, on that road only)."""
    from accelerator_prefect.access import may_use_path
    from accelerator_prefect.catalog import read_versions, tag
    from accelerator_prefect.storage import StoragePathError, check_path

    principal = await acc.principal()
    try:
        relative = check_path(path)
    except StoragePathError:
        return []  # the storage refuses it, in its own words
    if not relative or principal.operator or may_use_path(principal, relative):
        return []
    project = [tag("project", relative.split("/", 1)[0])]
    spaces = await acc.workspaces()
    found = await asyncio.gather(
        *(read_versions(c, extra_tags=project, principal=principal) for c in spaces.values())
    )
    return [version for batch in found for version in batch]


@router.get(
    "/storage",
    response_model=list[Entry],
    summary="List a folder you may use",
    responses=responses(400, 401, 403, 404, 422, 429, 503),
)
async def list_folder(acc: Acc, path: Path = "acc://") -> list[Entry]:
    storage = await _storage(acc, path)
    return await asyncio.to_thread(storage.ls, path)


@router.get(
    "/storage/usage",
    response_model=list[AreaUsageOut],
    summary="What each storage area you may use holds, against its quota",
    responses=responses(401, 429, 503),
)
async def usage(acc: Acc) -> list[AreaUsageOut]:
    return [AreaUsageOut.model_validate(u, from_attributes=True) for u in await acc.storage_usage()]


@router.get(
    "/storage/file",
    summary="Download a file (HTTP Range supported)",
    response_class=StreamingResponse,
    responses=file_responses(400, 401, 403, 404, 422, 429, 503),
)
async def download(acc: Acc, path: Path, range: Annotated[str | None, Header()] = None) -> Response:
    from accelerator_prefect.storage import media_type

    storage = await _storage(acc, path)
    entry = await asyncio.to_thread(storage.info, path)
    if entry.kind != "file":
        raise NotFound(f"{path}: not a file")
    handle = await asyncio.to_thread(storage.open, path, "rb")
    return ranged(handle, entry.size, media_type(path), entry.name, range)


@router.put(
    "/storage/file",
    response_model=Entry,
    status_code=201,
    summary="Upload a file (the request body), written atomically",
    responses=responses(400, 401, 403, 404, 413, 422, 429, 503, 507),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def upload(request: Request, acc: Acc, path: Path) -> Response | Entry:
    limit = request.app.state.settings.portal_max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return _too_large(limit)
    storage = await _storage(acc)
    if path.endswith("/"):
        raise AcceleratorError(f"{path}: name a file, not a folder")
    size = int(declared) if declared and declared.isdigit() else 0
    handle = await asyncio.to_thread(partial(storage.open, path, "wb", expected_size=size))
    # A body of unannounced size stops where the area's quota would be passed.
    room = None if size else await acc.quota_room(path)
    written = 0
    try:
        async for chunk in request.stream():
            written += len(chunk)
            if written > limit:
                await asyncio.to_thread(handle.abort)
                return _too_large(limit)
            if room is not None and written > room:
                await asyncio.to_thread(handle.abort)
                said = await acc.quota_problem(path, written)
                return problem(507, "Storage quota reached", said or "", "storage-quota")
            await asyncio.to_thread(handle.write, chunk)
    except BaseException:
        await asyncio.to_thread(handle.abort)  # a broken upload leaves no file behind
        raise
    await asyncio.to_thread(handle.close)
    return await asyncio.to_thread(storage.info, path)


def _too_large(limit: int) -> Response:
    return problem(
        413,
        "Upload too large",
        f"uploads are limited to {limit:,} bytes here; ask the operator for more",
        "too-large",
    )
