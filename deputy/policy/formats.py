"""Strict readings of the JSON Schema formats Deputy turns into Cedar extension values.

A policy decides on the value Deputy reads, the upstream runs on the value *it* reads
from the same text, so a text two reasonable parsers could read differently is
refused here (:class:`FormatError`), never normalised into one of its readings:
``"20260601"`` is June 2026 to ``datetime.fromisoformat`` and 1970-08-23 (Unix
seconds) to pydantic. Each format is read exactly as JSON Schema 2020-12 §7.3 defines
it, with ASCII digits only (RFC 5234 ``DIGIT``; Python's ``int`` and ``\\d`` also take
``"\\uff12"`` and ``"\\u0662"``), no surrounding whitespace, and is refused where the grammar
allows what an upstream cannot hold exactly:

* ``date-time`` — RFC 3339 §5.6 ``full-date "T" full-time``: seconds and an offset
  (``Z`` or ``±hh:mm``) are mandatory (a value without one is local time to pydantic and
  UTC to Cedar); ``T``/``Z`` may be lower case (the §5.6 note; they denote the same
  instant); ``-00:00`` is UTC (§4.3). Refused although the grammar has them: the leap
  second ``:60`` and year ``0000`` (Python's datetime, and so the SDK's pydantic,
  holds neither), and fraction digits past the millisecond unless they are zeros (Cedar
  holds milliseconds; cutting would move a value across a bound). The Cedar value keeps
  the offset, which Cedar applies (``…T00:00:00+14:00`` is the instant ``…-1 T10:00Z``).
* ``date`` — RFC 3339 §5.6 ``full-date`` and nothing else (pydantic reads a date-time
  at midnight as its date whatever its offset, while Cedar would apply the offset).
* ``duration`` — RFC 3339 Appendix A (ISO 8601), with only the designators of fixed
  length — weeks (alone), days, hours, minutes, seconds — since a year or month has no
  one length (pydantic takes ``P1Y`` as 365 days); seconds may carry up to 3 fraction
  digits after a ``.`` (ISO 8601 §4.4.3.2; Cedar's ``ms``); no sign; within Cedar's range.
* ``ipv4`` — RFC 2673 §3.2 dotted-quad, each part 0-255 *without leading zeros*
  (``010.0.0.1`` is octal 8.0.0.1 to ``inet_aton``); no prefix length, no shorthand.
* ``ipv6`` — RFC 4291 §2.2 text forms, without a zone id (RFC 6874 ``%eth0`` is no
  part of the address) and never an IPv4-mapped or IPv4-compatible address
  (``::ffff:10.0.0.1``, RFC 4291 §2.5.5): a dual-stack host reaches it as the IPv4
  address, while Cedar sees an IPv6 one outside every IPv4 range.

Each reader returns the argument of the Cedar extension constructor (``datetime``,
``duration``, ``ip``) denoting exactly the same value.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from typing import Final

_DATE = r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
FULL_DATE: Final = re.compile(_DATE + r"\Z")
DATE_TIME: Final = re.compile(
    _DATE + r"[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))\Z")
DURATION: Final = re.compile(
    r"P(?:([0-9]+)W|(?:([0-9]+)D)?(?:T(?:([0-9]+)H)?(?:([0-9]+)M)?(?:([0-9]+)(?:\.([0-9]{1,3}))?S)?)?)\Z")
DECBYTE: Final = re.compile(r"(?:0|[1-9][0-9]{0,2})\Z")
IPV6_TEXT: Final = re.compile(r"[0-9A-Fa-f:.]+\Z")
CEDAR_MS_MAX: Final = 2**63 - 1
_IPV4_MAPPED: Final = ipaddress.IPv6Network("::ffff:0:0/96")
_IPV4_COMPATIBLE: Final = ipaddress.IPv6Network("::/96")
_UNITS_MS: Final = (7 * 86_400_000, 86_400_000, 3_600_000, 60_000, 1000)


class FormatError(ValueError):
    """The text is not in the strict form of its format; the message says why, never quoting the text (it may be
    a secret, and the message reaches the client and the audit log)."""


def _calendar_date(year: str, month: str, day: str) -> dt.date:
    if year == "0000":
        raise FormatError("year 0000 is not a date the upstream can hold")
    try:
        return dt.date(int(year), int(month), int(day))
    except ValueError:
        raise FormatError("the date is no day of the calendar") from None


def full_date(text: str) -> str:
    """RFC 3339 §5.6 ``full-date`` → Cedar ``datetime`` argument (midnight UTC of that day)."""
    match = FULL_DATE.match(text)
    if match is None:
        raise FormatError("not an RFC 3339 full-date (YYYY-MM-DD)")
    return _calendar_date(*match.groups()).isoformat()


def date_time(text: str) -> str:
    """RFC 3339 §5.6 ``date-time`` → Cedar ``datetime`` argument for the same instant."""
    match = DATE_TIME.match(text)
    if match is None:
        raise FormatError("not an RFC 3339 date-time (YYYY-MM-DDThh:mm:ss[.fff] and Z or ±hh:mm)")
    year, month, day, hour, minute, second, fraction, zulu, sign, off_hour, off_minute = match.groups()
    date = _calendar_date(year, month, day)
    if int(hour) > 23 or int(minute) > 59:
        raise FormatError("the time is no time of day (hour 00-23, minute 00-59)")
    if int(second) > 59:
        raise FormatError("a leap second (:60) is not a time the upstream can hold")
    stamp = f"{date.isoformat()}T{hour}:{minute}:{second}"
    if fraction is not None:
        if fraction[3:].strip("0"):
            raise FormatError("finer than a millisecond, which is all Cedar holds; not truncated")
        stamp += "." + fraction[:3].ljust(3, "0")
    if zulu is not None:
        return stamp + "Z"
    if int(off_hour) > 23 or int(off_minute) > 59:  # RFC 3339 §5.6: time-numoffset hour 00-23, minute 00-59
        raise FormatError("the offset is no offset (hour 00-23, minute 00-59)")
    if off_hour == off_minute == "00":  # +00:00 and -00:00 (§4.3) are both UTC
        return stamp + "Z"
    return f"{stamp}{sign}{off_hour}{off_minute}"


def duration(text: str) -> str:
    """An ISO 8601 duration of weeks, days, hours, minutes, seconds → Cedar ``duration`` argument."""
    match = DURATION.match(text)
    if match is None or text in ("P", "PT") or text.endswith("T"):
        raise FormatError("not an ISO 8601 duration in weeks, days, hours, minutes and seconds (P…W, P…DT…H…M…S)")
    *amounts, fraction = match.groups()
    millis = (int(fraction.ljust(3, "0")) if fraction else 0) + sum(
        int(amount) * unit for amount, unit in zip(amounts, _UNITS_MS, strict=True) if amount is not None)
    if millis > CEDAR_MS_MAX:
        raise FormatError("longer than Cedar's duration can hold")
    parts = [(millis // 86_400_000, "d"), (millis // 3_600_000 % 24, "h"), (millis // 60_000 % 60, "m"),
             (millis // 1000 % 60, "s"), (millis % 1000, "ms")]
    return "".join(f"{amount}{unit}" for amount, unit in parts if amount) or "0ms"


def ipv4(text: str) -> str:
    """RFC 2673 §3.2 dotted-quad → Cedar ``ip`` argument."""
    parts = text.split(".")
    if len(parts) != 4 or not all(DECBYTE.match(part) and int(part) <= 255 for part in parts):
        raise FormatError("not an IPv4 address in dotted-quad form (four parts 0-255, no leading zeros)")
    return text


def ipv6(text: str) -> str:
    """RFC 4291 §2.2 text form → Cedar ``ip`` argument (RFC 5952 canonical text)."""
    if not IPV6_TEXT.match(text):  # no zone id, prefix, brackets, whitespace or non-ASCII digits
        raise FormatError("not an IPv6 address (RFC 4291 §2.2)")
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError:
        raise FormatError("not an IPv6 address (RFC 4291 §2.2)") from None
    if address in _IPV4_MAPPED or (address in _IPV4_COMPATIBLE and int(address) > 1):
        raise FormatError("an IPv4-mapped or IPv4-compatible address (RFC 4291 §2.5.5): write the IPv4 address")
    return str(address)
