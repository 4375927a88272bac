"""Which cloud URLs inputs may be fetched from, and fetching them only from there.

A model that accepts cloud inputs reads URLs its users choose, from inside the
platform's network and with the worker's credentials. Without a rule,
``http://127.0.0.1:4200/api/…`` would hand a run (and so its user) whatever the
Prefect API, a metadata service or any other inside address answers. The rule,
applied before any connection is made (at launch, and again on the worker):

- the scheme is one of ``Settings.cloud_schemes``;
- an ``http(s)`` host resolves to public addresses only: every address it resolves
  to, however the URL spells it (``2130706433``, ``0x7f.1``, ``[::1]``, a trailing
  dot, ``user@host``); loopback, private, link-local, multicast, reserved,
  unspecified and cloud metadata addresses are refused, also inside IPv6;
- an object store's URL names a bucket, not a host: the *endpoint* its backend is
  configured with (``AWS_ENDPOINT_URL``, fsspec options …) obeys the same rule,
  and the provider's default public endpoint is fine;
- a host listed in ``Settings.cloud_hosts`` (``host`` or ``host:port``) is admitted
  wherever it resolves: how operators admit a local S3 stand-in. The rule itself
  cannot be turned off.

A refusal reads the same whatever lies behind the address (nothing has been
asked of it). HTTP inputs are read through a session that applies the rule again
as it connects: to every redirect hop, and to the addresses a name resolves to at
that moment, so a name that answers differently the second time (DNS rebinding)
gets nowhere either.

Example:
    >>> fs, path = cloud_filesystem("https://data.example.org/obs/2024.csv")  # doctest: +SKIP
    >>> cloud_filesystem("http://127.0.0.1:4200/api/health")  # doctest: +SKIP
    InvalidInputs: inputs refused, 1 problem(s):
      - input: http://127.0.0.1:4200/api/health is not an address inputs may come from …
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from accelerator_prefect.errors import InvalidInputs
from accelerator_prefect.settings import Settings, get_settings

if TYPE_CHECKING:
    import aiohttp
    from aiohttp.abc import AbstractResolver
    from fsspec import AbstractFileSystem

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

NOT_ALLOWED = "is not an address inputs may come from (a public host, or one the operator admits)"
UNREADABLE = "could not be read: it does not exist, or this platform cannot reach it"

_HTTP = frozenset({"http", "https"})
# Cloud metadata and host services: several are public-looking (168.63.129.16).
_METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack …
        "169.254.170.2",  # AWS ECS task credentials
        "169.254.170.23",  # AWS EKS pod identity
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::23",  # AWS EKS pod identity over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure wire server
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# A bucket or container, optionally ``container@account-host`` (abfs://).
_BUCKET = re.compile(r"[A-Za-z0-9._-]+(@[A-Za-z0-9.-]+)?")
# A last label no DNS name has: a number, so the host is an address in some spelling.
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")


def public_address(address: Address) -> bool:
    """Whether inputs may come from ``address``: a global unicast address that is
    no cloud metadata service, and no IPv6 wrapping of an address that is not."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = address.ipv4_mapped or address.sixtofour
        if address in _NAT64:
            inner = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if address.teredo:
            inner = address.teredo[1]
        if inner is not None and not public_address(inner):
            return False
        if address.is_site_local:
            return False
    return address.is_global and not (
        address in _METADATA
        or address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def _bare(host: str) -> str:
    """A host as compared and resolved: lower case, no brackets, no trailing dot."""
    return host.strip().lower().removeprefix("[").removesuffix("]").rstrip(".")


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(_bare(host))
    except ValueError:
        return None


def _odd_address(host: str) -> bool:
    """An address in a spelling other than the usual one (``127.1``, ``2130706433``,
    ``0x7f.1``): resolvers read these differently, so they are refused outright."""
    bare = _bare(host)
    return _literal(bare) is None and bool(_NUMERIC_LABEL.fullmatch(bare.rsplit(".", 1)[-1]))


def _host_port(entry: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port`` or a bare IPv6 address."""
    text = entry.strip()
    try:
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            if rest and not rest.startswith(":"):
                raise ValueError(rest)
            return _bare(host), int(rest[1:]) if rest else None
        if text.count(":") == 1:
            host, port = text.split(":")
            return _bare(host), int(port)
    except ValueError:
        pass
    else:
        return _bare(text), None
    raise ValueError(f"cloud_hosts: {entry!r} is not a host or host:port (ACC_CLOUD_HOSTS)")


@dataclass(frozen=True)
class CloudSources:
    """The rule as one installation sets it: the schemes cloud inputs may use, and the
    hosts admitted wherever they resolve (``Settings.cloud_schemes`` / ``cloud_hosts``)."""

    schemes: frozenset[str]
    hosts: frozenset[tuple[str, int | None]]

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> CloudSources:
        settings = settings or get_settings()
        return cls(
            frozenset(s.strip().lower() for s in settings.cloud_schemes),
            frozenset(_host_port(h) for h in settings.cloud_hosts),
        )

    def admits(self, host: str, port: int | None) -> bool:
        """Whether the operator admitted ``host`` (on any port, or on ``port``)."""
        host = _bare(host)
        return (host, None) in self.hosts or (port is not None and (host, port) in self.hosts)

    def host_allowed(self, host: str, port: int | None) -> bool:
        """Whether inputs may come from ``host``: admitted, or every address it resolves
        to is public. Resolves the name; connects to nothing."""
        if self.admits(host, port):
            return True
        if _odd_address(host):
            return False
        literal = _literal(host)
        if literal is not None:
            return public_address(literal)
        try:
            found = socket.getaddrinfo(_bare(host), port or 0, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):  # no such name: nothing to read either
            return False
        addresses = [ipaddress.ip_address(info[4][0]) for info in found]
        return bool(addresses) and all(public_address(a) for a in addresses)

    def url_allowed(self, url: str) -> bool:
        """Whether an ``http(s)`` URL's host is one inputs may come from."""
        from yarl import URL

        try:
            parsed = URL(url)
            port = parsed.port
        except ValueError:  # e.g. a backslash in the authority, a port out of range
            return False
        if parsed.scheme not in _HTTP or not parsed.raw_host:
            return False
        return self.host_allowed(parsed.raw_host, port)

    def endpoint_allowed(self, endpoint: str) -> bool:
        """Whether an object store's endpoint (a URL, or a bare ``host[:port]``) is."""
        return self.url_allowed(endpoint if "://" in endpoint else f"https://{endpoint}")


def _refused(url: str, where: str, why: str = NOT_ALLOWED) -> InvalidInputs:
    return InvalidInputs([f"{where}: {url} {why}"], what="inputs")


def cloud_filesystem(
    url: str, settings: Settings | None = None, *, where: str = "input"
) -> tuple[AbstractFileSystem, str]:
    """The filesystem to read the cloud URL ``url`` with, and its path there, once the
    rule admits it.

    Raises :class:`~accelerator_prefect.InvalidInputs` naming ``where`` (the input's
    field path) when inputs may not come from ``url``; nothing has been connected to
    by then, so the refusal is the same whatever answers at that address. Any other
    exception means the backend could not be set up (e.g. it is not installed).
    """
    sources = CloudSources.from_settings(settings)
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in sources.schemes:
        allowed = ", ".join(f"{s}://" for s in sorted(sources.schemes)) or "none"
        raise _refused(url, where, f"is not a cloud URL this platform reads ({allowed})")
    if scheme in _HTTP:
        if not sources.url_allowed(url):
            raise _refused(url, where)
        return http_filesystem(sources), url
    authority = rest.split("/", 1)[0]
    match = _BUCKET.fullmatch(authority)
    if match is None or (match.group(1) and not sources.host_allowed(match.group(1)[1:], None)):
        raise _refused(url, where)
    import fsspec

    # Built directly, not through url_to_fs: a ``::`` in the URL must not chain filesystems.
    cls = fsspec.get_filesystem_class(scheme)
    fs = cls(**cls._get_kwargs_from_urls(url))
    if not all(sources.endpoint_allowed(e) for e in store_endpoints(fs)):
        raise _refused(url, where)
    return fs, cls._strip_protocol(url)


def check_cloud_url(url: str, settings: Settings | None = None, *, where: str = "input") -> None:
    """Raise :class:`~accelerator_prefect.InvalidInputs` if inputs may not come from
    ``url`` (see :func:`cloud_filesystem`)."""
    cloud_filesystem(url, settings, where=where)


# -- object stores: where the backend will connect -----------------------------------------------


def store_endpoints(fs: Any) -> list[str]:
    """The endpoints an object store's filesystem is configured to connect to; none
    when it uses its provider's default public one."""
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    if any(p in ("s3", "s3a") for p in protocols):
        endpoint = _s3_endpoint(fs)
        return [endpoint] if endpoint else []
    # Other backends (gcsfs, adlfs) name their endpoint in one of these.
    found = [getattr(fs, a, None) for a in ("endpoint_url", "_endpoint", "account_host")]
    client_kwargs = getattr(fs, "client_kwargs", None)
    if isinstance(client_kwargs, dict):
        found.append(client_kwargs.get("endpoint_url"))
    connection = getattr(fs, "connection_string", None)
    if any(p in ("az", "abfs", "abfss") for p in protocols):
        connection = connection or os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
    found += _connection_string_endpoints(connection)
    return [str(e) for e in found if isinstance(e, str) and e]


def _connection_string_endpoints(connection: object) -> list[str]:
    """The endpoints an Azure connection string names (Azurite's when it says
    ``UseDevelopmentStorage=true``)."""
    if not isinstance(connection, str):
        return []
    parts = dict(p.split("=", 1) for p in connection.split(";") if "=" in p)
    endpoints = [v for k, v in parts.items() if k.endswith("Endpoint") and "://" in v]
    if parts.get("UseDevelopmentStorage", "").lower() == "true":
        endpoints.append("http://127.0.0.1:10000")
    return endpoints


def _s3_endpoint(fs: Any) -> str | None:
    """The endpoint s3fs will connect to when one is configured: its own options (and
    fsspec's configuration), else botocore's (``AWS_ENDPOINT_URL_S3``,
    ``AWS_ENDPOINT_URL``, the shared config file), in botocore's order."""
    explicit = fs.endpoint_url or fs.client_kwargs.get("endpoint_url")
    if explicit:
        return str(explicit)
    import botocore.session

    session = botocore.session.Session(profile=fs.kwargs.get("profile"))
    ignore = fs.config_kwargs.get("ignore_configured_endpoint_urls")
    if ignore is None:
        ignore = session.get_config_variable("ignore_configured_endpoint_urls")
    if ignore:
        return None
    from_env = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if from_env:
        return from_env
    scoped = session.get_scoped_config()
    services = session.full_config.get("services", {}).get(scoped.get("services"), {})
    found = services.get("s3", {}).get("endpoint_url") or scoped.get("endpoint_url")
    return str(found) if found else None


# -- HTTP: the rule again at connect time --------------------------------------------------------


class AddressRefused(ConnectionRefusedError):
    """Raised inside the HTTP session when a hop or a resolved address is refused."""


class _CheckedResolver:
    """aiohttp's resolver, refusing a name unless every address it resolves to *now*
    is public (or the host is admitted): the check happens on what is connected to."""

    def __init__(self, sources: CloudSources) -> None:
        from aiohttp.resolver import DefaultResolver

        self._sources = sources
        self._inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> Any:
        found = await self._inner.resolve(host, port, family)  # type: ignore[arg-type]
        if self._sources.admits(host, port):
            return found
        addresses = [_literal(r["host"]) for r in found]
        if (
            _odd_address(host)
            or not addresses
            or not all(a is not None and public_address(a) for a in addresses)
        ):
            raise AddressRefused(errno.ECONNREFUSED, f"{host}:{port} {NOT_ALLOWED}")
        return found

    async def close(self) -> None:
        await self._inner.close()


def _hop_check(
    sources: CloudSources,
) -> Callable[[Any, Callable[[Any], Awaitable[Any]]], Awaitable[Any]]:
    """A client middleware run for every request, each redirect hop included: the
    scheme must be allowed, and an address literal (which aiohttp connects to
    without asking the resolver) must be public or admitted."""

    async def check(request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
        url = request.url
        host, port = url.raw_host or "", url.port
        literal = _literal(host)
        refused = (
            url.scheme not in _HTTP
            or url.scheme not in sources.schemes
            or not host
            or (
                not sources.admits(host, port)
                and (_odd_address(host) or (literal is not None and not public_address(literal)))
            )
        )
        if refused:
            raise AddressRefused(errno.ECONNREFUSED, f"{url.scheme}://{host}:{port} {NOT_ALLOWED}")
        return await handler(request)

    return check


async def checked_session(
    sources: CloudSources | None = None, **kwargs: Any
) -> aiohttp.ClientSession:
    """An aiohttp session that connects only where ``sources`` admits (fsspec's
    ``get_client`` for :class:`~fsspec.implementations.http.HTTPFileSystem`).

    Redirects are followed, each hop checked; a read that stalls gives up instead
    of holding a launch or a worker.
    """
    import aiohttp

    sources = sources or CloudSources.from_settings()
    kwargs.pop("loop", None)  # fsspec passes its loop; the session runs on it already
    kwargs.setdefault("timeout", aiohttp.ClientTimeout(total=None, connect=10, sock_read=60))
    resolver = cast("AbstractResolver", _CheckedResolver(sources))
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(resolver=resolver),
        middlewares=(_hop_check(sources),),
        trust_env=False,  # no proxy from the environment: the connection goes where checked
        **kwargs,
    )


def http_filesystem(sources: CloudSources | None = None) -> AbstractFileSystem:
    """fsspec's HTTP filesystem, reading through :func:`checked_session`."""
    from fsspec.implementations.http import HTTPFileSystem

    sources = sources or CloudSources.from_settings()
    fs: AbstractFileSystem = HTTPFileSystem(
        get_client=checked_session, client_kwargs={"sources": sources}
    )
    return fs
