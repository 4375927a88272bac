"""The catalog reads one deployment a model (its heads); what it offers must be exactly
what reading every version would offer, for every reader."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from accelerator_prefect.access import Principal, Role
from accelerator_prefect.catalog import (
    HostedModel,
    HostedVersion,
    HostingRecord,
    group_models,
    heads,
    hosting_tags,
)
from accelerator_prefect.manifest import Scope, Status

READERS = [
    Principal("alice", {"demo": Role.author}),  # the owner
    Principal("bob", {"demo": Role.member}),
    Principal("carol", {"elsewhere": Role.author}),
    Principal("root", operator=True),
]


def version(number: str, status: Status, scope: Scope) -> HostedVersion:
    record = HostingRecord(
        title="Note",
        owner="alice",
        project="demo",
        scope=scope,
        status=status,
        repository="https://example.invalid/note.git",
        code_fingerprint="c",
        schema_fingerprint="s",
        published_at=datetime(2026, 1, 1, tzinfo=UTC),
        published_by="alice",
    )
    return HostedVersion(
        name="note",
        version=number,
        description="",
        record=record,
        deployment_id=uuid.uuid4(),
        deployment_name=f"note@{number}",
        flow_name="note",
        work_pool=None,
        parameter_schema={},
        default_parameters={},
    )


NUMBERS = ["0.9.0", "1.0.0-rc.1", "1.0.0", "1.1.0", "2.0.0-rc.1", "2.0.0", "2.1.0"]
VERSIONS = st.lists(
    st.tuples(st.sampled_from(list(Status)), st.sampled_from(list(Scope))),
    min_size=len(NUMBERS),
    max_size=len(NUMBERS),
).map(lambda drawn: [version(n, *d) for n, d in zip(NUMBERS, drawn, strict=True)])


def offered(versions: list[HostedVersion], reader: Principal) -> str | None:
    """What the catalog offered before heads: every visible version read, archived hidden."""
    listed = [v for v in versions if v.visible_to(reader) and v.status != Status.archived]
    return group_models(listed)[0].latest.version if listed else None


@given(VERSIONS)
def test_the_newest_visible_head_is_what_reading_every_version_offers(
    versions: list[HostedVersion],
) -> None:
    marked = heads(versions)
    for reader in READERS:
        visible = [v for v in versions if v.deployment_id in marked and v.visible_to(reader)]
        from_heads = group_models(visible)[0].latest.version if visible else None
        assert from_heads == offered(versions, reader), reader.name


@given(VERSIONS)
def test_a_model_has_at_most_one_head_a_scope_and_never_an_archived_one(
    versions: list[HostedVersion],
) -> None:
    marked = [v for v in versions if v.deployment_id in heads(versions)]
    assert all(v.status != Status.archived for v in marked)
    scopes = [v.record.scope for v in marked]
    assert len(scopes) == len(set(scopes))
    assert set(scopes) == {v.record.scope for v in versions if v.status != Status.archived}


def test_the_head_tag_travels_with_the_hosting_tags_and_nothing_else() -> None:
    v = version("1.0.0", Status.active, Scope.public)
    assert "acc:head" in hosting_tags(v.name, v.version, v.record, head=True)
    assert "acc:head" not in hosting_tags(v.name, v.version, v.record)
    assert HostedModel(name="note", versions=[v]).latest is v
