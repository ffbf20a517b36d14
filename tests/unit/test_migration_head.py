"""The storage's idea of the newest migration is alembic's: otherwise a start would skip a new migration."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from deputy.storage.db import HEAD_REVISION, MIGRATIONS, at_head


def test_head_revision_is_alembics_head() -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_heads() == [HEAD_REVISION]


def test_at_head_only_when_the_one_row_names_the_head(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as connection:
        assert not at_head(connection)  # no alembic_version table: a fresh database
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
    raw.execute("INSERT INTO alembic_version VALUES ('0013')")
    raw.commit()
    with engine.connect() as connection:
        assert not at_head(connection)
    raw.execute("UPDATE alembic_version SET version_num = ?", (HEAD_REVISION,))
    raw.commit()
    with engine.connect() as connection:
        assert at_head(connection)
    raw.execute("INSERT INTO alembic_version VALUES ('0013')")
    raw.commit()
    with engine.connect() as connection:
        assert not at_head(connection)
    raw.close()
    engine.dispose()
