"""The event id catalog: complete, consistent, explained, and equal to docs/events.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from poolwarden.events import catalog
from poolwarden.events.catalog import (
    BY_NAME,
    CATALOG,
    KNOWN_IDS,
    LEVELS,
    RECYCLE_EVENT_IDS,
    UnknownEventId,
    explain,
    fill,
    lookup,
    next_steps,
)
from poolwarden.events.render import (
    CATALOG_END,
    CATALOG_START,
    format_catalog_markdown,
    update_catalog_section,
)

DOCS = Path(__file__).resolve().parent.parent / "docs" / "events.md"

WAS_IDS = {5002, 5009, 5010, 5011, 5012, 5013, 5015, 5022, 5074, 5075, 5076, 5077, 5078}
WAS_IDS |= {5079, 5080, 5093, 5117, 5127, 5186}
"""The WAS numbers the catalog reuses (IIS-REFERENCE.md), meaning for meaning."""


def named_constants() -> dict[str, int]:
    return {
        name: value
        for name, value in vars(catalog).items()
        if name.isupper() and isinstance(value, int) and not isinstance(value, bool)
    }


def test_ids_are_keys_and_names_are_unique_snake_case() -> None:
    assert len(BY_NAME) == len(CATALOG)
    for event_id, entry in CATALOG.items():
        assert entry.id == event_id
        assert re.fullmatch(r"[a-z][a-z0-9_]*", entry.name), entry.name
        assert entry.level in LEVELS


def test_own_ids_are_in_the_documented_range_and_was_ids_are_marked() -> None:
    for entry in CATALOG.values():
        if entry.iis:
            assert entry.id in WAS_IDS, entry.id
        else:
            assert 2000 <= entry.id <= 2099, entry.id
    assert {entry.id for entry in CATALOG.values() if entry.iis} == WAS_IDS


def test_every_named_constant_is_in_the_catalog_with_a_matching_name() -> None:
    constants = {
        name: value
        for name, value in named_constants().items()
        if value in range(2000, 6000) and name not in {"SCHEMA_VERSION"}
    }
    assert set(constants.values()) == KNOWN_IDS
    for name, value in constants.items():
        assert CATALOG[value].name.upper() == name, (name, value)


def test_the_ids_the_brief_asks_for_have_their_meaning() -> None:
    expected = {
        5002: "pool_disabled_rapid_fail",
        5009: "worker_ended_unexpectedly",
        5010: "worker_ping_failed",
        5011: "worker_channel_broken",
        5012: "worker_startup_time_limit",
        5013: "worker_shutdown_time_limit",
        5022: "worker_create_failed",
        5074: "recycle_time",
        5075: "recycle_requests",
        5076: "recycle_schedule",
        5077: "recycle_memory",
        5078: "recycle_unhealthy",
        5079: "recycle_administrator",
        5080: "recycle_config_change",
        5093: "recycle_failed",
        5117: "recycle_private_memory",
        5127: "worker_malformed_data",
        5186: "worker_idle_shutdown",
    }
    assert {event_id: CATALOG[event_id].name for event_id in expected} == expected


def test_recycle_reasons_map_to_recycle_events() -> None:
    for reason, event_id in RECYCLE_EVENT_IDS.items():
        assert CATALOG[event_id].category == "recycle", reason
    assert set(RECYCLE_EVENT_IDS.values()) == {
        entry.id for entry in CATALOG.values() if entry.category == "recycle" and entry.iis
    } - {5093}


@pytest.mark.parametrize("event_id", sorted(KNOWN_IDS))
def test_explain_covers_every_id(event_id: int) -> None:
    entry = CATALOG[event_id]
    text = explain(event_id)
    assert text.startswith(f"{event_id} {entry.name} ({entry.level})\n{entry.title}\n")
    assert "Usual causes:" in text and "What to do next:" in text
    assert entry.causes and entry.next_steps and entry.meaning
    assert "{" not in text, "a placeholder was left unfilled"
    for step in next_steps(entry):
        assert step.split(":")[0].strip()  # one concrete sentence each
    assert explain(str(event_id)) == text == explain(entry.name)


def test_next_steps_name_commands_and_fill_in_the_event() -> None:
    steps = next_steps(CATALOG[2022], {"seq": 41, "pid": 1234, "pool": "web"})
    assert any("`poolwarden events show 41`" in step for step in steps)
    assert any("`poolwarden pool start web`" in step for step in steps)
    assert any("SEQ" in step for step in next_steps(CATALOG[2022]))
    assert fill("pid {pid} of {pool}", {"pid": 7, "pool": None}) == "pid 7 of POOL"


def test_unknown_ids_and_names_are_refused() -> None:
    for key in (1234, "1234", "no_such_event", ""):
        with pytest.raises(UnknownEventId):
            explain(key)
    assert lookup(" 5009 ").id == 5009


def test_docs_list_exactly_the_catalog_ids() -> None:
    document = DOCS.read_text(encoding="utf-8")
    listed = [int(match) for match in re.findall(r"^### (\d+) ", document, re.MULTILINE)]
    assert sorted(listed) == sorted(KNOWN_IDS), "docs/events.md and the catalog differ"
    assert len(listed) == len(set(listed))
    for event_id in listed:
        assert f"### {event_id} {CATALOG[event_id].name}\n" in document


def test_docs_catalog_section_is_generated_from_the_catalog() -> None:
    document = DOCS.read_text(encoding="utf-8")
    start, end = document.index(CATALOG_START), document.index(CATALOG_END) + len(CATALOG_END)
    assert document[start:end] == format_catalog_markdown(), (
        "docs/events.md is stale: run "
        "`.venv/bin/python -m poolwarden.events.render --update-docs docs/events.md`"
    )
    assert update_catalog_section(document) == document


def test_update_catalog_section_replaces_only_the_section() -> None:
    document = f"intro\n{CATALOG_START}\nSTALE-TEXT\n{CATALOG_END}\noutro\n"
    updated = update_catalog_section(document)
    assert updated.startswith("intro\n") and updated.endswith("\noutro\n")
    assert "STALE-TEXT" not in updated and "### 5009 worker_ended_unexpectedly" in updated
    with pytest.raises(ValueError):
        update_catalog_section("no markers")
