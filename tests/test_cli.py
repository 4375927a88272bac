from __future__ import annotations

import json
import re

from typer.testing import CliRunner

from accelerator_prefect import Accelerator
from accelerator_prefect.cli import app
from accelerator_prefect.platform import PlatformInfo
from tests.conftest import ModelRepo
from tests.test_launch import count_runs

runner = CliRunner()


def acc_cli(platform: PlatformInfo, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["--api-url", platform.api_url, *args], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_publish_list_and_show(platform: PlatformInfo, echo_repo: ModelRepo) -> None:
    code, out = acc_cli(platform, "publish", str(echo_repo.manifest))
    assert code == 0, out
    assert f"published {echo_repo.name}@1.0.0: created (commit" in out

    code, out = acc_cli(platform, "list")
    assert code == 0
    assert re.search(rf"{echo_repo.name}\s+│\s+Echo\s+│\s+1.0.0\s+│\s+active\s+│\s+project", out)

    code, out = acc_cli(platform, "show", echo_repo.name)
    assert code == 0
    assert "Says what you ask, louder." in out
    assert re.search(r"repeat\s+│\s+integer\s+│\s+1\s+│\s+≥ 1, ≤ 10", out)
    assert echo_repo.repo.head.commit.hexsha[:12] in out


def test_run_with_an_out_of_range_field_prints_the_path_and_leaves_no_run(
    platform: PlatformInfo, acc: Accelerator, echo_repo: ModelRepo
) -> None:
    acc.publish(echo_repo.manifest)
    code, out = acc_cli(platform, "run", echo_repo.name, "--conf", "repeat=3000")
    assert code == 2
    assert "conf.repeat: 3000 is greater than the maximum of 10" in out
    assert count_runs(platform.api_url, f"{echo_repo.name}@1.0.0") == 0


def test_run_wait_and_logs(platform: PlatformInfo, acc: Accelerator, echo_repo: ModelRepo) -> None:
    acc.publish(echo_repo.manifest)
    code, out = acc_cli(
        platform, "run", echo_repo.name, "--conf", "message=123", "--conf", "repeat=2", "--wait"
    )
    assert code == 0, out
    assert "Completed" in out
    run_id = re.search(r"run ([0-9a-f-]{36})", out).group(1)  # type: ignore[union-attr]
    # `message` is a string field: 123 stays the text "123".
    assert acc.run(run_id).result()["text"] == "123 123"

    code, out = acc_cli(platform, "logs", run_id)
    assert code == 0
    assert "shouting '123' x2" in out


def test_malformed_conf_pair_is_explained(
    platform: PlatformInfo, acc: Accelerator, echo_repo: ModelRepo
) -> None:
    acc.publish(echo_repo.manifest)
    code, out = acc_cli(platform, "run", echo_repo.name, "--conf", "repeat")
    assert code == 1
    assert "expected FIELD=VALUE" in out


def test_unknown_model_is_not_found(platform: PlatformInfo) -> None:
    code, out = acc_cli(platform, "show", "nope")
    assert code == 1
    assert "model 'nope' not found" in out


def test_manifest_schema_command_prints_json_schema() -> None:
    result = runner.invoke(app, ["manifest-schema"])
    schema = json.loads(result.output)
    assert schema["properties"]["version"]["description"].startswith("Semantic version")


def test_share_list_and_revoke_a_link_and_use_it_as_a_guest(
    platform: PlatformInfo, acc: Accelerator, echo_repo: ModelRepo
) -> None:
    acc.publish(echo_repo.manifest)
    code, out = acc_cli(platform, "share", echo_repo.name, "--expires", "30d")
    assert code == 0, out
    link_id = re.search(r"link ([0-9a-f]{12}) opens", out)
    url = re.search(r"shown once: (\S+)", out)
    assert link_id and url and f"model={echo_repo.name}" in url.group(1)

    code, out = acc_cli(platform, "--link", url.group(1), "run", echo_repo.name, "--wait")
    assert code == 0, out
    assert "Completed" in out
    code, out = acc_cli(platform, "--link", url.group(1), "list")
    assert code == 0 and echo_repo.name in out

    code, out = acc_cli(platform, "share", "--list", echo_repo.name)
    assert code == 0 and link_id.group(1) in out and "active" in out
    code, out = acc_cli(platform, "share", "--revoke", link_id.group(1))
    assert code == 0, out
    code, out = acc_cli(platform, "--link", url.group(1), "list")
    assert code == 1
    assert "this link is invalid, expired or revoked" in out


def test_share_embed_prints_an_iframe_opening_the_catalogs_embed_mode(
    platform: PlatformInfo, acc: Accelerator, echo_repo: ModelRepo
) -> None:
    from html.parser import HTMLParser
    from urllib.parse import parse_qs, urlsplit

    acc.publish(echo_repo.manifest)
    catalog = "https://catalog.example.org"
    result = runner.invoke(
        app,
        ["--api-url", platform.api_url, "share", echo_repo.name, "--embed"],
        env={"COLUMNS": "80", "ACC_CATALOG_URL": catalog},  # narrow, yet no line is broken
    )
    assert result.exit_code == 0, result.output
    out = result.output
    url = re.search(r"shown once: (\S+)", out)
    assert url, out
    snippet = out[out.index("<iframe") : out.index("</iframe>") + len("</iframe>")]

    frames: list[dict[str, str | None]] = []

    class Frames(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag == "iframe":
                frames.append(dict(attrs))

    Frames().feed(snippet)
    assert len(frames) == 1, snippet
    frame = frames[0]
    src = str(frame["src"])
    assert src == url.group(1) + "&embed=true"
    parts = urlsplit(src)
    assert f"{parts.scheme}://{parts.netloc}" == catalog and parts.path == "/"
    query = parse_qs(parts.query)
    assert query["model"] == [echo_repo.name] and query["embed"] == ["true"]
    token = query["link"][0]
    assert frame["title"] == "Echo"
    assert frame["width"] == "100%" and frame["height"] == "900"
    # Streamlit needs its scripts, its own origin, forms and downloads; nothing more.
    sandbox = set(str(frame["sandbox"]).split())
    assert {"allow-scripts", "allow-same-origin", "allow-forms", "allow-downloads"} <= sandbox
    assert not {"allow-top-navigation", "allow-modals"} & sandbox
    assert frame["allow"] == "clipboard-write"

    # The link in the snippet works: its holder is a guest of that model.
    with Accelerator.connect(platform.api_url, link=token) as guest:
        assert [m.name for m in guest.catalog()] == [echo_repo.name]


def test_share_without_embed_prints_no_iframe(
    platform: PlatformInfo, acc: Accelerator, echo_repo: ModelRepo
) -> None:
    acc.publish(echo_repo.manifest)
    code, out = acc_cli(platform, "share", echo_repo.name)
    assert code == 0, out
    assert "shown once:" in out and "<iframe" not in out


def test_share_embed_of_an_unknown_model_makes_no_link(platform: PlatformInfo) -> None:
    code, out = acc_cli(platform, "share", "nope", "--embed")
    assert code == 1
    assert "model 'nope' not found" in out and "shown once" not in out
