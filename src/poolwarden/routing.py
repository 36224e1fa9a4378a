"""Choosing a site and an application for a request, as IIS does.

A request arrives on a binding (the address and port it was accepted on) and
names a host. Among the sites listening on that binding, the site is chosen by
host name: an exact name first, then the longest matching `*.` wildcard, then
a site that lists no host names (it takes any). Within the site, the
application is the one with the longest path prefix that ends on a segment
boundary: `/api` takes `/api` and `/api/x`, never `/apix`. That prefix is the
application's mount path (WSGI `SCRIPT_NAME`, ASGI `root_path`).

Pure: no sockets, no I/O; the front end calls `RoutingTable.route` per
connection, so lookups are dictionary hits plus a short scan.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Application:
    path: str
    """Mount path: `/` or `/a/b` (no trailing slash)."""
    pool: str


@dataclass(frozen=True, slots=True)
class Site:
    name: str
    bindings: tuple[str, ...]
    """Normalized `host:port` strings, as `normalize_binding` returns them."""
    hostnames: tuple[str, ...]
    applications: tuple[Application, ...]


@dataclass(frozen=True, slots=True)
class Match:
    site: Site
    application: Application

    @property
    def script_name(self) -> str:
        return "" if self.application.path == "/" else self.application.path


def normalize_path(path: str) -> str:
    """`/api/` → `/api`; `` → `/`."""
    stripped = "/" + path.strip("/")
    return stripped


def normalize_host(host: str) -> str:
    """The host part of a `Host` header, lower-cased, without port or final dot."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    name, _, _port = host.partition(":")
    return name.rstrip(".")


class _SiteChoice:
    """The sites of one binding, indexed for host lookup."""

    def __init__(self) -> None:
        self.exact: dict[str, Site] = {}
        self.wildcards: list[tuple[str, Site]] = []  # (".example.test", site), longest first
        self.default: Site | None = None

    def add(self, site: Site) -> None:
        if not site.hostnames:
            self.default = self.default or site
        for name in site.hostnames:
            name = name.lower().rstrip(".")
            if name.startswith("*."):
                self.wildcards.append((name[1:], site))
            else:
                self.exact.setdefault(name, site)
        self.wildcards.sort(key=lambda item: -len(item[0]))

    def choose(self, host: str) -> Site | None:
        site = self.exact.get(host)
        if site is not None:
            return site
        for suffix, candidate in self.wildcards:
            if host.endswith(suffix) and len(host) > len(suffix):
                return candidate
        return self.default


class RoutingTable:
    """Every site's bindings, host names and applications, ready to route."""

    def __init__(self, sites: list[Site]) -> None:
        self.sites = sites
        self._by_binding: dict[str, _SiteChoice] = {}
        self._apps: dict[str, list[Application]] = {}
        for site in sites:
            for binding in site.bindings:
                self._by_binding.setdefault(binding, _SiteChoice()).add(site)
            self._apps[site.name] = sorted(site.applications, key=lambda app: -len(app.path))

    def route(self, binding: str, host: str, path: str) -> Match | None:
        choice = self._by_binding.get(binding)
        if choice is None:
            return None
        site = choice.choose(normalize_host(host))
        if site is None:
            return None
        for application in self._apps[site.name]:
            prefix = application.path
            if prefix == "/" or path == prefix or path.startswith(prefix + "/"):
                return Match(site, application)
        return None
