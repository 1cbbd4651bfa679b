"""Where robot YAMLs live and the error every configuration problem raises."""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]


class ConfigError(ValueError):
    """A configuration that cannot be used; the message says where and why."""


def default_config_dir() -> Path:
    """config/ of a source checkout, or share/cosmos_policy_ros/config when installed."""
    candidates = [PACKAGE_DIR.parent / "config"]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / "share" / "cosmos_policy_ros" / "config")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return candidates[0]


def resolve_config_path(path: str | os.PathLike) -> Path:
    """A file path, or a bare robot name (`aloha`) looked up in the config directory."""
    path = Path(path)
    if path.exists():
        return path
    named = default_config_dir() / (path.name if path.suffix else f"{path.name}.yaml")
    if named.exists():
        return named
    raise ConfigError(f"config file {str(path)!r} not found (also looked for {named})")
