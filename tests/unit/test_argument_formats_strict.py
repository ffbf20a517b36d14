"""Issue 12, policy bypass by parser differential: a typed argument is read only in the strict form of its format.

``datetime.fromisoformat`` read ``"20260601"`` as June 2026 while the upstream (the MCP SDK's pydantic) read
it as Unix seconds, 1970-08-23: Cedar allowed a call it would have forbidden. Every text that two reasonable
parsers could read differently is refused as not fitting the tool's schema (a deny), and an accepted value
reaches Cedar as exactly what it denotes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from deputy.gateway.principal import Principal
from deputy.policy import ArgumentError, Outcome, PolicyEngine, build_schema
from deputy.policy.arguments import TypeCompiler

DATE_TIME = {"type": "string", "format": "date-time"}
DATE = {"type": "string", "format": "date"}
TOOL = {"name": "dated", "inputSchema": {
    "type": "object",
    "$defs": {"Window": {"type": "object", "properties": {"start": DATE, "end": {"$ref": "#/$defs/Stamp"}}},
              "Stamp": DATE_TIME},
    "properties": {
        "when": DATE_TIME,
        "day": DATE,
        "wait": {"type": "string", "format": "duration"},
        "v4": {"type": "string", "format": "ipv4"},
        "v6": {"type": "string", "format": "ipv6"},
        "price": {"type": "number"},
        "count": {"type": "integer"},
        "window": {"$ref": "#/$defs/Window"},
        "day_or_stamp": {"anyOf": [DATE, DATE_TIME]},
        "days": {"type": "array", "items": DATE},
        "stamps": {"type": "object", "additionalProperties": DATE_TIME},
    }}}
SCHEMA = build_schema([TOOL])


def convert(**arguments: Any) -> dict[str, Any]:
    _, context, _ = SCHEMA.request("tools/call", "dated", arguments)
    return dict(context["input"])


def cedar_arg(name: str, value: Any) -> str:
    return str(convert(**{name: value})[name]["__extn"]["arg"])


def refused(**arguments: Any) -> ArgumentError:
    with pytest.raises(ArgumentError) as caught:
        convert(**arguments)
    return caught.value


@pytest.mark.parametrize("text", [
    "20260601",                      # the finding: Unix seconds to pydantic, a day to fromisoformat
    "1780272000",
    "2026-06-01",                    # a date is no date-time: pydantic makes it a naive (local) midnight
    "2026-06-01T00:00:00",           # no offset: local time to the upstream, UTC to Cedar
    "2026-06-01T00:00Z",             # seconds are mandatory
    "2026-06-01 00:00:00Z",          # a space is not the RFC 3339 separator
    "2026-06-01T00:00:60Z",          # leap second: Python's datetime cannot hold it
    "2026-06-01T24:00:00Z",
    "2026-06-01T00:00:00+24:00",
    "2026-06-01T00:00:00+0100",      # ISO 8601 basic offset, not RFC 3339
    "2026-06-01T00:00:00+01:00:30",  # fromisoformat takes offset seconds
    "2026-06-01T00:00:00.Z",
    "2026-06-01T00:00:00,5Z",
    "2026-06-01T00:00:00.1234Z",     # finer than Cedar's millisecond: never truncated
    "2026-06-01T00:00:00.000001Z",
    "0000-01-01T00:00:00Z",
    "2026-02-30T00:00:00Z",
    "2026-W22-1T00:00:00Z",
    "2026-152T00:00:00Z",
    "+02026-06-01T00:00:00Z",
    "\uff12\uff10\uff12\uff16-06-01T00:00:00Z",        # fullwidth digits
    "\u0662\u0660\u0662\u0666-06-01T00:00:00Z",          # Arabic-Indic digits
    " 2026-06-01T00:00:00Z",
    "2026-06-01T00:00:00Z\n",
    "2026-06-01T00:00:00Z ",
    "",
])
def test_a_date_time_is_refused_unless_strict_rfc3339(text: str) -> None:
    error = refused(when=text)
    assert error.path == "input.when"
    assert "does not fit the tool's schema" in str(error)


@pytest.mark.parametrize("value", [1780272000, 1780272000.5, True, None, ["2026-06-01T00:00:00Z"]])
def test_a_date_time_is_a_string(value: Any) -> None:
    assert refused(when=value).path == "input.when"


@pytest.mark.parametrize("text", [
    "20260601", "1780272000", "2026-6-1", "2026-06-01T00:00:00Z",
    "2026-06-01T00:00:00+14:00",     # pydantic: the date 2026-06-01; Cedar would apply the offset (May 31)
    "0000-01-01", "2026-06-31", "\uff12\uff10\uff12\uff16-06-01", "2026-06-01 ", "2026-06-01\n",
])
def test_a_date_is_only_a_full_date(text: str) -> None:
    assert refused(day=text).path == "input.day"


@pytest.mark.parametrize("text", [
    "P1Y", "P1M", "P1Y2M3D",         # no fixed length (pydantic: a year is 365 days)
    "P", "PT", "P1DT", "p1d", "P1d", "-P1D", "+P1D", " P1D",
    "P\uff11D", "P1W2D", "PT1,5S", "PT0.0001S", "PT1.S", "P1.5D",
    "P106751991167301D",             # past Cedar's 64-bit milliseconds
])
def test_a_duration_is_refused_unless_fixed_length_iso8601(text: str) -> None:
    assert refused(wait=text).path == "input.wait"


@pytest.mark.parametrize("text", [
    "010.0.0.1",                     # octal 8.0.0.1 to inet_aton
    "10.0.0.01", "00.0.0.0", "10.1", "10.0.1", "167772161", "0x0a.0.0.1", "10.0.0.256", "10.0.0.1/8",
    "10.0.0.1.", "::ffff:10.0.0.1", "fe80::1", "\uff110.0.0.1", " 10.0.0.1", "10.0.0.1\n", "",
])
def test_an_ipv4_address_is_only_a_plain_dotted_quad(text: str) -> None:
    assert refused(v4=text).path == "input.v4"


@pytest.mark.parametrize("text", [
    "::ffff:10.0.0.1",               # IPv4-mapped: the host connects to 10.0.0.1; Cedar saw no IPv4 address
    "::ffff:a00:1", "::FFFF:0A00:0001", "::10.0.0.1", "::a00:1",
    "fe80::1%eth0", "fe80::1%1",     # a zone id is not part of the address
    "10.0.0.1", "::1/128", "[::1]", "1::2::3", "12345::", " ::1", "::1\n", "\u0660::1", "",
])
def test_an_ipv6_address_is_refused_when_it_hides_an_ipv4_one_or_is_not_rfc4291(text: str) -> None:
    assert refused(v6=text).path == "input.v6"


@pytest.mark.parametrize(("name", "value"), [
    ("count", True), ("count", "12"), ("count", 12.0), ("count", 2**63), ("count", "\uff11\uff12"),
    ("price", True), ("price", "1.5"), ("price", math.nan), ("price", math.inf), ("price", 0.00001),
])
def test_numbers_are_json_numbers_of_the_right_kind_only(name: str, value: Any) -> None:
    assert refused(**{name: value}).path == f"input.{name}"


@pytest.mark.parametrize(("arguments", "path"), [
    ({"window": {"start": "20260601"}}, "input.window.start"),
    ({"window": {"start": "2026-06-01T00:00:00Z"}}, "input.window.start"),
    ({"window": {"end": "2026-06-01"}}, "input.window.end"),        # through a $ref to a $ref
    ({"days": ["2026-06-01", "20260601"]}, "input.days[1]"),
    ({"stamps": {"a": "2026-06-01T00:00:00Z", "b": "20260601"}}, "input.stamps.b"),
    ({"day_or_stamp": "20260601"}, "input.day_or_stamp"),
])
def test_nested_formats_are_read_as_strictly(arguments: dict[str, Any], path: str) -> None:
    assert path in str(refused(**arguments))


@pytest.mark.parametrize(("text", "cedar"), [
    ("2026-06-01T00:00:00Z", "2026-06-01T00:00:00Z"),
    ("2026-06-01t10:20:30z", "2026-06-01T10:20:30Z"),            # RFC 3339 §5.6 note: same instant
    ("2026-06-01T00:00:00+14:00", "2026-06-01T00:00:00+1400"),   # the offset is kept; Cedar applies it
    ("2026-06-01T00:00:00-09:30", "2026-06-01T00:00:00-0930"),
    ("2026-06-01T00:00:00-00:00", "2026-06-01T00:00:00Z"),       # §4.3: UTC
    ("2026-06-01T00:00:00.5Z", "2026-06-01T00:00:00.500Z"),
    ("2026-06-01T00:00:00.250000Z", "2026-06-01T00:00:00.250Z"),  # zeros past the millisecond change nothing
    ("2024-02-29T23:59:59.999+00:00", "2024-02-29T23:59:59.999Z"),
])
def test_an_accepted_date_time_reaches_cedar_as_the_same_instant(text: str, cedar: str) -> None:
    assert cedar_arg("when", text) == cedar


def test_accepted_dates_durations_and_addresses_are_exactly_what_they_denote() -> None:
    assert cedar_arg("day", "2024-02-29") == "2024-02-29"
    assert cedar_arg("wait", "PT90M") == "1h30m"
    assert cedar_arg("wait", "P2W") == "14d"
    assert cedar_arg("wait", "PT0S") == "0ms"
    assert cedar_arg("wait", "PT1H1.25S") == "1h1s250ms"
    assert cedar_arg("v4", "0.0.0.0") == "0.0.0.0"
    assert cedar_arg("v4", "255.255.255.255") == "255.255.255.255"
    assert cedar_arg("v6", "2001:DB8:0:0:0:0:0:1") == "2001:db8::1"
    assert cedar_arg("v6", "::1") == "::1"
    assert cedar_arg("v6", "::") == "::"
    value = convert(window={"start": "2026-06-01", "end": "2026-06-02T00:00:00Z"}, days=["2026-06-01"],
                    day_or_stamp="2026-06-01T00:00:00+02:00")
    assert value["window"]["start"]["__extn"]["arg"] == "2026-06-01"
    assert value["window"]["end"]["__extn"]["arg"] == "2026-06-02T00:00:00Z"
    assert value["days"] == [{"__extn": {"fn": "datetime", "arg": "2026-06-01"}}]
    assert value["day_or_stamp"] == {"typeChoice1": {"__extn": {"fn": "datetime", "arg": "2026-06-01T00:00:00+0200"}}}


POLICIES = """
permit (principal, action, resource);
@id("not-before-2026") forbid (principal, action == Deputy::Action::"dated", resource)
  when { context.input has when && context.input.when < datetime("2026-01-01") };
