"""Site and application choice, without processes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from poolwarden.routing import (
    Application,
    RoutingTable,
    Site,
    normalize_host,
    normalize_path,
    routing_table_for,
)

B1 = "127.0.0.1:8000"
B2 = "127.0.0.1:9000"


def site(
    name: str, hostnames: tuple[str, ...], apps: dict[str, str], bindings: tuple[str, ...] = (B1,)
) -> Site:
    return Site(
        name=name,
        bindings=bindings,
        hostnames=hostnames,
        applications=tuple(Application(path, pool) for path, pool in apps.items()),
    )


TABLE = RoutingTable(
    [
        site("exact", ("example.test",), {"/": "web", "/api": "api", "/api/v2": "api2"}),
        site("wild", ("*.example.test",), {"/": "wild"}),
        site("deeper", ("*.eu.example.test",), {"/": "eu"}),
        site("any", (), {"/static": "static"}),
        site("other", (), {"/": "other"}, bindings=(B2,)),
    ]
)


def pool_for(host: str, path: str, binding: str = B1) -> str | None:
    match = TABLE.route(binding, host, path)
    return None if match is None else match.application.pool


def test_exact_host_wins_over_wildcard_and_default() -> None:
    assert pool_for("example.test", "/") == "web"
    assert pool_for("EXAMPLE.test:8000", "/x") == "web"
    assert pool_for("example.test.", "/") == "web"


def test_wildcards_match_subdomains_only_longest_first() -> None:
    assert pool_for("a.example.test", "/") == "wild"
    assert pool_for("a.b.example.test", "/") == "wild"
    assert pool_for("x.eu.example.test", "/") == "eu"
    assert pool_for("eu.example.test", "/") == "wild"


def test_site_without_hostnames_takes_the_rest() -> None:
    assert pool_for("unknown.test", "/static/app.css") == "static"
    assert pool_for("", "/static") == "static"
    assert pool_for("unknown.test", "/") is None  # the site has no application at /


def test_binding_selects_the_sites() -> None:
    assert pool_for("example.test", "/", binding=B2) == "other"
    assert pool_for("example.test", "/", binding="127.0.0.1:1") is None


def test_longest_prefix_on_a_segment_boundary() -> None:
    assert pool_for("example.test", "/api") == "api"
    assert pool_for("example.test", "/api/") == "api"
    assert pool_for("example.test", "/api/x") == "api"
    assert pool_for("example.test", "/apix") == "web"
    assert pool_for("example.test", "/api/v2/users") == "api2"
    assert pool_for("example.test", "/api/v20") == "api"


def test_script_name_is_the_application_path() -> None:
    match = TABLE.route(B1, "example.test", "/api/v2/users")
    assert match is not None and match.script_name == "/api/v2"
    root = TABLE.route(B1, "example.test", "/")
    assert root is not None and root.script_name == ""


def test_normalizers() -> None:
    assert normalize_path("/api/") == "/api"
    assert normalize_path("") == "/"
    assert normalize_host("[::1]:8000") == "[::1]"
    assert normalize_host("Example.Test:80") == "example.test"


segment = st.text(alphabet="abcxyz", min_size=1, max_size=4)


@given(
    prefix=st.lists(segment, min_size=1, max_size=3),
    rest=st.lists(segment, max_size=3),
    glue=segment,
)
def test_prefix_never_matches_inside_a_segment(
    prefix: list[str], rest: list[str], glue: str
) -> None:
    mount = "/" + "/".join(prefix)
    table = RoutingTable([site("s", (), {mount: "mounted", "/": "root"})])
    inside = mount + "/" + "/".join(rest) if rest else mount
    assert (table.route(B1, "h", inside) or None).application.pool == "mounted"  # type: ignore[union-attr]
    glued = mount + glue
    match = table.route(B1, "h", glued)
    assert match is not None and match.application.pool == "root"


def test_the_health_path_is_routed_nowhere_on_every_site_and_host() -> None:
    """The front end answers it; a worker that routes it gets None and hands it back."""
    table = RoutingTable(TABLE.sites, health_path="/healthz")
    assert table.route(B1, "example.test", "/healthz") is None
    assert table.route(B2, "anything.test", "/healthz") is None
    for path in ("/healthz/", "/healthz/x", "/healthzz", "/HEALTHZ"):
        match = table.route(B1, "example.test", path)
        assert match is not None and match.application.pool == "web"
    assert pool_for("example.test", "/healthz") == "web"  # without it: the app's


def test_the_workers_table_carries_the_health_path() -> None:
    one_pool = [site("s", (), {"/": "web"})]
    plain = RoutingTable(one_pool)
    assert plain.single_application("web")
    assert routing_table_for(plain.to_data(), "web") is None  # nothing to route
    guarded = RoutingTable(one_pool, health_path="/healthz")
    assert not guarded.single_application("web")
    again = routing_table_for(guarded.to_data(), "web")
    assert again is not None and again.health_path == "/healthz"
    assert again.route(B1, "h", "/healthz") is None
    assert RoutingTable.from_data(TABLE.to_data()).health_path is None
