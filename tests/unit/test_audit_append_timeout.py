"""Issue 12 (one paused replica stalls all): ``[audit] append_timeout_ms``, the bound on every sequencer transaction
(deputy.audit.sequencer), is checked at start like every other setting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deputy.audit.settings import audit_settings

PUBLIC_URL = "https://deputy.example.com"


def test_append_timeout_defaults_to_five_seconds_and_takes_a_value(tmp_path: Path) -> None:
    assert audit_settings({}, tmp_path, PUBLIC_URL).append_timeout_ms == 5000
    assert audit_settings({"append_timeout_ms": 250}, tmp_path, PUBLIC_URL).append_timeout_ms == 250


@pytest.mark.parametrize("value", [0, 99, 600_001, -1, True, "5000", 5000.0, None])
def test_an_append_timeout_out_of_range_or_not_an_integer_stops_start_up(tmp_path: Path, value: Any) -> None:
    with pytest.raises(ValueError, match=r"audit\.append_timeout_ms:"):
        audit_settings({"append_timeout_ms": value}, tmp_path, PUBLIC_URL)
