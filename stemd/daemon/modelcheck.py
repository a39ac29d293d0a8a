"""The start-up model check, repeated now and then: which profile's model is missing.

Each missing model is logged once as a WARNING naming the profiles and the one thing
to do, and is listed under ``problems`` in the status file (``stemd status``).
"""
from __future__ import annotations

import logging
import time
from typing import Any, Optional

from stemd.config import Config
from stemd.engine.lookup import missing_models
from stemd.engine.types import ModelSource

log = logging.getLogger(__name__)

RECHECK_EVERY = 30.0


class ModelCheck:
    def __init__(self) -> None:
        self.problems: list[dict[str, Any]] = []
        self._checked = float("-inf")

    def run(self, config: Config, force: bool = False, now: Optional[float] = None) -> list[dict[str, Any]]:
        """The current problems; looks again when forced or every ``RECHECK_EVERY`` seconds."""
        now = time.monotonic() if now is None else now
        if not force and now - self._checked < RECHECK_EVERY:
            return self.problems
        self._checked = now
        source = ModelSource(config.models.repo, config.models.offline, config.models.allow_pickle)
        found = [m.to_json() for m in missing_models(
            {name: p.model for name, p in config.profiles.items()}, source)]
        self._log_changes(found)
        self.problems = found
        return found

    def _log_changes(self, found: list[dict[str, Any]]) -> None:
        before = {p["model"] for p in self.problems}
        for problem in found:
            if problem["model"] not in before:
                log.warning("%s %s", problem["message"], problem["hint"])
        for model in before - {p["model"] for p in found}:
            log.info("model %s is now at hand", model)
