"""``stemd models list|fetch|import``."""
from __future__ import annotations

import sys
from pathlib import Path

from stemd.config import Config
from stemd.engine.types import ModelSource


def models_command(config: Config, action: str, args: list[str]) -> int:
    from stemd import engine
    source = ModelSource(config.models.repo, config.models.offline, config.models.allow_pickle)
    if action == "list":
        for info in engine.list_models(source):
            where = f"{info.where}: {info.path}" if info.available else "not available"
            members = f"{info.members} model(s)" if info.members else ""
            stems = ", ".join(info.sources)
            print(f"{'*' if info.available else ' '} {info.name:<14} {where}  {members} {stems}".rstrip())
        print("(* = available here; others: stemd models fetch NAME on a connected machine, "
              "or [models] repo)")
        return 0
    if action == "fetch":
        if not args:
            print("stemd: models fetch needs a NAME (see stemd models list)", file=sys.stderr)
            return 2
        for name in args:
            info = engine.fetch_model(name)
            print(f"fetched {name} into {info.path}")
        return 0
    if not args:
        print("stemd: models import needs FOLDER [NAME]", file=sys.stderr)
        return 2
    dest = config.models.repo or config.state_dir / "models"
    info = engine.import_model(Path(args[0]), dest, args[1] if len(args) > 1 else None,
                               allow_pickle=config.models.allow_pickle)
    print(f"imported model {info.name} into {dest}")
    for line in _after_import(config, dest):
        print(line)
    return 0


def _after_import(config: Config, dest: Path) -> list[str]:
    """Which file to edit (when the repo is not set yet) and which profile uses which model."""
    from stemd.config import user_config_path
    lines = []
    if config.models.repo is None:
        where = config.source or user_config_path()
        lines.append(f"to use it, edit {where}: under [models] set repo = \"{dest}\", "
                     "then run `stemd reload`")
    else:
        lines.append("the running daemon uses it for the next job (stemd retry ID for a failed one)")
    for name, profile in sorted(config.profiles.items()):
        lines.append(f"profile {name} uses model {profile.model}")
    return lines
