"""The GPU recipes (src/s2r/recipes/gpu) load as the configs of their commands."""

from importlib.resources import files

import pytest
import yaml

from s2r.config import from_dict
from s2r.train.offline import OfflineConfig
from s2r.train.rl import RLConfig
from s2r.train.sft import SFTConfig

RECIPES = sorted(p.name for p in files("s2r").joinpath("recipes", "gpu").iterdir() if p.name.endswith(".yaml"))


def test_every_command_has_a_recipe():
    assert {r.rsplit("-", 1)[1] for r in RECIPES} == {"sft.yaml", "orl.yaml", "prl.yaml", "offline.yaml"}


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_loads(name):
    values = yaml.safe_load(files("s2r").joinpath("recipes", "gpu", name).read_text())
    kind = name.rsplit("-", 1)[1].removesuffix(".yaml")
    if kind == "sft":
        cfg = from_dict(SFTConfig, {"data": "bi.jsonl", **values}, name)
        assert (cfg.lr, cfg.batch_size, cfg.epochs, cfg.kl_coef) == (5e-6, 32, 3, 0.01)
    elif kind == "offline":
        from_dict(OfflineConfig, {**values, "model": "m"}, name)
    else:
        cfg = from_dict(RLConfig, {**values, "model": "m"}, name)
        cfg.check()
        assert (cfg.lr, cfg.prompts, cfg.samples, cfg.updates) == (5e-7, 64, 4, 4)
        assert cfg.level == {"orl": "outcome", "prl": "process"}[kind]
