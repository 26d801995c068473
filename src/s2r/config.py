"""One typed config dataclass per command; flags and YAML files are two views of it.

    @dataclass
    class CheckConfig:
        input: str = arg(help="records to grade", positional=True)
        timeout: float = arg(2.0, help="seconds per comparison")

`add_arguments(parser, CheckConfig)` makes `INPUT --timeout X --config FILE.yaml`;
`from_args(CheckConfig, ns)` builds the config: defaults, then the YAML file, then the flags given.
Unknown YAML keys and wrong types are errors. Field help is the documentation (`s2r CMD --help`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    pass


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads `1e-3` (no dot) as a string; settings files mean the number."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*)?(?:\.\d*)?[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def load_yaml(path: str | os.PathLike) -> Any:
    """A settings file's content (numbers in exponent notation read as floats); ConfigError naming
    the file when it cannot be read or parsed."""
    try:
        return yaml.load(Path(path).read_text(), Loader=_Loader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read settings: {e.strerror if isinstance(e, OSError) else e}") from None


def arg(default: Any = dataclasses.MISSING, *, help: str, positional: bool = False, nargs: str | None = None,
        secret: bool = False):
    """A config field with its documentation. No default = required. A secret (an API key) is never
    recorded: `to_dict` writes "<set>" or null in its place."""
    kwargs: dict[str, Any] = {"metadata": {"help": help, "positional": positional, "nargs": nargs, "secret": secret}}
    if isinstance(default, list):
        kwargs["default_factory"] = lambda d=default: list(d)
    elif default is not dataclasses.MISSING:
        kwargs["default"] = default
    return dataclasses.field(**kwargs)


def _base_type(tp: Any) -> tuple[Any, bool, bool]:
    """(element type, optional, is_list) of an annotation such as `int | None` or `list[str]`."""
    optional = False
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        tp = args[0]
    if typing.get_origin(tp) is list:
        return typing.get_args(tp)[0], optional, True
    return tp, optional, False


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, optional, is_list = _base_type(hints[f.name])
        meta = f.metadata
        help_text = meta.get("help", "")
        if f.default is not dataclasses.MISSING:
            help_text += f" (default: {f.default})"
        elif f.default_factory is not dataclasses.MISSING:
            help_text += f" (default: {' '.join(map(str, f.default_factory()))})"
        elif not meta.get("positional"):
            help_text += " (required)"
        kwargs: dict[str, Any] = {"help": help_text, "default": argparse.SUPPRESS}
        if tp is bool:
            kwargs["type"] = _bool
            kwargs["metavar"] = "BOOL"
        else:
            kwargs["type"] = tp
        if is_list:
            kwargs["nargs"] = meta.get("nargs") or "+"
        if meta.get("positional"):
            kwargs.pop("default")
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
                kwargs["nargs"] = "?" if not is_list else "*"
                kwargs["default"] = argparse.SUPPRESS
            parser.add_argument(f.name, **kwargs)
        else:
            parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, **kwargs)
    parser.add_argument("--config", dest="_config", default=None, metavar="FILE.yaml|RECIPE",
                        help="read settings from a YAML file, or a recipe shipped with s2r by name (arith/prl, "
                             "gpu/qwen2.5-math-7b-sft, ...); flags given on the command line win")


def from_dict(cls: type[T], values: dict[str, Any], source: str = "config") -> T:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{source}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    hints = typing.get_type_hints(cls)
    secret = {f.name for f in dataclasses.fields(cls) if f.metadata.get("secret")}
    for name, value in values.items():
        tp, optional, is_list = _base_type(hints[name])
        if value is None and optional:
            continue
        ok = isinstance(value, list) and all(_fits(v, tp) for v in value) if is_list else _fits(value, tp)
        if not ok:
            shown = f"a {type(value).__name__}" if name in secret else repr(value)
            raise ConfigError(f"{source}: {name} must be {hints[name]}, got {shown}")
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{source}: missing required setting(s) {', '.join(missing)}")
    return cls(**values)


def _fits(value: Any, tp: Any) -> bool:
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def from_args(cls: type[T], ns: argparse.Namespace) -> T:
    values: dict[str, Any] = {}
    config_file = getattr(ns, "_config", None)
    if config_file and not Path(config_file).exists() and not config_file.endswith((".yaml", ".yml")):
        from s2r import recipes  # a recipe shipped with s2r, by name: --config arith/prl

        config_file = str(recipes.path(config_file))
    if config_file:
        loaded = load_yaml(config_file) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{config_file}: expected a mapping of settings")
        values.update(loaded)
    names = {f.name for f in dataclasses.fields(cls)}
    values.update({k: v for k, v in vars(ns).items() if k in names})
    return from_dict(cls, values, source=config_file or "command line")


def to_dict(config: Any) -> dict[str, Any]:
    """A config as a dict for recording (metrics.json, report.html, run info files): the one way a
    config reaches an output, with every secret field replaced by "<set>" (or None when unset)."""
    values = dataclasses.asdict(config)
    for f in dataclasses.fields(config):
        if f.metadata.get("secret"):
            values[f.name] = "<set>" if values[f.name] else None
    return values


def cache_root(override: str | None = None) -> Path:
    """Where trained models and verifications are kept for reuse: `override`, else $S2R_CACHE, else
    ~/.cache/s2r."""
    return Path(override or os.environ.get("S2R_CACHE") or Path.home() / ".cache" / "s2r")
