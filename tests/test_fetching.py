"""Cloud inputs are fetched only from where they may come: the rule on its own
(hostile URLs in every spelling, object-store endpoints, admitted hosts), what a
launch answers (the same for an open port and a closed one), redirects and DNS
rebinding on the HTTP session, and whole launches on the real platform."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from accelerator_prefect import Accelerator, InvalidInputs
from accelerator_prefect.fetching import (
    NOT_ALLOWED,
    UNREADABLE,
    CloudSources,
    check_cloud_url,
    cloud_filesystem,
    http_filesystem,
)
from accelerator_prefect.manifest import InputMapping, Source
from accelerator_prefect.mapping import InputFile, expand, input_problems, inputs_schema
from accelerator_prefect.platform import PlatformInfo, free_port, start_pool_worker, stop_process
from accelerator_prefect.settings import Settings
from tests.conftest import ModelRepo, S3Server
from tests.test_launch import count_runs

CSV = b"x\n1\n2\n"
CLOUD = InputMapping(sources=[Source.cloud], accepted_types=[".csv"])
AWS_ENDPOINTS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")


def rule(*hosts: str, schemes: list[str] | None = None) -> Settings:
    """Settings with exactly these admitted hosts (whatever the environment says)."""
    schemes = schemes or ["s3", "gs", "gcs", "az", "abfs", "abfss", "https", "http"]
    return Settings(cloud_hosts=list(hosts), cloud_schemes=schemes)


def refusal(url: str, where: str = "input") -> str:
    return f"{where}: {url} {NOT_ALLOWED}"


@pytest.fixture
def no_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Names resolve from /etc/hosts or as address literals only: a test that would
    ask the network's DNS fails instead. ``fake`` maps a name to the answers it gives,
    one per lookup (the last one repeating), as a rebinding name server would."""
    real = socket.getaddrinfo
    fake: dict[str, list[str]] = {}

    def guarded(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name in fake:
            answer = fake[name].pop(0) if len(fake[name]) > 1 else fake[name][0]
            family = socket.AF_INET6 if ":" in answer else socket.AF_INET
            return [(family, socket.SOCK_STREAM, 6, "", (answer, int(port or 0)))]
        try:
            ipaddress.ip_address(name.split("%")[0])
        except ValueError:
            assert name == "localhost", f"a test asked DNS for {name!r}"
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)
    return fake


# -- the rule ------------------------------------------------------------------------------------

HOSTILE = [
    "http://127.0.0.1:4200/api/block_types/slug/secret/block_documents?include_secrets=true",
    "http://2130706433/x.csv",  # 127.0.0.1 as one number
    "http://0x7f.1/x.csv",  # hex, short form
    "http://0177.0.0.1/x.csv",  # octal
    "http://127.1/x.csv",
    "http://0/x.csv",
    "http://[::1]/x.csv",
    "http://[::ffff:127.0.0.1]/x.csv",  # IPv4-mapped IPv6
    "http://[::ffff:a9fe:a9fe]/x.csv",  # the metadata address, mapped
    "http://[2002:7f00:1::]/x.csv",  # 6to4 around 127.0.0.1
    "http://[64:ff9b::a9fe:a9fe]/x.csv",  # NAT64 around the metadata address
    "http://[::]/x.csv",
    "http://0.0.0.0/x.csv",
    "http://localhost/x.csv",  # a name resolving to loopback
    "http://LocalHost./x.csv",  # a trailing dot, capitals
    "http://127.0.0.1./x.csv",
    "http://evil.example@127.0.0.1/x.csv",  # userinfo before the real host
    "https://user:pw@localhost:8443/x.csv",
    "http://10.1.2.3/x.csv",
    "http://172.16.0.1/x.csv",
    "http://192.168.1.1/x.csv",
    "http://100.64.0.1/x.csv",  # shared address space (carrier NAT)
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://169.254.170.2/v2/credentials",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://168.63.129.16/machine?comp=goalstate",  # Azure's wire server looks public
    "http://100.100.100.200/latest/meta-data/",
    "http://[fe80::1%25eth0]/x.csv",  # link-local with a zone
    "http://[fc00::1]/x.csv",
    "http://224.0.0.1/x.csv",
    "http://[ff02::1]/x.csv",
    "http://240.0.0.1/x.csv",  # reserved
    "http://255.255.255.255/x.csv",
    "http://127.0.0.1\\@1.1.1.1/x.csv",  # parsers disagree on it: refused
    "http://1.1.1.1:99999/x.csv",  # no such port
    "s3://acc-test@127.0.0.1/x.csv",  # a host where a bucket goes
    "s3://acc-test:9000/x.csv",
]


