"""Recipes are files: each loads into its command's typed config, and `--config recipe.yaml` on the
command line gives exactly the config the demo runs."""

import dataclasses

import pytest

from s2r import recipes
from s2r.cli import build_parser
from s2r.config import ConfigError, from_args
from s2r.train.offline import OfflineConfig
from s2r.train.rl import RLConfig
from s2r.train.score import ScoreConfig
from s2r.train.sft import SFTConfig

ARITH = {"arith/sft": SFTConfig, "arith/orl": RLConfig, "arith/prl": RLConfig, "arith/offline": OfflineConfig,
         "arith/score": ScoreConfig}
REQUIRED = {SFTConfig: dict(data="d.jsonl", model="m"), RLConfig: dict(model="m"), OfflineConfig: dict(model="m"),
            ScoreConfig: dict(model="m")}


@pytest.mark.parametrize("name", ARITH)
def test_every_recipe_loads_into_its_config(name):
    cls = ARITH[name]
    cfg = recipes.load(cls, name, **REQUIRED[cls])
    for key, value in recipes.values(name).items():
        assert getattr(cfg, key) == value, key


@pytest.mark.parametrize("name, command, positional", [
    ("arith/prl", "rl", ["runs/bi/model"]), ("arith/orl", "rl", ["runs/bi/model"]),
    ("arith/offline", "offline", ["runs/bi/model"]), ("arith/sft", "sft", ["bi.jsonl", "--model", "base"]),
    ("arith/score", "score", ["runs/bi/model"]),
])
def test_the_command_line_with_a_recipe_gives_the_recipe(name, command, positional):
    ns = build_parser().parse_args([command, *positional, "--config", str(recipes.path(name)), "--out", "o"])
    cls = ARITH[name]
    from_cli = from_args(cls, ns)
    direct = recipes.load(cls, name, out="o", **({"data": "bi.jsonl", "model": "base"} if cls is SFTConfig
                                                 else {"model": "runs/bi/model"}))
    assert dataclasses.asdict(from_cli) == dataclasses.asdict(direct)


def test_a_recipe_with_an_unknown_key_or_name_is_an_error(tmp_path, monkeypatch):
    (tmp_path / "bad.yaml").write_text("lr: 1e-3\nlearning_rate: 2\n")
    monkeypatch.setattr(recipes, "ROOT", tmp_path)
    with pytest.raises(ConfigError, match="unknown setting.*learning_rate"):
        recipes.load(RLConfig, "bad", model="m")
    with pytest.raises(ConfigError, match="no recipe 'nope'"):
        recipes.path("nope")


def test_exponent_notation_without_a_dot_is_a_number(tmp_path, monkeypatch):
    (tmp_path / "r.yaml").write_text("lr: 1e-3\nkl_coef: 5E-2\nsystem: '1e-3'\n")
    monkeypatch.setattr(recipes, "ROOT", tmp_path)
    cfg = recipes.load(RLConfig, "r", model="m")
    assert (cfg.lr, cfg.kl_coef, cfg.system) == (1e-3, 5e-2, "1e-3")


GPU = sorted(str(p.relative_to(recipes.ROOT).with_suffix("")) for p in (recipes.ROOT / "gpu").glob("*.yaml"))


def test_every_training_command_has_a_gpu_recipe():
    assert {name.rsplit("-", 1)[1] for name in GPU} == {"sft", "orl", "prl", "offline", "score"}


@pytest.mark.parametrize("name", GPU)
def test_gpu_recipes_have_the_paper_settings(name):
    kind = name.rsplit("-", 1)[1]
    cls = {"sft": SFTConfig, "orl": RLConfig, "prl": RLConfig, "offline": OfflineConfig, "score": ScoreConfig}[kind]
    cfg = recipes.load(cls, name, **{k: v for k, v in REQUIRED[cls].items() if k not in recipes.values(name)})
    if kind == "sft":
        assert (cfg.lr, cfg.batch_size, cfg.epochs, cfg.kl_coef) == (5e-6, 32, 3, 0.01)
    elif kind in ("orl", "prl"):
        cfg.check()
        assert (cfg.lr, cfg.prompts, cfg.samples, cfg.updates) == (5e-7, 64, 4, 4)
        assert cfg.level == {"orl": "outcome", "prl": "process"}[kind]
    elif kind == "score":  # SCoRe: α = 10, β2 = 10 β1, temperature 1, one on-policy step per iteration
        cfg.check()
        assert (cfg.alpha, cfg.kl_betas, cfg.temperature, cfg.updates) == (10.0, (0.1, 0.01), 1.0, 1)
    assert cfg.gradient_checkpointing and cfg.strategy == ("ddp" if "1.5b" in name else "fsdp")


def test_a_shipped_recipe_by_name_on_the_command_line():
    ns = build_parser().parse_args(["rl", "m", "--config", "arith/prl", "--out", "o"])
    assert from_args(RLConfig, ns) == recipes.load(RLConfig, "arith/prl", model="m", out="o")
    with pytest.raises(ConfigError, match="no recipe 'arith/nope'.*arith/prl"):
        from_args(RLConfig, build_parser().parse_args(["rl", "m", "--config", "arith/nope"]))


# The paper's settings (the method page, §3) are what `s2r rl` and `s2r offline` do by default; the GPU
# recipes add only where and how fast they run (sharding, precision, lengths, batch sizes).
HARDWARE = {"strategy", "gradient_checkpointing", "bf16", "micro_batch_size", "generation_batch_size", "max_tokens",
            "ckpt_every", "level", "iterations", "kl_coef"}


@pytest.mark.parametrize("name, cls", [("gpu/qwen2.5-math-7b-prl", RLConfig), ("gpu/qwen2.5-math-7b-orl", RLConfig),
                                       ("gpu/qwen2.5-math-7b-offline", OfflineConfig)])
def test_command_defaults_are_the_papers_recipe(name, cls):
    default = cls(model="m")
    for key, value in recipes.values(name).items():
        if key not in HARDWARE:
            assert getattr(default, key) == value, (name, key)
    if cls is RLConfig:  # METHOD §3: lr 5e-7, 64 prompts × 4 samples, 4 optimiser steps, ε 0.2, T 0.7, β 0.05
        assert (default.lr, default.prompts, default.samples, default.updates, default.clip_eps, default.temperature,
                default.kl_coef, default.gamma) == (5e-7, 64, 4, 4, 0.2, 0.7, 0.05, 0.0)
    else:  # offline: 8 samples at T 0.8, band [0.1, 0.7], lr 1e-6, KL 0.15, one epoch
        assert (default.samples, default.temperature, default.band, default.lr, default.kl_coef, default.epochs) == \
            (8, 0.8, [0.1, 0.7], 1e-6, 0.15, 1)
