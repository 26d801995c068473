"""`s2r compare`: S²R and its relatives side by side, from one base model, on the same problems.

For each seed it takes the embedded task's base model (the shipped one for seed 0, else the cached or
freshly trained one, as `s2r demo` does), gives every method the same training problems (the
`--bi-problems` problems × `--bi-samples` sampled attempts of the base model: BI's sample), evaluates
every row on the same test problems, and writes

    DIR/results.json   {"seeds", "test_problems", "rows": {seed: [{"name", "metrics"}]},
                        "seconds": {seed: {stage: s}}, "summary": {row: {metric: mean, 95% interval}}}
    DIR/report.html    the rows' means and intervals, accuracy against tokens per problem, which
                       differences exceed the seed-to-seed spread, risk–coverage curves
    DIR/seed-S/        one demo-format results.json, report.html and rows/ per seed; models and data

Rows (docs/compare.md says what each is and where it departs from its paper):

    base, intrinsic            the base model: one greedy answer; answer + a prompted review turn
    self-rethinking            intrinsic, the review turn showing the base model's own wrong attempts
    plain-sft                  SFT on the right sampled attempts
    mistake-tuning             SFT on right and wrong attempts behind tags; inference with the right tag
    cct                        SFT of the review turn: keep a right answer, fix a wrong one
    score                      SCoRe online RL, stage I then II; inference = intrinsic with its instruction
    bi, bi-problem-solving     S²R behaviour initialisation (confirmative / problem-solving verifier)
    orl, prl                   S²R online RL from the bi model
    majority                   the prl model voting over k sampled answers, k matching prl's tokens
    dpo, dw-dpo                DPO on (right, wrong) attempt pairs; weighted by problem difficulty
    dpo-trajectories           DPO from the bi model on (right, wrong) S²R trajectory pairs
    r-tuning                   SFT with a certainty statement (sure / unsure) after the answer

A killed compare resumes: each stage reuses its finished output (the demo's mechanism). Seeds may run
apart (`--seed 1 --out DIR` on one machine, `--seed 2 --out DIR` on another); `--collect true` then
summarises the finished seeds in DIR without running anything.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from s2r import recipes
from s2r.config import arg
from s2r.demo import (PLAIN, DemoConfig, StageFields, base_config, bi_stage, format_table, matched_majority, rl_stage,
                      run_row)
from s2r.jsonl import write_atomic, write_json_atomic
from s2r.loop import Settings
from s2r.metrics import compute_metrics, load_trajectories
from s2r.models.backend import SamplingParams
from s2r.progress import announce
from s2r.tasks import arith
from s2r.tasks.arith.base import train_base

ROWS = ("base", "intrinsic", "self-rethinking", "plain-sft", "mistake-tuning", "cct", "score", "bi", "bi-problem-solving",
        "orl", "prl", "majority", "dpo", "dw-dpo", "dpo-trajectories", "r-tuning")


@dataclass
class CompareConfig(StageFields):
    out: str = arg("runs/compare", help="output folder: results.json, report.html, seed-S/")
    seed: list[int] = arg([0], help="seeds: each one's task splits, base model, sampling and training")
    trajectory_samples: int = arg(4, help="dpo-trajectories: sampled S²R trajectories of the bi model per training problem")
    collect: bool = arg(False, help="run nothing: summarise the seeds' finished runs in OUT/seed-S/ (seeds run apart, "
                                    "e.g. on several machines, then brought together)")

    def for_seed(self, seed: int) -> DemoConfig:
        """The demo's settings of one seed's stages."""
        shared = {f.name: getattr(self, f.name) for f in fields(StageFields)}
        return DemoConfig(**shared, seed=seed, out=str(Path(self.out) / f"seed-{seed}"))


@dataclass
class Seed:
    """One seed's run: its settings, the stage clock, the rows' trajectories and the vote's k."""

    cfg: DemoConfig
    seconds: dict[str, float] = field(default_factory=dict)
    runs: dict[str, list[dict]] = field(default_factory=dict)
    votes: int = 0

    @property
    def out(self) -> Path:
        return Path(self.cfg.out)

    def timed(self, name: str, fn, *args, label: str = "", **kwargs):
        """fn(*args, **kwargs), its wall clock added to seconds[name], between `started` / `done` lines."""
        t = time.monotonic()
        with announce(f"compare seed {self.cfg.seed}: {label or name}"):
            result = fn(*args, **kwargs)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.monotonic() - t
        return result

    def row(self, name: str, strategy: str, model: Path, jobs, settings: Settings) -> list[dict]:
        return self.timed("evaluation", run_row, name, strategy, model, jobs, settings, self.out, self.cfg.width(settings),
                          label=f"evaluation of {name}")