@pytest.mark.parametrize("url", HOSTILE)
def test_inside_addresses_are_refused_in_every_spelling(
    url: str, no_dns: dict[str, list[str]]
) -> None:
    with pytest.raises(InvalidInputs) as refused:
        check_cloud_url(url, rule(), where="inputs.selected_files[0]")
    assert refused.value.problems == [refusal(url, "inputs.selected_files[0]")]


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://127.0.0.1/x.csv", "gopher://127.0.0.1:6379/_x", "x.csv"]
)
def test_only_the_installations_schemes_are_read(url: str) -> None:
    with pytest.raises(InvalidInputs, match="is not a cloud URL this platform reads"):
        check_cloud_url(url, rule())


def test_the_schemes_follow_the_settings(no_dns: dict[str, list[str]]) -> None:
    from jsonschema import Draft202012Validator

    only_s3 = rule(schemes=["s3"])
    with pytest.raises(InvalidInputs, match=r"\(s3://\)"):
        check_cloud_url("https://1.1.1.1/x.csv", only_s3)
    schema = Draft202012Validator(inputs_schema(CLOUD, settings=only_s3))
    assert schema.is_valid({"selected_files": ["s3://bucket/x.csv"]})
    assert not schema.is_valid({"selected_files": ["https://1.1.1.1/x.csv"]})
    assert Draft202012Validator(inputs_schema(CLOUD, settings=rule())).is_valid(
        {"selected_files": ["https://1.1.1.1/x.csv"]}
    )


@pytest.mark.parametrize(
    "url", ["https://1.1.1.1/data/x.csv", "http://[2606:4700:4700::1111]:8080/x.csv"]
)
def test_a_public_address_is_let_through(url: str, no_dns: dict[str, list[str]]) -> None:
    """Deciding connects to nothing: no network is needed to admit a public address."""
    fs, path = cloud_filesystem(url, rule())
    assert fs.protocol == ("http", "https") and path == url


@pytest.mark.parametrize(
    ("hosts", "url", "admitted"),
    [
        (["localhost:9000"], "http://localhost:9000/x.csv", True),
        (["localhost:9000"], "http://LOCALHOST.:9000/x.csv", True),
        (["localhost:9000"], "http://localhost:9001/x.csv", False),
        (["LocalHost"], "http://localhost:9001/x.csv", True),
        (["127.0.0.1:9000"], "http://127.0.0.1:9000/x.csv", True),
        (["127.0.0.1:9000"], "http://2130706433:9000/x.csv", False),  # names match exactly
        (["127.0.0.1:9000"], "http://localhost:9000/x.csv", False),
        (["[::1]:9000"], "http://[::1]:9000/x.csv", True),
        (["::1"], "http://[::1]:1234/x.csv", True),
        (["localhost:80"], "http://localhost/x.csv", True),
        (["localhost:80"], "https://localhost/x.csv", False),
    ],
)
def test_an_admitted_host_is_read_wherever_it_resolves(
    hosts: list[str], url: str, admitted: bool, no_dns: dict[str, list[str]]
) -> None:
    if admitted:
        check_cloud_url(url, rule(*hosts))
    else:
        with pytest.raises(InvalidInputs, match="is not an address inputs may come from"):
            check_cloud_url(url, rule(*hosts))


