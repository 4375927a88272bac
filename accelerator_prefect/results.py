"""Jobflow results: persisted as strict JSON, read back as data, never unpickled.

(Being rewritten: the functions below are the previous reading code, moved here.)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from accelerator_prefect.errors import AcceleratorError

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import FlowRun
    from prefect.results import ResultRecordMetadata


async def read_result(client: PrefectClient, flow_run: FlowRun) -> Any:
    """The jobflow's return value, read from the result storage the worker wrote to."""
    from prefect.results import ResultRecord, ResultRecordMetadata

    state = flow_run.state
    if state is None or not state.is_final():
        raise AcceleratorError(f"run {flow_run.id} has not finished yet; wait() for it first")
    if not state.is_completed():
        raise AcceleratorError(f"run {flow_run.id} ended {state.name}: {state.message or ''}")
    data = state.data
    if not isinstance(data, ResultRecordMetadata):
        return data
    content = await _read_result_bytes(client, data)
    return ResultRecord.deserialize(content, backup_serializer=data.serializer).result


async def _read_result_bytes(client: PrefectClient, data: ResultRecordMetadata) -> bytes:
    from prefect.blocks.core import Block

    key = str(data.storage_key)
    if data.storage_block_id is None:
        return Path(key).read_bytes()
    document = await client.read_block_document(data.storage_block_id)
    if document.block_type and document.block_type.slug == "local-file-system":
        # Read the file directly: a block method call would emit a Prefect event
        # through the process-wide settings, which need not point at this server.
        base = Path(str(document.data.get("basepath") or "")).expanduser()
        return (base / key).read_bytes()
    storage = Block._from_block_document(document)
    return await storage.read_path(key)  # type: ignore[attr-defined,no-any-return]


