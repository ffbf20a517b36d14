"""A serving process loads the MCP SDK only to read a tool catalog, and alembic only to migrate.

Each is megabytes of resident memory in every worker (issue 16: RSS); what pulls them in at import would
show here, checked in a fresh interpreter.
"""

from __future__ import annotations

import subprocess
import sys


def loaded_packages(code: str) -> set[str]:
    script = f"{code}\nimport sys\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_the_application_module_loads_neither_the_sdk_nor_alembic() -> None:
    loaded = loaded_packages("import deputy.app, deputy.gateway.tool_catalog, deputy.storage.db")
    assert "deputy" in loaded
    assert not loaded & {"mcp", "mcp_types", "alembic"}