def test_a_malformed_admitted_host_is_the_operators_to_fix() -> None:
    with pytest.raises(ValueError, match=r"'127.0.0.1:nine' is not a host or host:port"):
        input_problems(
            CLOUD, _selected("http://127.0.0.1:1/x.csv"), settings=rule("127.0.0.1:nine")
        )


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No endpoint configured anywhere botocore or fsspec would look (until a test sets one)."""
    import fsspec.config

    for name in AWS_ENDPOINTS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setattr(fsspec.config, "conf", {})
    return monkeypatch


def test_an_s3_url_names_a_bucket_and_the_default_endpoint_is_public(
    aws_env: pytest.MonkeyPatch, no_dns: dict[str, list[str]]
) -> None:
    fs, path = cloud_filesystem("s3://acc-test/cloud/x.csv", rule())
    assert path == "acc-test/cloud/x.csv" and "s3" in fs.protocol


def _aws_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    config = tmp_path / "aws-config"
    config.write_text(text)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))


def _fsspec_s3(monkeypatch: pytest.MonkeyPatch, options: dict[str, Any]) -> None:
    import fsspec.config

    monkeypatch.setitem(fsspec.config.conf, "s3", options)


S3_ENDPOINTS: list[tuple[str, Callable[[Path, pytest.MonkeyPatch], None]]] = [
    ("AWS_ENDPOINT_URL", lambda _, m: m.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")),
    ("AWS_ENDPOINT_URL_S3", lambda _, m: m.setenv("AWS_ENDPOINT_URL_S3", "http://[::1]:9000")),
    (
        "the service's over the global one",
        lambda _, m: (
            m.setenv("AWS_ENDPOINT_URL", "https://1.1.1.1"),
            m.setenv("AWS_ENDPOINT_URL_S3", "http://169.254.169.254"),
        ),
    ),
    (
        "the shared config file",
        lambda t, m: _aws_config(t, m, "[default]\nendpoint_url = http://10.0.0.5:9000\n"),
    ),
    (
        "the shared config file's services section",
        lambda t, m: _aws_config(
            t,
            m,
            "[default]\nservices = local\n\n[services local]\ns3 =\n"
            "  endpoint_url = http://localhost:9000\n",
        ),
    ),
    (
        "fsspec's configuration",
        lambda _, m: _fsspec_s3(m, {"endpoint_url": "http://127.0.0.1:9000"}),
    ),
    (
        "fsspec's client_kwargs",
        lambda _, m: _fsspec_s3(m, {"client_kwargs": {"endpoint_url": "http://192.168.0.10"}}),
    ),
]


@pytest.mark.parametrize(("where", "configure"), S3_ENDPOINTS, ids=[e[0] for e in S3_ENDPOINTS])
def test_an_s3_endpoint_configured_inside_is_refused(
    where: str,
    configure: Callable[[Path, pytest.MonkeyPatch], None],
    aws_env: pytest.MonkeyPatch,
    tmp_path: Path,
    no_dns: dict[str, list[str]],
) -> None:
    configure(tmp_path, aws_env)
    url = "s3://acc-test/cloud/x.csv"
    with pytest.raises(InvalidInputs) as refused:
        check_cloud_url(url, rule())
    assert refused.value.problems == [refusal(url)]


def test_an_admitted_s3_endpoint_and_an_ignored_one_are_read(
    aws_env: pytest.MonkeyPatch, no_dns: dict[str, list[str]]
) -> None:
    aws_env.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    check_cloud_url("s3://acc-test/x.csv", rule("127.0.0.1:9000"))
    with pytest.raises(InvalidInputs):
        check_cloud_url("s3://acc-test/x.csv", rule("127.0.0.1:9001"))
    aws_env.setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")
    check_cloud_url("s3://acc-test/x.csv", rule())


# -- what a launch answers, and the HTTP session -------------------------------------------------


class Site(ThreadingHTTPServer):
    """A tiny web site on a loopback port that records every request it receives."""

    routes: dict[str, tuple[int, dict[str, str], bytes]]
    requests: list[str]

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


class _Answer(BaseHTTPRequestHandler):
    server: Site

    def _answer(self, body: bool) -> None:
        self.server.requests.append(self.path)
        status, headers, content = self.server.routes.get(self.path, (404, {}, b"no such file"))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        if body:
            self.wfile.write(content)

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def sites() -> Iterator[Callable[[], Site]]:
    """Start as many sites as a test needs; each serves ``/x.csv``."""
    started: list[tuple[Site, threading.Thread]] = []

    def start() -> Site:
        site = Site(("127.0.0.1", 0), _Answer)
        site.routes, site.requests = {"/x.csv": (200, {"Content-Type": "text/csv"}, CSV)}, []
        thread = threading.Thread(target=site.serve_forever, daemon=True)
        thread.start()
        started.append((site, thread))
        return site

    yield start
    for site, thread in started:
        site.shutdown()
        site.server_close()
        thread.join(timeout=10)


def _selected(url: str) -> dict[str, list[str]]:
    return {"selected_files": [url]}


def test_a_refusal_reads_the_same_for_an_open_port_and_a_closed_one(
    sites: Callable[[], Site], no_dns: dict[str, list[str]]
) -> None:
    site = sites()
    answers = {}
    for port in (site.port, free_port()):
        url = f"http://127.0.0.1:{port}/x.csv"
        [problem] = input_problems(CLOUD, _selected(url), settings=rule())
        answers[port] = problem.replace(str(port), "<port>")
    assert answers[site.port] == answers[next(p for p in answers if p != site.port)]
    assert answers[site.port] == refusal(
        "http://127.0.0.1:<port>/x.csv", "inputs.selected_files[0]"
    )
    assert site.requests == []  # decided before anything was connected to


def test_an_admitted_url_that_fails_reads_the_same_however_it_fails(
    sites: Callable[[], Site], no_dns: dict[str, list[str]]
) -> None:
    site = sites()
    site.routes["/denied.csv"] = (403, {}, b"forbidden")
    site.routes["/broken.csv"] = (500, {}, b"stack trace with secrets")
    closed = free_port()
    admitted = rule(f"127.0.0.1:{site.port}", f"127.0.0.1:{closed}")
    assert input_problems(CLOUD, _selected(site.url("/x.csv")), settings=admitted) == []
    for url in (
        site.url("/missing.csv"),
        site.url("/denied.csv"),
        site.url("/broken.csv"),
        f"http://127.0.0.1:{closed}/x.csv",
    ):
        problems = input_problems(CLOUD, _selected(url), settings=admitted)
        assert problems == [f"inputs.selected_files[0]: {url} {UNREADABLE}"]


def test_a_scheme_without_a_backend_reads_like_any_failure() -> None:
    url = "nosuchfs://bucket/x.csv"
    problems = input_problems(CLOUD, _selected(url), settings=rule(schemes=["nosuchfs"]))
    assert problems == [f"inputs.selected_files[0]: {url} {UNREADABLE}"]


def test_each_redirect_hop_is_checked(
    sites: Callable[[], Site], no_dns: dict[str, list[str]]
) -> None:
    """Redirects are followed (public data often moves), but only to where inputs may
    come from: an inside address behind a public-looking redirect is never asked."""
    entry, inside = sites(), sites()
    entry.routes["/to-literal.csv"] = (302, {"Location": inside.url("/x.csv")}, b"")
    entry.routes["/to-name.csv"] = (302, {"Location": inside.url("/x.csv", "localhost")}, b"")
    entry.routes["/to-self.csv"] = (301, {"Location": "/x.csv"}, b"")
    admitted = rule(f"127.0.0.1:{entry.port}")
    for path in ("/to-literal.csv", "/to-name.csv"):
        url = entry.url(path)
        assert input_problems(CLOUD, _selected(url), settings=admitted) == [
            f"inputs.selected_files[0]: {url} {UNREADABLE}"
        ]
    assert inside.requests == []
    assert input_problems(CLOUD, _selected(entry.url("/to-self.csv")), settings=admitted) == []
    assert "/x.csv" in entry.requests


def test_a_name_that_resolves_inside_when_connecting_is_refused(
    sites: Callable[[], Site], no_dns: dict[str, list[str]]
) -> None:
    """DNS rebinding: the name answers a public address to the check, then loopback.
    The session checks the addresses it connects to, so the second answer gets nowhere."""
    site = sites()
    no_dns["rebind.example"] = ["1.1.1.1", "127.0.0.1"]
    url = f"http://rebind.example:{site.port}/x.csv"
    fs, path = cloud_filesystem(url, rule())  # the check sees 1.1.1.1
    with pytest.raises(OSError) as failed:
        fs.cat_file(path)
    assert "is not an address inputs may come from" in repr(failed.value.__cause__ or failed.value)
    assert site.requests == []


def test_the_session_refuses_without_any_check_before_it(
    sites: Callable[[], Site], no_dns: dict[str, list[str]]
) -> None:
    site = sites()
    fs = http_filesystem(CloudSources.from_settings(rule()))
    for url in (site.url("/x.csv"), site.url("/x.csv", "localhost")):
        with pytest.raises(OSError):
            fs.cat_file(url)
    assert site.requests == []
    admitted = http_filesystem(CloudSources.from_settings(rule(f"localhost:{site.port}")))
    assert admitted.cat_file(site.url("/x.csv", "localhost")) == CSV


def test_a_run_checks_its_cloud_inputs_again_before_reading_any(
    sites: Callable[[], Site], no_dns: dict[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACC_CLOUD_HOSTS", "[]")
    site = sites()
    inside = site.url("/x.csv")
    with pytest.raises(InvalidInputs) as refused:
        expand([inside], ["http://localhost/folder/"], settings=rule())
    assert refused.value.problems == [
        refusal(inside, "inputs.selected_files[0]"),
        refusal("http://localhost/folder/", "inputs.selected_folders[0]"),
    ]
    with pytest.raises(InvalidInputs, match="is not an address inputs may come from"):
        InputFile(inside, 6, inside).open()
    assert site.requests == []
    [read] = expand([inside], [], settings=rule(f"127.0.0.1:{site.port}"))
    assert read.size == len(CSV)


# -- whole launches on the real platform ---------------------------------------------------------


def _host_port(url: str) -> str:
    return url.split("://", 1)[1].split("/", 1)[0]


@pytest.fixture(scope="module")
def cloud_pool(acc: Accelerator, platform: PlatformInfo, s3_server: S3Server) -> Iterator[str]:
    """A work pool whose worker admits moto's endpoint and nothing else, as an
    operator configures one through its environment."""
    from accelerator_prefect.platform import _prepare

    pool = f"acc-cloud-{uuid.uuid4().hex[:6]}"
    acc._call(lambda c: _prepare(c, platform.home, pool, "warm"))
    env = {"ACC_CLOUD_HOSTS": json.dumps([_host_port(s3_server.endpoint)])}
    worker = start_pool_worker(platform.home, platform.api_url, pool, "warm", env)
    yield pool
    stop_process(worker)


@pytest.fixture(scope="module")
def cloud_model(
    acc: Accelerator, cloud_pool: str, tmp_path_factory: pytest.TempPathFactory
) -> ModelRepo:
    repo = ModelRepo(tmp_path_factory.mktemp("cloud"), f"tables-{uuid.uuid4().hex[:8]}")
    repo.tables(sources="cloud", extra=f"work_pool: {cloud_pool}").commit("cloud tables")
    acc.publish(repo.manifest)
    return repo


def test_a_launch_reading_the_prefect_api_is_refused_and_creates_no_run(
    acc: Accelerator,
    platform: PlatformInfo,
    cloud_model: ModelRepo,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ACC_CLOUD_HOSTS", "[]")
    secrets = "/block_types/slug/secret/block_documents?include_secrets=true&as=.csv"
    prefect_port = _host_port(platform.api_url).rsplit(":", 1)[1]
    closed_port = str(free_port())
    deployment = f"{cloud_model.name}@1.0.0"
    before = count_runs(platform.api_url, deployment)
    answers = []
    for port in (prefect_port, closed_port):
        url = platform.api_url.replace(f":{prefect_port}/", f":{port}/") + secrets
        with pytest.raises(InvalidInputs) as refused:
            acc.launch(cloud_model.name, inputs=[url])
        assert refused.value.problems == [refusal(url, "inputs.selected_files[0]")]
        answers.append(str(refused.value).replace(port, "<port>"))
    assert answers[0] == answers[1]  # nothing tells the Prefect port from a closed one
    assert count_runs(platform.api_url, deployment) == before


def test_an_s3_input_is_read_from_an_admitted_endpoint_only(
    acc: Accelerator,
    s3_server: S3Server,
    cloud_model: ModelRepo,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"s3://{s3_server.bucket}/fetching/x.csv"
    s3_server.filesystem().pipe_file(url, b"x\n1\n2\n3\n")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setenv("ACC_CLOUD_HOSTS", "[]")
    with pytest.raises(InvalidInputs) as refused:
        acc.launch(cloud_model.name, inputs=[url])
    assert refused.value.problems == [refusal(url, "inputs.selected_files[0]")]

    monkeypatch.setenv("ACC_CLOUD_HOSTS", json.dumps([_host_port(s3_server.endpoint)]))
    run = acc.launch(cloud_model.name, inputs=[url])
    assert run.wait(timeout=180) == "Completed", "\n".join(run.logs())
    assert run.result() == {"x.csv": 3}
    # Its provenance names the object it read, with the hash of what it held.
    [read] = run.provenance().inputs
    assert (read.uri, read.size) == (url, 8)
    assert read.sha256 == hashlib.sha256(b"x\n1\n2\n3\n").hexdigest()


def test_the_worker_refuses_what_only_the_launcher_admitted(
    acc: Accelerator,
    cloud_model: ModelRepo,
    sites: Callable[[], Site],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run checks its inputs itself: the worker's settings admit moto only, so a
    loopback site admitted where the launch was made is never asked by the run."""
    site = sites()
    monkeypatch.setenv("ACC_CLOUD_HOSTS", json.dumps([f"127.0.0.1:{site.port}"]))
    run = acc.launch(cloud_model.name, inputs=[site.url("/x.csv")])
    asked_at_launch = list(site.requests)
    assert asked_at_launch  # the launch did read it: it was admitted there
    assert run.wait(timeout=180) == "Failed"
    assert any(NOT_ALLOWED in line for line in run.logs()), "\n".join(run.logs())
    assert site.requests == asked_at_launch
