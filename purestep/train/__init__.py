"""Training on top of the pure step: the YAML run configuration (the fit loop comes next)."""

from purestep.train.config import Config, ConfigError, load_config, parse_config

__all__ = ["Config", "ConfigError", "load_config", "parse_config"]