def sft_on(cfg: DemoConfig, base: Path, attempts: Path, kind: str, out: Path, **build) -> Path:
    """`s2r build --kind KIND` on the base model's sampled attempts, then `s2r sft` (the bi recipe) from it."""
    from s2r.bi.build import BuildConfig, run_build
    from s2r.train.sft import SFTConfig, run_sft

    data = out / f"{kind}.jsonl"
    run_build(BuildConfig(str(attempts), out=str(data), kind=kind, seed=cfg.seed, **build))
    return run_sft(recipes.load(SFTConfig, "arith/sft", data=str(data), model=str(base), out=str(out / kind), seed=cfg.seed))


def problem_solving_bi(cfg: DemoConfig, base: Path, out: Path) -> Path:
    """BI whose teacher re-solves the problem (`s2r verify --style problem-solving`) instead of confirming."""
    from s2r.bi.build import BuildConfig, run_build
    from s2r.bi.verify import VerifyConfig, run_verify
    from s2r.train.sft import SFTConfig, run_sft

    stage = out / "bi"
    run_verify(VerifyConfig(str(stage / "attempts.jsonl"), out=str(stage / "verified-ps.jsonl"), style="problem-solving",
                            cache=str(stage / "verifications.jsonl")))
    run_build(BuildConfig(str(stage / "verified-ps.jsonl"), out=str(stage / "s2r-ps.jsonl"), kind="s2r", seed=cfg.seed))
    return run_sft(recipes.load(SFTConfig, "arith/sft", data=str(stage / "s2r-ps.jsonl"), model=str(base),
                                out=str(stage / "bi-problem-solving"), seed=cfg.seed))


