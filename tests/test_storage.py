from __future__ import annotations

import pytest

from accelerator_prefect.storage import StoragePathError, resolve, split


@pytest.mark.parametrize(
    "uri",
    [
        "acc://climate/../other/secret.csv",
        "acc://climate/a/../../etc/passwd",
        "acc:///etc/passwd",
        "acc://climate/%2e%2e/x",
        "acc://climate\\..\\x",
        "acc://./x",
        "s3://bucket/key",
        "acc://",
    ],
)
def test_paths_that_could_escape_the_root_are_refused(uri: str) -> None:
    with pytest.raises(StoragePathError):
        split(uri)


def test_resolve_maps_onto_the_backing_root(tmp_path) -> None:  # type: ignore[no-untyped-def]
    fs, path = resolve("acc://climate/results/a.csv", root=tmp_path.as_uri())
    assert path == f"{tmp_path}/climate/results/a.csv"
    assert fs.protocol[0] in {"file", "local"}
