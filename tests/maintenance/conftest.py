"""Shared fixtures for the maintenance tests: a real state folder, outbox and job store."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from stemd.config import Config
from stemd.maintenance.cleanup import MaintenancePaths
from stemd.jobs.store import Store


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config.model_validate({"daemon": {"state_dir": tmp_path / "state"},
                                  "inbox": [{"path": tmp_path / "inbox"}],
                                  "outbox": {"path": tmp_path / "outbox"}})


@pytest.fixture
def paths(config: Config) -> MaintenancePaths:
    return MaintenancePaths.from_config(config)


@pytest.fixture
def store(config: Config) -> Iterator[Store]:
    store = Store(config.db_path)
    yield store
    store.close()
