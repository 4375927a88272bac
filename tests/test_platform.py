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


def test_the_platforms_home_and_what_its_processes_create_are_private(
    platform: object, acc: object
) -> None:
    """On a host other people use, nothing of the platform is theirs to read: the home is
    0700, and its database, logs and a run's outputs are its user's alone."""
    from accelerator_prefect import Accelerator
    from accelerator_prefect.platform import PlatformInfo

    assert isinstance(platform, PlatformInfo) and isinstance(acc, Accelerator)
    home = platform.home
    assert home.stat().st_mode & 0o777 == 0o700
    created = [
        *sorted((home / "logs").glob("*.log")),
        *sorted((home / "prefect").glob("*.db")),
        home / "storage",
        home / "logs",
        home / "results",
    ]
    assert len(created) >= 3
    for path in created:
        assert path.stat().st_mode & 0o077 == 0, f"{path.name}: {oct(path.stat().st_mode)}"
