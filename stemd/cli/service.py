"""``stemd service install|print [--user|--system]``."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

from stemd.config import Config, default_config_path
from stemd.errors import ConfigError


def service_command(config: Config, config_arg: Optional[Path], action: str,
                    scope: Optional[str], root: Optional[Path] = None) -> int:
    from stemd.service.units import ServiceSpec, detect_kind, install, render
    config_path = config.source or config_arg or default_config_path()
    if not Path(config_path).is_file():
        raise ConfigError(f"The service needs a config file, and {config_path} does not exist.",
                          "Copy config/stemd.toml there (or pass --config FILE) and edit it first.")
    scope = scope or ("system" if os.geteuid() == 0 and root is None else "user")
    kind = detect_kind()
    spec = ServiceSpec.from_config(config, Path(config_path))
    if action == "print":
        sys.stdout.write(render(kind, scope, spec))  # type: ignore[arg-type]
        return 0
    result = install(kind, scope, spec, root=root)  # type: ignore[arg-type]
    print(f"{'replaced' if result.replaced else 'wrote'} {result.path_written}")
    for note in result.notes:
        print(f"note: {note}")
    if result.next_commands:
        print("next, run:")
        for command in result.next_commands:
            print(f"  {command}")
    return 0
