"""Recipes: the settings of a run, as YAML files that ship with the package.

    s2r rl runs/demo/bi/bi/model --config "$(python -c 'import s2r.recipes as r; print(r.path("arith/prl"))')"

`load(RLConfig, "arith/prl", model=..., out=...)` reads `recipes/arith/prl.yaml` into the command's
typed config, the keyword arguments overriding (the demo sets the model, output folder, seed and
sizes this way). Unknown or mistyped keys are errors, as for `--config`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from s2r.config import ConfigError, from_dict, load_yaml

T = TypeVar("T")
ROOT = Path(__file__).parent


def path(name: str) -> Path:
    """The file of recipe `name` ("arith/prl" -> .../recipes/arith/prl.yaml)."""
    p = ROOT / f"{name}.yaml"
    if not p.is_file():
        known = sorted(str(f.relative_to(ROOT).with_suffix("")) for f in ROOT.rglob("*.yaml"))
        raise ConfigError(f"no recipe {name!r}; recipes: {', '.join(known)}")
    return p


def values(name: str) -> dict[str, Any]:
    """The settings of recipe `name`, as written in its file."""
    loaded = load_yaml(path(name)) or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path(name)}: expected a mapping of settings")
    return loaded


def load(cls: type[T], name: str, **overrides: Any) -> T:
    """Recipe `name` as a `cls` config, `overrides` replacing its values."""
    return from_dict(cls, {**values(name), **overrides}, source=str(path(name)))
