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

    def to_data(self) -> list[dict[str, object]]:
        """Plain data for the workers' Boot message (they route keep-alive
        requests themselves, to hand back the ones of another pool).

        The health path rides in every site's entry: the data keeps the one
        shape the pools and the channel carry, and a worker only ever sees
        requests of the sites it serves.
        """
        return [
            {
                "name": site.name,
                "bindings": list(site.bindings),
                "hostnames": list(site.hostnames),
                "applications": [[app.path, app.pool] for app in site.applications],
                "health_path": self.health_path,
            }
            for site in self.sites
        ]

    @classmethod
    def from_data(cls, data: list[dict[str, object]]) -> RoutingTable:
        sites = []
        health_path: str | None = None
        for item in data:
            if isinstance(item.get("health_path"), str):
                health_path = str(item["health_path"])
            bindings = item["bindings"]
            hostnames = item["hostnames"]
            applications = item["applications"]
            assert isinstance(bindings, list) and isinstance(hostnames, list)
            assert isinstance(applications, list)
            sites.append(
                Site(
                    name=str(item["name"]),
                    bindings=tuple(bindings),
                    hostnames=tuple(hostnames),
                    applications=tuple(Application(path, pool) for path, pool in applications),
                )
            )
        return cls(sites, health_path)

    def single_application(self, pool: str) -> bool:
        """Every application of every site is one mount of `pool` at `/`,
        and no health path is set: then a worker need not route its
        keep-alive requests at all."""
        apps = {(app.path, app.pool) for site in self.sites for app in site.applications}
        return apps == {("/", pool)} and self.health_path is None

    def __init__(self, sites: list[Site], health_path: str | None = None) -> None:
        self.sites = sites
        self.health_path = health_path
        """Routed nowhere: the front end answers it (`server.health_path`)."""
        self._by_binding: dict[str, _SiteChoice] = {}
        self._apps: dict[str, list[Application]] = {}
        for site in sites:
            for binding in site.bindings:
                self._by_binding.setdefault(binding, _SiteChoice()).add(site)
            self._apps[site.name] = sorted(site.applications, key=lambda app: -len(app.path))

    def route(self, binding: str, host: str, path: str) -> Match | None:
        if path == self.health_path:
            return None
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


def routing_table_for(routes: list[dict[str, object]] | None, pool: str) -> RoutingTable | None:
    """The table a worker routes keep-alive requests by, or None when every
    request it can be sent is its own at `/` (no routing needed)."""
    if routes is None:
        return None
    table = RoutingTable.from_data(routes)
    return None if table.single_application(pool) else table