@id("no-private-v6") forbid (principal, action == Deputy::Action::"dated", resource)
  when { context.input has v6 && context.input.v6.isInRange(ip("fc00::/7")) };
"""


@pytest.mark.parametrize(("arguments", "denied_by"), [
    ({"when": "20260601"}, ""),                              # the finding: Cedar saw June 2026, the tool ran 1970
    ({"when": "2026-06-01"}, ""),
    ({"v6": "::ffff:10.0.0.1"}, ""),
    ({"when": "2026-06-01T00:00:00Z"}, None),
    ({"when": "2026-01-01T00:30:00+01:00"}, "not-before-2026"),  # 2025-12-31T23:30Z
    ({"when": "2025-12-31T23:30:00-01:00"}, None),               # 2026-01-01T00:30Z
    ({"v6": "FD00::1"}, "no-private-v6"),
])
def test_cedar_decides_on_what_the_upstream_will_run(tmp_path: Path, arguments: dict[str, Any],
                                                     denied_by: str | None) -> None:
    """Issue 12: a policy forbidding dates before 2026 denies "20260601" (not fitting the schema), never allows it."""
    (tmp_path / "p.cedar").write_text(POLICIES)
    caller = Principal(user="u", agent="a", scopes=frozenset(), token_id="t", server="s")
    decision = PolicyEngine(tmp_path, SCHEMA).decide(caller, "tools/call", "dated", arguments)
    if denied_by is None:
        assert decision.outcome is Outcome.ALLOW, decision
    elif denied_by == "":
        assert decision.outcome is Outcome.DENY and decision.determining == (), decision
        assert "does not fit the tool's schema" in " ".join(decision.errors)
    else:
        assert decision.outcome is Outcome.DENY and decision.determining == (denied_by,), decision


def test_formats_are_found_under_stand_in_names() -> None:
    """Issue 12: tool and property names the generator cannot take (stand-ins) still get their strict format."""
    tool = {"name": "fs.touch", "inputSchema": {
        "type": "object",
        "$defs": {"leaf-node": {"type": "object", "properties": {"when-at": DATE}}},
        "properties": {"file-time": DATE_TIME, "if": DATE,
                       "kids": {"type": "array", "items": {"$ref": "#/$defs/leaf-node"}}}}}
    schema = build_schema([tool])
    for arguments, path in [({"file-time": "2026-06-01"}, "input.file-time"),
                            ({"if": "2026-06-01T00:00:00Z"}, "input.if"),
                            ({"kids": [{"when-at": "20260601"}]}, "input.kids[0].when-at")]:
        with pytest.raises(ArgumentError) as caught:
            schema.request("tools/call", "fs.touch", arguments)
        assert caught.value.path == path
    _, context, _ = schema.request("tools/call", "fs.touch", {"file-time": "2026-06-01T00:00:00Z", "if": "2026-06-01",
                                                               "kids": [{"when-at": "2026-06-02"}]})
    assert context["input"]["kids"] == [{"when-at": {"__extn": {"fn": "datetime", "arg": "2026-06-02"}}}]


def test_a_datetime_whose_format_cannot_be_found_is_refused() -> None:
    """Issue 12: without the JSON Schema node, a date cannot be told from a date-time: never guess."""
    compiler = TypeCompiler({"Deputy": {}}, "Deputy")
    when = compiler.compile({"type": "EntityOrCommon", "name": "datetime"}, "Deputy")
    with pytest.raises(ArgumentError, match="date or a date-time"):
        when("2026-06-01T00:00:00Z", "input.when", [])
    address = compiler.compile({"type": "EntityOrCommon", "name": "ipaddr"}, "Deputy")
    assert address("10.0.0.1", "input.a", []) == {"__extn": {"fn": "ip", "arg": "10.0.0.1"}}
    assert address("2001:db8::1", "input.a", []) == {"__extn": {"fn": "ip", "arg": "2001:db8::1"}}
    with pytest.raises(ArgumentError):
        address("::ffff:10.0.0.1", "input.a", [])


def test_a_tool_named_by_something_else_than_a_string_is_skipped_not_a_crash() -> None:
    """Issue 12: the format hints are keyed by tool name; a name that is no string cannot break the build."""
    schema = build_schema([{"name": ["dated"], "inputSchema": {}}, TOOL])
    assert schema.tools == frozenset({"dated"}) and "['dated']" in schema.skipped
