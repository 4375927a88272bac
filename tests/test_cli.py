from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest
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
    assert "repeat: integer (≥ 1, ≤ 10; default 1) — How many times." in out
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


FLOOD_FLOW = """
from datetime import date

from pydantic import BaseModel, Field

from accelerator_prefect import Conf, jobflow


class Gauge(BaseModel):  # not a Conf: a misspelt field of a gauge would pass unnoticed
    id: str = Field(examples=["DE-0042"], pattern=r"^[A-Z]{2}-[0-9]{4}$", description="Station.")
    weight: float = Field(default=1.0, gt=0)


class FloodConf(Conf):
    return_period: int = Field(default=100, ge=2, le=1000, description="Years.")
    gauges: list[Gauge] = Field(default_factory=list)
    period_start: date = date(1990, 1, 1)
    threshold: float | None = Field(default=None, ge=0)
    method: str = Field(default="gev", json_schema_extra={"enum": ["gev", "gumbel"]})


@jobflow(name="flood")
def flood(conf: FloodConf) -> dict:
    return {
        "start": conf.period_start.isoformat(),
        "gauges": [g.id for g in conf.gauges],
        "return_period": conf.return_period,
    }
"""

FLOOD_MANIFEST = """
name: {name}
title: Flood frequency
version: 1.0.0
jobflow: flows/flood.py:flood
owner: alice
project: demo
"""


@pytest.fixture
def flood_repo(tmp_path: Path) -> ModelRepo:
    """A model whose conf has a list of groups, a date, an optional number and choices;
    its gauges are a plain pydantic model that accepts unknown fields."""
    repo = ModelRepo(tmp_path / "flood", f"flood-{uuid.uuid4().hex[:8]}")
    repo.write("flows/flood.py", FLOOD_FLOW)
    repo.write(f"deployments/{repo.name}.yaml", FLOOD_MANIFEST.format(name=repo.name))
    repo.commit("flood 1.0.0")
    return repo


def test_publish_warns_about_a_conf_model_that_accepts_unknown_fields(
    platform: PlatformInfo, flood_repo: ModelRepo
) -> None:
    code, out = acc_cli(platform, "publish", str(flood_repo.manifest))
    assert code == 0, out
    assert f"published {flood_repo.name}@1.0.0: created" in out
    warning = " ".join(out[out.index("warning:") :].split())  # as one line, however wrapped
    assert warning.startswith(
        "warning: conf.gauges[*]: Gauge accepts unknown fields, so a misspelt setting is "
        "ignored and the run uses its default; derive it from accelerator_prefect.Conf or "
        "set model_config = ConfigDict(extra='forbid')"
    )
    assert "FloodConf" not in out  # a Conf forbids unknown fields


def test_show_draws_the_conf_as_a_tree(
    platform: PlatformInfo, acc: Accelerator, flood_repo: ModelRepo
) -> None:
    acc.publish(flood_repo.manifest)
    code, out = acc_cli(platform, "show", flood_repo.name)
    assert code == 0, out
    lines = [line.strip(" │├└─") for line in out.splitlines()]
    assert "return_period: integer (≥ 2, ≤ 1000; default 100) — Years." in lines
    assert "gauges: list of Gauge" in lines
    assert "each item:" in lines
    assert 'id: string required (like "DE-0042") — Station.' in lines
    assert "weight: number (> 0; default 1.0)" in lines
    assert 'period_start: string (date) (default "1990-01-01")' in lines
    assert "threshold: number optional (≥ 0; default null)" in lines
    assert 'method: one of "gev", "gumbel" (default "gev")' in lines
    assert "pattern" not in out and "[A-Z]" not in out
    # The items' fields are drawn under the list, deeper than the conf's own fields.
    depth = {
        line.strip(" │├└─").split(":")[0]: len(line) - len(line.lstrip(" │├└─"))
        for line in out.splitlines()
        if ":" in line
    }
    assert depth["id"] > depth["gauges"] == depth["return_period"]


def test_a_yaml_conf_file_with_dates_and_groups_is_taken_as_written(
    platform: PlatformInfo, acc: Accelerator, flood_repo: ModelRepo, tmp_path: Path
) -> None:
    acc.publish(flood_repo.manifest)
    conf = tmp_path / "conf.yaml"
    conf.write_text(
        "period_start: 1990-01-01\n"
        "return_period: 50\n"
        "threshold: 2.5\n"
        "gauges:\n"
        "  - id: DE-0042\n"
        "    weight: 0.5\n"
        "  - id: FR-0007\n"
    )
    code, out = acc_cli(platform, "run", flood_repo.name, "--conf-file", str(conf), "--wait")
    assert code == 0, out
    assert "Completed" in out
    run_id = re.search(r"run ([0-9a-f-]{36})", out).group(1)  # type: ignore[union-attr]
    assert acc.run(run_id).result() == {
        "start": "1990-01-01",
        "gauges": ["DE-0042", "FR-0007"],
        "return_period": 50,
    }


def test_a_json_conf_file_is_read_as_json_and_a_wrong_date_is_named(
    platform: PlatformInfo, acc: Accelerator, flood_repo: ModelRepo, tmp_path: Path
) -> None:
    acc.publish(flood_repo.manifest)
    conf = tmp_path / "conf.json"
    conf.write_text(json.dumps({"period_start": "1990-13-01", "gauges": [{"id": "x"}]}))
    code, out = acc_cli(platform, "run", flood_repo.name, "--conf-file", str(conf))
    assert code == 2, out
    assert "conf.period_start: '1990-13-01' is not a 'date'" in out
    assert "conf.gauges[0].id" in out
    assert count_runs(platform.api_url, f"{flood_repo.name}@1.0.0") == 0

    conf.write_text('{"period_start": "1990-01-01",}')
    code, out = acc_cli(platform, "run", flood_repo.name, "--conf-file", str(conf))
    assert code == 1 and f"--conf-file {conf}: not valid JSON at line 1" in " ".join(out.split())


def test_whoami_as_the_local_operator_says_how_to_act_as_oneself(platform: PlatformInfo) -> None:
    code, out = acc_cli(platform, "whoami")
    assert code == 0, out
    text = " ".join(out.split())
    assert "— operator" in text
    assert "as the local platform's operator, with the operator token `acc up` keeps" in text
    assert "To act as yourself: an operator runs `acc users add YOUR-NAME --project " in text
    assert "PROJECT:author`" in text and "set ACC_TOKEN to that token" in text


def test_whoami_with_a_personal_token_names_the_user_projects_and_roles(
    platform: PlatformInfo, acc: Accelerator
) -> None:
    name = f"dana-{uuid.uuid4().hex[:6]}"
    _, token = acc.add_user(name, {"demo": "author", "hydro": "member"})
    result = runner.invoke(
        app,
        ["--api-url", platform.api_url, "whoami"],
        env={"COLUMNS": "200", "ACC_TOKEN": token},
    )
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert f"{name} — user" in text
    assert "with your personal token from ACC_TOKEN" in text
    author = rf"demo\s+│\s+author\s+│\s+see, run and publish as owner {name}"
    assert re.search(author, result.output)
    assert re.search(r"hydro\s+│\s+member\s+│\s+see and run", result.output)
    assert f"You publish as yourself: write owner: {name}" in text
    assert token not in result.output