def score_stages(cfg: DemoConfig, base: Path, out: Path) -> Path:
    """SCoRe stage I from the base model, then stage II from stage I's model (KL to the base model)."""
    from s2r.train.score import ScoreConfig, run_score

    # the problems of ORL's budget (iterations × prompts), half in each stage
    mine = dict(data=[f"arith:train:{cfg.seed}"], seed=cfg.seed, ref_model=str(base), prompts=cfg.sized("rl_prompts"),
                iterations=max(1, cfg.sized("rl_iterations") // 2))
    first = run_score(recipes.load(ScoreConfig, "arith/score", **mine, model=str(base), stage=1, out=str(out / "score-1")))
    return run_score(recipes.load(ScoreConfig, "arith/score", **mine, model=str(first), stage=2, out=str(out / "score-2")))


def dpo_on(cfg: DemoConfig, model: Path, data: Path, out: Path, **options) -> Path:
    from s2r.train.dpo import DPOConfig, run_dpo

    return run_dpo(recipes.load(DPOConfig, "arith/dpo", data=str(data), model=str(model), out=str(out), seed=cfg.seed,
                                **options))


def compare_seed(cfg: DemoConfig, trajectory_samples: int = 4) -> Seed:
    """Every row of one seed (module docstring)."""
    from s2r.methods.mistakes import CORRECT_TAG, rethink_prompt
    from s2r.methods.score import INSTRUCTION

    run = Seed(cfg)
    out, methods = run.out, run.out / "methods"
    base = run.timed("base model", train_base, base_config(cfg))
    models = run.timed("bi data and sft", bi_stage, cfg, base, out, cfg.batch_size)
    if not models:
        raise ValueError(f"seed {cfg.seed}: the base model solved none of BI's training problems; nothing to compare")
    attempts = out / "bi" / "attempts.jsonl"
    models["bi-problem-solving"] = run.timed("bi-problem-solving data and sft", problem_solving_bi, cfg, base, out)
    for kind in ("mistake-tuning", "cct", "r-tuning"):
        models[kind] = run.timed(f"{kind} data and sft", sft_on, cfg, base, attempts, kind, methods)
    models["dpo"] = run.timed("dpo", dpo_on, cfg, base, attempts, methods / "dpo")
    models["dw-dpo"] = run.timed("dw-dpo", dpo_on, cfg, base, attempts, methods / "dw-dpo", weighting="difficulty")
    models["score"] = run.timed("score", score_stages, cfg, base, methods)
    models.update(run.timed("rl", rl_stage, cfg, models["bi"], None, out, False))

    greedy = Settings(max_tokens=200, params=SamplingParams(max_tokens=200, seed=cfg.seed), prompt=PLAIN)
    sampled = replace(greedy, params=replace(greedy.params, temperature=0.7))
    s2r = replace(greedy, max_tokens=cfg.max_tokens, params=replace(greedy.params, max_tokens=cfg.max_tokens))
    # dpo-trajectories: the bi model's sampled S²R trajectories of BI's training problems, paired by final correctness
    train = [("arith", p, k) for p in arith.generate("train", cfg.sized("bi_problems"), cfg.seed)
             for k in range(trajectory_samples)]
    trajectories = methods / "bi-trajectories.jsonl"
    run.timed("dpo-trajectories data", run_row, "bi-trajectories", "s2r", models["bi"], train,
              replace(s2r, params=replace(s2r.params, temperature=0.7)), out, cfg.batch_size, trajectories)
    models["dpo-trajectories"] = run.timed("dpo-trajectories", dpo_on, cfg, models["bi"], trajectories,
                                           methods / "dpo-trajectories", pairs="trajectories")

    def prompt(**changes) -> Settings:
        return replace(greedy, prompt=replace(PLAIN, **changes))

    rethink = rethink_prompt(load_trajectories(str(attempts)), seed=cfg.seed)
    jobs = [("arith", p, 0) for p in arith.generate("test", cfg.sized("test_problems"), cfg.seed)]
    plan = [("base", "single", base, greedy), ("intrinsic", "intrinsic", base, greedy),
            ("self-rethinking", "intrinsic", base, prompt(review_prompt=rethink)),
            ("plain-sft", "single", models["plain-sft"], greedy),
            ("mistake-tuning", "single", models["mistake-tuning"], prompt(assistant_prefix=f"{CORRECT_TAG}\n")),
            ("cct", "intrinsic", models["cct"], greedy),
            ("score", "intrinsic", models["score"], prompt(review_prompt=INSTRUCTION)),
            ("bi", "s2r", models["bi"], s2r), ("bi-problem-solving", "s2r", models["bi-problem-solving"], s2r),
            ("orl", "s2r", models["orl"], s2r), ("prl", "s2r", models["prl"], s2r),
            ("dpo", "single", models["dpo"], greedy), ("dw-dpo", "single", models["dw-dpo"], greedy),
            ("dpo-trajectories", "s2r", models["dpo-trajectories"], s2r), ("r-tuning", "single", models["r-tuning"], greedy)]
    for name, strategy, model, settings in plan:
        run.runs[name] = run.row(name, strategy, model, jobs, settings)
    run.votes, run.runs["majority"] = matched_majority(run.row, models["prl"], run.runs["prl"], jobs, sampled,
                                                          "majority")
    run.runs = {name: run.runs[name] for name in ROWS}  # the table's order
    return run


def collected(cfg: DemoConfig) -> Seed:
    """A seed's finished run as its OUT/seed-S/results.json and rows/ hold it (`--collect`)."""
    run = Seed(cfg)
    path = run.out / "results.json"
    if not path.is_file():
        raise ValueError(f"{path}: no finished run of seed {cfg.seed} (run s2r compare --seed {cfg.seed} --out "
                         f"{run.out.parent} first)")
    result = json.loads(path.read_text())
    if result.get("test_problems") != cfg.sized("test_problems"):
        raise ValueError(f"{path}: seed {cfg.seed} ran on {result.get('test_problems')} test problems, not "
                         f"{cfg.sized('test_problems')} (set --test-problems or --quick as it ran)")
    missing = [name for name in ROWS if not (run.out / "rows" / f"{name}.jsonl").is_file()]
    if missing:
        raise ValueError(f"{path}: seed {cfg.seed} has no rows/ trajectories of {', '.join(missing)}")
    run.seconds = result.get("seconds", {})
    run.runs = {name: load_trajectories(str(run.out / "rows" / f"{name}.jsonl")) for name in ROWS}
    run.votes = next((r.get("votes", 0) for r in result["rows"] if r["name"] == "majority"), 0)
    return run


def run_compare(cfg: CompareConfig) -> dict:
    from s2r.compare_report import KEYS, format_summary, render_compare
    from s2r.compare_stats import summarise
    from s2r.report import render_report

    out = Path(cfg.out)
    start = time.monotonic()
    rows, seconds, curves = {}, {}, {}
    for seed in cfg.seed:
        run = collected(cfg.for_seed(seed)) if cfg.collect else compare_seed(cfg.for_seed(seed), cfg.trajectory_samples)
        rows[str(seed)] = [{"name": n, "metrics": compute_metrics(rs)["overall"], **({"votes": run.votes} if n == "majority"
                                                                                        else {})} for n, rs in run.runs.items()]
        seconds[str(seed)] = {stage: round(t, 1) for stage, t in run.seconds.items()}
        if not cfg.collect:
            write_json_atomic(run.out / "results.json", {"seed": seed, "test_problems": cfg.sized("test_problems"),
                                                         "rows": rows[str(seed)], "seconds": seconds[str(seed)]})
            write_atomic(run.out / "report.html", render_report(f"s2r compare · embedded arithmetic · seed {seed}",
                                                                run.runs, meta={"seed": seed}))
        print(f"seed {seed}\n{format_table(rows[str(seed)])}", file=sys.stderr)
        curves = curves or {"seed": seed, "runs": run.runs}  # risk–coverage curves of the first seed
    result = {"seeds": cfg.seed, "test_problems": cfg.sized("test_problems"), "rows": rows, "seconds": seconds}
    result["summary"] = summarise(rows, KEYS)
    write_json_atomic(out / "results.json", result)
    write_atomic(out / "report.html", render_compare(f"s2r compare · embedded arithmetic · seeds {cfg.seed}", result,
                                                     curves["runs"], curves["seed"]))
    print(format_summary(result))
    print(f"wrote {out / 'results.json'} and {out / 'report.html'} in {time.monotonic() - start:.0f}s", file=sys.stderr)
    return result
