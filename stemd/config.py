"""The configuration: pydantic models loaded from TOML (the only place pydantic is used).

Unknown keys, wrong types and impossible values are ``ConfigError``s naming the
key and the file. Each part of stemd receives only its own slice of the config.
"""
from __future__ import annotations

import os
import re
import string
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from stemd.worker.allocator import check_setting
from stemd.engine.types import OutputFormat, SeparationOptions
from stemd.errors import ConfigError
from stemd.units import parse_duration, parse_size

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ENV_VAR = "STEMD_CONFIG"
TEMPLATE_FIELDS = {"track", "stem", "ext", "model", "profile", "folder"}

Seconds = Annotated[float, BeforeValidator(parse_duration)]
Bytes = Annotated[int, BeforeValidator(parse_size)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DaemonConfig(_Section):
    state_dir: Path = Path("~/.local/share/stemd")
    shutdown_grace: Seconds = 60.0
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class InboxConfig(_Section):
    path: Path
    profile: str = "default"
    priority: int = 0
    subfolders: dict[str, str] = Field(default_factory=dict)


class OutboxConfig(_Section):
    path: Path = Path("~/stemd/outbox")
    template: str = "{folder}/{track}/{stem}.{ext}"
    on_conflict: Literal["rename", "overwrite", "skip"] = "rename"

    @field_validator("template")
    @classmethod
    def _check_template(cls, value: str) -> str:
        return check_template(value)


class IntakeConfig(_Section):
    settle_seconds: Optional[Seconds] = None      # None: 5 s locally, network_settle_seconds on network mounts
    network_settle_seconds: Seconds = 65.0
    after_success: Literal["archive", "delete", "keep"] = "archive"
    archive_dir: Optional[Path] = None
    failed_dir: Optional[Path] = None
    max_file_mb: float = Field(2048, gt=0)
    max_duration: Seconds = 10800.0
    min_duration: Seconds = 0.5
    empty_timeout: Seconds = 3600.0
    ignore: list[str] = Field(default_factory=list)
    extensions: list[str] = Field(default_factory=list)
    poll: Literal["auto", "always", "never"] = "auto"
    poll_interval: Seconds = 5.0
    rescan_interval: Seconds = 60.0
    follow_symlinks: bool = False


class LinksConfig(_Section):
    enabled: bool = False
    max_duration: Seconds = 3600.0
    max_filesize: Bytes = 500 * 1024 * 1024
    allowed_hosts: list[str] = Field(default_factory=list)
    allow_private: bool = False
    download_timeout: Seconds = 600.0
    rate_limit: int = Field(30, ge=0)


class ModelsConfig(_Section):
    repo: Optional[Path] = None
    offline: bool = False
    allow_pickle: bool = False

    @field_validator("repo", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value


class WorkersConfig(_Section):
    gpu: Union[Literal["auto"], Annotated[int, Field(ge=0)]] = "auto"
    cpu: Union[Literal["auto"], Annotated[int, Field(ge=0)]] = "auto"
    threads: int = Field(0, ge=0)
    memory_reserve: Bytes = parse_size("1GiB")
    memory_floor: Bytes = parse_size("256MiB")
    memory_budget: Bytes = 0
    memory_estimate: Bytes = parse_size("2GiB")
    job_timeout: Seconds = 0.0
    job_timeout_cap: Seconds = 6 * 3600.0
    stall_timeout: Seconds = 300.0
    max_attempts: int = Field(3, ge=1)
    retry_backoff: Seconds = 30.0
    max_jobs_per_worker: int = Field(50, ge=1)
    max_worker_rss: Bytes = parse_size("6GiB")
    idle_unload: Seconds = 600.0
    allocator: str = "auto"   # "auto" (per backend: jemalloc or tcmalloc, when installed), "system", or a library path

    @field_validator("allocator")
    @classmethod
    def _check_allocator(cls, value: str) -> str:
        return check_setting(value)


class EngineConfig(_Section):
    # torch by default: ONNX Runtime measured slower and 3x the memory here (docs/benchmarks.md);
    # auto: ONNX Runtime on CPU slots when installed
    backend: Literal["auto", "torch", "onnxruntime"] = "torch"


class MaintenanceConfig(_Section):
    interval: Seconds = 3600.0
    cache_ttl: Seconds = 72 * 3600.0
    cache_max_size: Bytes = parse_size("20GiB")
    min_free: Bytes = parse_size("2GiB")
    archive_retention: Seconds = 30 * 86400.0
    failed_retention: Seconds = 30 * 86400.0
    history_retention: Seconds = 90 * 86400.0
    backup_interval: Seconds = 86400.0


NOT_GPU_RESOURCES = ("CPU", "memory", "object_store_memory")


class ClusterConfig(_Section):
    engine: Literal["none", "ray"] = "none"
    address: str = "auto"
    transfer: Literal["object-store", "shared"] = "object-store"
    gpu_per_node: Union[Literal["auto"], Annotated[int, Field(ge=0)]] = "auto"
    gpu_resource: str = "GPU"
    cpu_slots_per_node: Union[Literal["auto"], Annotated[int, Field(ge=0)]] = "auto"
    scan_interval: Seconds = Field(5.0, gt=0)
    chunk_size: Bytes = Field(parse_size("8MiB"), gt=0)

    @field_validator("gpu_resource")
    @classmethod
    def _check_gpu_resource(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.:-]+", value) or value in NOT_GPU_RESOURCES:
            raise ValueError(f"{value!r} cannot count GPUs: name Ray's \"GPU\" or a custom "
                             "resource the nodes declare (ray start --resources='{\"stemd_gpu\": 1}'), "
                             "letters, digits and _.:- only")
        return value


class ProfileConfig(_Section):
    model: str = "htdemucs"
    two_stems: Optional[str] = None
    other_method: Literal["add", "minus", "none"] = "add"
    shifts: int = Field(1, ge=0, le=20)
    overlap: float = Field(0.25, ge=0.0, lt=1.0)
    segment: Optional[float] = Field(None, gt=0)
    device: Literal["auto", "gpu", "cpu"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    batch_size: int = Field(0, ge=0)
    format: Literal["wav", "flac", "mp3"] = "wav"
    wav_depth: Literal["int16", "int24", "float32"] = "int16"
    mp3_bitrate: int = Field(320, ge=32, le=320)
    mp3_preset: int = Field(2, ge=2, le=7)
    clip: Literal["rescale", "clamp", "none"] = "rescale"
    template: Optional[str] = None
    priority: int = 0
    skip_silent: bool = False

    @field_validator("template")
    @classmethod
    def _check_template(cls, value: Optional[str]) -> Optional[str]:
        return None if value is None else check_template(value)

    @model_validator(mode="after")
    def _check_depth(self) -> "ProfileConfig":
        if self.format == "flac" and self.wav_depth == "float32":
            raise ValueError("flac cannot hold float32 samples: use wav_depth int16 or int24")
        return self

    def separation_options(self) -> SeparationOptions:
        fmt = OutputFormat(kind=self.format, wav_depth=self.wav_depth,
                           mp3_bitrate=self.mp3_bitrate, mp3_preset=self.mp3_preset)
        return SeparationOptions(
            model=self.model, two_stems=self.two_stems, other_method=self.other_method,
            shifts=self.shifts, overlap=self.overlap, segment=self.segment, clip=self.clip,
            precision=self.precision, batch_size=self.batch_size, format=fmt,
            skip_silent=self.skip_silent)


class WebConfig(_Section):
    enabled: bool = True
    listen: str = "127.0.0.1:8421"
    token_file: Optional[Path] = None             # None: <state_dir>/web-token
    max_upload: Optional[Bytes] = None            # None: intake.max_file_mb
    metrics_public: bool = False

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        split_listen(value)
        return value

    @field_validator("token_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value


class NotifyConfig(_Section):
    url: str
    events: list[Literal["queued", "started", "done", "failed", "canceled"]] = ["done", "failed"]
    headers: dict[str, str] = Field(default_factory=dict)
    retry_backoff: Seconds = 10.0
    retry_for: Seconds = 24 * 3600.0

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if "://" not in value:
            raise ValueError("must be an http(s):// webhook or an Apprise URL such as ntfy://...")
        return value

    @field_validator("retry_for")
    @classmethod
    def _at_least_an_hour(cls, value: float) -> float:
        if value < 3600:
            raise ValueError("must be at least 1h: a receiver may be down for a while")
        return value


def split_listen(value: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (``"[::1]:8421"`` for IPv6) -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        raise ValueError(f"{value!r} is not HOST:PORT (e.g. \"127.0.0.1:8421\")")
    return host.strip("[]"), int(port)


class Config(_Section):
    daemon: DaemonConfig = Field(default_factory=DaemonConfig)
    inbox: list[InboxConfig] = Field(default_factory=lambda: [InboxConfig(path=Path("~/stemd/inbox"))])
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    intake: IntakeConfig = Field(default_factory=IntakeConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    workers: WorkersConfig = Field(default_factory=WorkersConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    maintenance: MaintenanceConfig = Field(default_factory=MaintenanceConfig)
    links: LinksConfig = Field(default_factory=LinksConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    profiles: dict[str, ProfileConfig] = Field(default_factory=lambda: {"default": ProfileConfig()})
    web: WebConfig = Field(default_factory=WebConfig)
    notify: list[NotifyConfig] = Field(default_factory=list)
    source: Optional[Path] = Field(None, exclude=True)

    @model_validator(mode="after")
    def _check_profiles(self) -> "Config":
        for index, inbox in enumerate(self.inbox):
            names = [inbox.profile, *inbox.subfolders.values()]
            for name in names:
                if name not in self.profiles:
                    raise ValueError(f"inbox {index + 1} ({inbox.path}) uses profile {name!r}, "
                                     f"which is not defined; defined: {sorted(self.profiles)}")
        return self

    # -- derived paths -------------------------------------------------------------
    @property
    def state_dir(self) -> Path:
        return self.daemon.state_dir

    @property
    def db_path(self) -> Path:
        return self.state_dir / "stemd.sqlite3"

    @property
    def archive_dir(self) -> Path:
        return self.intake.archive_dir or self.state_dir / "archive"

    @property
    def failed_dir(self) -> Path:
        return self.intake.failed_dir or self.state_dir / "failed"

    @property
    def cache_dir(self) -> Path:
        return self.state_dir / "cache"

    @property
    def export_dir(self) -> Path:
        """The engine's exported networks (ONNX), one file per model and versions."""
        return self.state_dir / "exports"

    @property
    def staging_dir(self) -> Path:
        """Staging lives on the outbox's filesystem so that publishing is a rename."""
        return self.outbox.path / ".stemd-staging"

    @property
    def web_token_file(self) -> Path:
        return self.web.token_file or self.state_dir / "web-token"

    @property
    def web_max_upload(self) -> int:
        return self.web.max_upload or int(self.intake.max_file_mb * 1e6)

    @property
    def upload_dir(self) -> Path:
        """Files uploaded through the web server, saved whole before intake takes them."""
        return self.state_dir / "uploads"

    def template_for(self, profile: str) -> str:
        return self.profiles[profile].template or self.outbox.template


def check_template(template: str) -> str:
    """A template is a relative path; ``{stem}`` only in the last part, which needs a folder."""
    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    unknown = fields - TEMPLATE_FIELDS
    if unknown:
        raise ValueError(f"unknown field(s) {sorted(unknown)}; use {sorted(TEMPLATE_FIELDS)}")
    parts = template.replace("\\", "/").split("/")
    if template.startswith("/") or ".." in parts:
        raise ValueError("must be a relative path inside the outbox (no leading / and no ..)")
    if "stem" not in fields or "{stem}" not in parts[-1]:
        raise ValueError("the file name (last part) must contain {stem}")
    if len([p for p in parts[:-1] if p != "{folder}"]) < 1 or any("{stem}" in part for part in parts[:-1]):
        raise ValueError("stems go into a folder per track: e.g. {track}/{stem}.{ext}")
    return template


def user_config_path() -> Path:
    """The user's config file: ``$XDG_CONFIG_HOME/stemd/stemd.toml`` (``~/.config`` by default)."""
    return Path(os.environ.get("XDG_CONFIG_HOME") or "~/.config").expanduser() / "stemd" / "stemd.toml"


def default_config_path() -> Path:
    """``$STEMD_CONFIG``, else the user's config folder, else ``/etc/stemd/stemd.toml``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    for candidate in (user_config_path(), Path("/etc/stemd/stemd.toml")):
        if candidate.exists():
            return candidate
    return user_config_path()


def load_config(path: Optional[Path] = None) -> Config:
    """Load and validate a config file; a missing default file gives the built-in defaults."""
    explicit = path is not None or bool(os.environ.get(ENV_VAR))
    path = Path(path).expanduser() if path is not None else default_config_path()
    if not path.exists():
        if explicit:
            raise ConfigError(f"Config file {path} does not exist.",
                              "Create it (see config/stemd.toml for every key) or point "
                              f"--config / {ENV_VAR} at an existing file.")
        return _resolve(Config(), Path.cwd(), None)
    return parse_config(_read_toml(path), path)


def parse_config(data: dict[str, Any], path: Path) -> Config:
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        from stemd.configmsg import describe
        text = _text_of(path)
        raise ConfigError(f"Invalid config {path}: {describe(exc.errors(), text, known_keys)}",
                          "Fix it in that file; config/stemd.toml documents every key and "
                          "its default.") from None
    return _resolve(config, path.parent, path)


def _text_of(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def known_keys(table: tuple[Any, ...]) -> list[str]:
    """The keys a table of the config may hold (for "did you mean")."""
    model: Any = Config
    for part in table:
        if model is Config and part == "profiles":
            model = "profiles"
        elif model == "profiles":
            model = ProfileConfig
        elif model is Config and part == "inbox":
            model = "inbox"
        elif model == "inbox":
            model = InboxConfig
        elif model is Config and part in Config.model_fields:
            model = Config.model_fields[part].annotation
        else:
            return []
    return [k for k in getattr(model, "model_fields", {}) if k != "source"]


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Config file {path} is not valid TOML: {exc}.",
                          "Fix the syntax at the line named above.") from None
    except OSError as exc:
        raise ConfigError(f"Cannot read config file {path}: {exc.strerror}.",
                          "Check that the file exists and is readable by this user.") from None


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors()[:5]:
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        if error["type"] == "extra_forbidden":
            problems.append(f"unknown key '{key}'")
        else:
            problems.append(f"'{key}': {error['msg']}")
    more = len(exc.errors()) - len(problems)
    return "; ".join(problems) + (f" (and {more} more)" if more > 0 else "")


def _resolve(config: Config, base: Path, source: Optional[Path]) -> Config:
    """Expand ``~`` and make relative paths relative to the config file's folder."""
    def fix(value: Optional[Path]) -> Optional[Path]:
        if value is None:
            return None
        value = Path(os.path.expandvars(str(value))).expanduser()
        return value if value.is_absolute() else (base / value).resolve()

    inboxes = [inbox.model_copy(update={"path": fix(inbox.path)}) for inbox in config.inbox]
    return config.model_copy(update={
        "daemon": config.daemon.model_copy(update={"state_dir": fix(config.daemon.state_dir)}),
        "inbox": inboxes,
        "outbox": config.outbox.model_copy(update={"path": fix(config.outbox.path)}),
        "intake": config.intake.model_copy(update={"archive_dir": fix(config.intake.archive_dir),
                                                   "failed_dir": fix(config.intake.failed_dir)}),
        "models": config.models.model_copy(update={"repo": fix(config.models.repo)}),
        "web": config.web.model_copy(update={"token_file": fix(config.web.token_file)}),
        "source": source,
    })


def to_toml_dict(config: Config) -> dict[str, Any]:
    """The effective config as plain data (for ``stemd config show``), durations and sizes
    with their units as the config file writes them."""
    data = config.model_dump(mode="json", exclude_none=True)
    for section, field in Config.model_fields.items():
        model = field.annotation
        for key, info in getattr(model, "model_fields", {}).items():
            unit = _unit_of(info)
            if unit is not None and data.get(section, {}).get(key) is not None:
                data[section][key] = unit(data[section][key])
    return data


def _unit_of(info: Any) -> Any:
    """``duration_text`` for a ``Seconds`` field, ``size_text`` for a ``Bytes`` one, else None."""
    from typing import get_args
    from stemd.units import duration_text, size_text
    validators = list(info.metadata) + [m for arg in get_args(info.annotation)
                                        for m in getattr(arg, "__metadata__", ())]
    for validator in validators:
        func = getattr(validator, "func", None)
        if func is parse_duration:
            return duration_text
        if func is parse_size:
            return size_text
    return None
