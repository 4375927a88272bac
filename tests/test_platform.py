from __future__ import annotations

from pathlib import Path

import pytest

from accelerator_prefect import PlatformError
from accelerator_prefect.platform import free_port, start_server


def test_a_server_that_cannot_start_is_explained_with_its_log(tmp_path: Path) -> None:
    # The server's home is a file, so it cannot create its database there.
    (tmp_path / "prefect").write_text("not a folder")
    with pytest.raises(PlatformError) as error:
        start_server(tmp_path, free_port(), deadline=120)
    message = str(error.value)
    assert "the Prefect server exited with code" in message
    assert "server.log" in message
    assert len(message.splitlines()) > 2  # the last lines of the log follow
