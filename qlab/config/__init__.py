"""instruments.yaml: schema, loader and line-aware validation."""

from qlab.config.loader import (
           DEFAULT_CONFIG_NAME,
           LoadedConfig,
           builtin_config_path,
           load_config,
           resolve_config,
)
from qlab.config.schema import LabConfig

__all__ = ["DEFAULT_CONFIG_NAME", "LabConfig", "LoadedConfig", "builtin_config_path", "load_config",
           "resolve_config"]
