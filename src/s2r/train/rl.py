"""`s2r rl --level outcome|process`: online RL from a behaviour-initialised model (docs/method.md §3).

One iteration:
  1. rollouts: P prompts × K samples (temperature 0.7) with the `s2r` strategy under a token budget,
     every attempt graded by THE grader;
  2. actions: each rollout split at its markers; character spans mapped to tokens, the EOS with the
     last action (`batching.encode_parts`). ORL trains one part per rollout, PRL one per action;
  3. advantages (`advantages.ADVANTAGES[level]`): RLOO on the final answer (ORL), or each action's
     reward (plus γ × the rewards after it) minus its reward-context baseline, with the ×2 bonuses
     (PRL); then the k1 KL to the reference, summed over a part's tokens, times β, is subtracted
     (kl_estimator k1); with `mixed_only`, only the groups whose final answers are not all alike
     are trained;
  4. `epochs` passes over the rollouts (PPO epochs), each of `updates` optimiser steps over
     disjoint shares of them:
        L = (1/n_parts) Σ_p −min(ρ_p A_p, clip(ρ_p, 1 − ε, 1 + ε) A_p)   [+ β (1/n_tok) Σ_t k3_t]
        ρ_p = exp(mean_{t∈p} log π_θ(y_t) − log π_old(y_t)),  π_old = the policy that sampled,
     every π taken at the sampling temperature (softmax(logits / T), the distribution sampled from),
     with n_parts, n_tok counted over the whole step (all micro-batches and processes), so gradient
     accumulation and data parallelism give the gradient of one big batch. With one step per
     iteration (updates × epochs = 1) π_old = π_θ: its log-probabilities are read off the training
     forward instead of a scoring pass of the policy.

Prompt groups with a grader failure (timeout, crash) are left out of the update and counted, never
scored. Checkpoints (`ckpt.pt`, or sharded `ckpt/` under `--strategy fsdp`: trainable weights,
optimiser, baseline statistics, iteration) give an exact resume: rollouts are sampled with a seed per iteration and process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from s2r.config import arg, to_dict
from s2r.format import SOLVE, MarkerFields
from s2r.records import Trajectory, graded_steps
from s2r.grader import grader_failed
from s2r.jsonl import write_json_atomic, write_jsonl_atomic
from s2r.models.vllm_backend import ENGINE_SETTINGS, VLLMFields
from s2r.loop import loop_written
from s2r.tasks import DataFields
from s2r.train.advantages import (
    ADVANTAGES,
    BASELINES,
    CONTEXTS,
    AdvantageSettings,
    outcome_reward,
    process_rewards,
)
from s2r.train.common import TrainFields, checkpoint, finished, launched, load_models, save_model, start_run
from s2r.train.ppo import PolicyLoss, Rollout, score_tokens, update_policy

LIVE = ("eval/acc_first", "eval/acc_final", "eval/i2c", "eval/c2i", "verify/tpr", "verify/tnr", "verify/unparsable",
        "eval/retry_by_loop", "eval/verify_by_loop")


@dataclass
class RLConfig(TrainFields, MarkerFields, DataFields, VLLMFields):
    model: str = arg(help="starting model folder (the behaviour-initialised model; also the KL reference)", positional=True)
    data: list[str] | None = arg(None, help="problem sets: benchmarks (name, name:split) or JSONL files; with --task, "
                                            "its splits (default: arith:train)")
    level: str = arg("process", help="outcome (ORL: RLOO, one part per rollout) or process (PRL: one part per action)")
    out: str = arg("runs/rl", help="output folder: model/, ckpt.pt, log.jsonl, tb/, rl.json")
    iterations: int = arg(100, help="rollout-and-update iterations")
    prompts: int = arg(64, help="P, prompts per iteration (all processes together)")
    samples: int = arg(4, help="K, rollouts per prompt")
    temperature: float = arg(0.7, help="rollout sampling temperature")
    max_tokens: int = arg(1024, help="token budget of a rollout (truncated rollouts get −1 on their last action)")
    max_attempts: int = arg(4, help="attempts per rollout at most")
    updates: int = arg(4, help="optimiser steps per pass over the iteration's rollouts (each on its share of them)")
    epochs: int = arg(1, help="passes over the iteration's rollouts (PPO epochs: the clip bounds the later ones)")
    lr: float = arg(5e-7, help="learning rate (AdamW, constant)")
    clip_eps: float = arg(0.2, help="ε of the clipped surrogate")
    kl_coef: float = arg(0.05, help="β, weight of the KL to the starting model (0 = no reference)")
    kl_estimator: str = arg("k1", help="k1: β·Σk1 subtracted from each part's advantage; k3: β·mean k3 added to the loss")
    context: str = arg("full", help=f"PRL reward context of a baseline: {', '.join(CONTEXTS)}")
    baseline: str = arg("batch", help=f"PRL baseline statistics: {', '.join(BASELINES)}")
    ema_decay: float = arg(0.9, help="PRL ema baseline: weight of the old value")
    min_count: int = arg(1, help="PRL: a context seen fewer times than this has baseline 0")
    verify_bonus: bool = arg(True, help="PRL: ×2 on the advantage of verifying a correct attempt")
    flip_bonus: bool = arg(True, help="PRL: ×2 on the advantage of a re-solve that flips correctness")
    gamma: float = arg(0.0, help="PRL: an action's reward plus γ × the rewards after it (0: its own reward, docs/method.md's; "
                                 "1: a check is credited with the re-solve it leads to)")
    mixed_only: bool = arg(False, help="train only on prompt groups whose final answers are not all right or all "
                                       "wrong (DAPO's dynamic sampling): the others have RLOO advantage 0")
    generation_batch_size: int = arg(64, help="prompts per generate() call")
    seed: int = arg(0, help="seed of the prompt order and of sampling")
    grader_timeout: float = arg(2.0, help="seconds per grading comparison (past it the attempt is unverifiable: a "
                                          "grader failure, and its prompt group is left out of the update)")
    backend: str = arg("transformers", help="rollouts from the trained model itself (transformers) or from a vLLM "
                                            "engine in this process that gets its weights before each iteration (vllm)")
    tis_cap: float = arg(2.0, help="vllm: cap C of the truncated importance weight min(π_old / π_vllm, C) per token")
    ckpt_every: int = arg(10, help="iterations between checkpoints")
    save_rollouts: bool = arg(False, help="write each iteration's rollouts, graded, with per-action rewards and "
                                          "advantages, to OUT/rollouts/NNNNNN.jsonl")

    def key(self, data_digest: str) -> str:
        """What determines the trained weights (not where they go or how fast)."""
        skip = ("out", "iterations", "ckpt_every", "device", "threads", "tensorboard", "generation_batch_size",
                *ENGINE_SETTINGS, "save_rollouts", *self.loading_options())
        fields = {k: v for k, v in asdict(self).items() if k not in skip}
        return hashlib.sha256(json.dumps([fields, data_digest], sort_keys=True).encode()).hexdigest()[:16]

    def policy_loss(self) -> PolicyLoss:
        return PolicyLoss(self.clip_eps, self.kl_coef, self.kl_estimator, self.temperature, self.tis_cap)

    def advantage_settings(self) -> AdvantageSettings:
        return AdvantageSettings(self.context, self.baseline, self.ema_decay, self.min_count, self.verify_bonus, self.flip_bonus,
                                 self.gamma)

    def check(self) -> None:
        for name, value, table in (("level", self.level, ADVANTAGES), ("context", self.context, CONTEXTS),
                                   ("backend", self.backend, ("transformers", "vllm")),
                                   ("baseline", self.baseline, BASELINES), ("kl_estimator", self.kl_estimator, ("k1", "k3"))):
            if value not in table:
                raise ValueError(f"{name} must be one of {', '.join(table)}, not {value!r}")
        if self.samples < 2 and self.level == "outcome":
            raise ValueError("ORL (RLOO) needs --samples ≥ 2")


def problem_set(cfg) -> tuple[list, list, str]:
    """(datasets, [(benchmark, Problem)], digest of their texts and golds) of an online trainer's
    --data (default arith:train); ValueError when they hold no problem."""
    datasets = cfg.datasets(cfg.data, "arith:train")
    problems = [(d.name, p) for d in datasets for p in d.problems]
    if not problems:
        raise ValueError(f"no problems in {', '.join(d.name for d in datasets)}")
    return datasets, problems, hashlib.sha256(json.dumps([(b, p.problem, p.gold) for b, p in problems]).encode()).hexdigest()


def iteration_prompts(n: int, per_iteration: int, iteration: int, seed: int) -> list[int]:
    """Problem indices of one iteration: a seeded shuffle per pass over the n problems, read in order."""
    out, start = [], iteration * per_iteration
    for pos in range(start, start + per_iteration):
        epoch, i = divmod(pos, n)
        order = list(range(n))
        random.Random(f"{seed}|{epoch}").shuffle(order)
        out.append(order[i])
    return out


def grader_failures(records: list[dict]) -> list[dict]:
    """The attempts the grader failed on (timeout, crash): what left their groups out, for the log."""
    return [{"id": r["id"], "sample": r["sample"], "answer": a["answer"], "reason": a["reason"]}
            for r in records for a in r["attempts"] if grader_failed(a.get("reason", ""))]


def make_rollouts(records: list[dict], prompts: list[str], tokenizer, level: str, fmt, state: dict,
                  settings: AdvantageSettings, samples: int, stats_reduce=None,
                  mixed_only: bool = False) -> tuple[list[Rollout], dict, dict, int]:
    """Rollouts with advantages from one iteration's graded records (K per prompt, in order; None
    for a rollout that could not be generated). With mixed_only, the rollouts of groups whose final
    rewards are all equal are not returned (they still count in the means and in the baselines).
    Returns (rollouts, new baseline state, the values behind the reward/* and train/* means, prompt
    groups left out). Each record of a group that was not left out gains `rewards` (per action; one
    for ORL), `advantages` (per part, before the KL fold) and `trained`, for OUT/rollouts."""
    from s2r.train.batching import encode_parts
    from s2r.train.rl_vllm import sampler_logprobs

    groups, kept = [], []
    failed = 0
    for g in range(0, len(records), samples):
        group = records[g : g + samples]
        graded = [graded_steps(Trajectory.load(r, fmt)) if r is not None else None for r in group]
        if any(x is None for x in graded):  # a grader failure, or a rollout that could not be generated
            failed += 1
            continue
        groups.append([(steps, r["truncated"]) for (_, steps), r in zip(graded, group)])
        kept.append((prompts[g // samples], group, [actions for actions, _ in graded]))
    advs, state = ADVANTAGES[level](groups, state, settings, stats_reduce)
    rollouts, flat_steps, zero_adv, trained_flags, per_step = [], [], [], [], []
    for (prompt, group, g_actions), g_steps, g_adv in zip(kept, groups, advs):
        trained = not (mixed_only and len({outcome_reward(st, tr) for st, tr in g_steps}) == 1)
        flat_steps += g_steps
        zero_adv += [float(all(a == 0 for a in adv)) for adv in g_adv]
        trained_flags += [float(trained)] * len(g_steps)
        for r, (steps, truncated), adv in zip(group, g_steps, g_adv):
            per_step.append((process_rewards(steps, truncated), steps))
            rewards = [outcome_reward(steps, truncated)] if level == "outcome" else per_step[-1][0]
            r.update(rewards=rewards, advantages=adv, trained=trained)
        if not trained:
            continue
        for r, actions, (steps, truncated), adv in zip(group, g_actions, g_steps, g_adv):
            text = r["text"]
            spans = [(0, len(text))] if level == "outcome" else [(a.start, a.end) for a in actions]
            # the EOS is trained where the model emitted it, not where the loop cut it off; the retry
            # markers the loop wrote are not the model's samples: not trained either
            ids, parts = encode_parts(tokenizer, prompt, text, spans, add_eos=r.get("stopped", not truncated),
                                      skip=loop_written(r))
            sampler = sampler_logprobs(tokenizer, len(ids), text, r["sampled"], r.get("stopped", not truncated)) \
                if "sampled" in r else None
            rollouts.append(Rollout(ids, parts, adv, sampler_logp=sampler))
    observed = {
        "reward/outcome_mean": [outcome_reward(st, tr) for st, tr in flat_steps],
        "reward/solve_mean": [x for r, st in per_step for x, s in zip(r, st) if s.kind == SOLVE],
        "reward/verify_mean": [x for r, st in per_step for x, s in zip(r, st) if s.kind != SOLVE],
        "train/truncated": [float(tr) for _, tr in flat_steps],
        "train/zero_adv_frac": zero_adv,
        "train/trained_frac": trained_flags,
    }
    return rollouts, state, observed, failed


def run_rl(cfg: RLConfig) -> Path:
    from s2r.grader import Grader
    from s2r.metrics import compute_metrics
    from s2r.models.backend import SamplingParams
    from s2r.models.hf import TransformersBackend
    from s2r.prompts import problem_prompt
    from s2r.loop import Settings, solve_problems
    from s2r.tasks import grading_task

    from s2r.train.sharding import unsharded

    cfg.check()
    cfg = cfg.from_model(cfg.model)
    with launched(cfg) as dist_:
        out = Path(cfg.out)
        datasets, problems, digest = problem_set(cfg)
        key = cfg.key(digest)
        info_path = out / "rl.json"
        if finished(info_path, key, lambda info: info.get("iterations", 0) >= cfg.iterations, dist_.main, "RL model"):
            return out / "model"
        model, ref, tokenizer = load_models(cfg, dist_)
        run = start_run(cfg, out, key, model, dist_, "iteration", cfg.iterations, f"rl ({cfg.level})", "iteration")
        iteration, state, log = run.done, run.state.get("baselines", {}), run.log
        autocast, run_log = run.autocast, run.run_log
        prompt_cfg = cfg.prompt_config()
        if cfg.backend == "vllm":
            from s2r.train.rl_vllm import colocated_engine, push_policy

            backend = colocated_engine(cfg, model, tokenizer)
        else:
            backend = TransformersBackend(model, tokenizer, batch_size=cfg.generation_batch_size)
        start = time.monotonic()
        with Grader(timeout=cfg.grader_timeout, workers=1) as grader:
            while iteration < cfg.iterations:
                mine = iteration_prompts(len(problems), cfg.prompts, iteration, cfg.seed)[dist_.rank :: dist_.world]
                jobs = [(problems[i][0], problems[i][1], k) for i in mine for k in range(cfg.samples)]
                settings = Settings(max_tokens=cfg.max_tokens, max_attempts=cfg.max_attempts, fmt=cfg.fmt, prompt=prompt_cfg,
                                    task=grading_task(datasets),
                                    params=SamplingParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature,
                                                          seed=cfg.seed * 1_000_003 + iteration * 1009 + dist_.rank,
                                                          logprobs=cfg.backend == "vllm"))
                model.eval()
                t0 = time.monotonic()
                if cfg.backend == "vllm":
                    with unsharded(model):  # fsdp: the push reads whole weights
                        push_policy(backend, model)  # the weights of the last step (or of the checkpoint)
                push_seconds = time.monotonic() - t0  # weight sync: 0 with transformers
                t0 = time.monotonic()
                # fsdp + transformers: whole weights, so that processes decode different step counts
                with unsharded(model) if cfg.backend == "transformers" else contextlib.nullcontext():
                    records, _ = solve_problems(backend, jobs, "s2r", settings, grader)  # failed ones have no record
                gen_seconds = time.monotonic() - t0
                if cfg.backend == "vllm":
                    backend.sleep()  # where vLLM has a sleep mode: its memory is the trainer's until the next push
                model.train()
                by_job = {(r["id"], r["sample"]): r for r in records}  # a failed generation (errors) has none
                ordered = [by_job.get((p.id, k)) for _, p, k in jobs]
                prompts = [problem_prompt(problems[i][1].problem, prompt_cfg, tokenizer) for i in mine]
                rollouts, state, observed, left_out = make_rollouts(
                    ordered, prompts, tokenizer, cfg.level, cfg.fmt, state, cfg.advantage_settings(), cfg.samples,
                    stats_reduce=dist_.merge_stats, mixed_only=cfg.mixed_only)
                # with one step per iteration π_old = π_θ: rl_accumulate reads it off the training forward
                score_tokens(model, ref, rollouts, cfg.micro_batch_size, tokenizer.pad_token_id, dist_.device, autocast,
                             cfg.temperature, old=cfg.updates * cfg.epochs > 1, dist_=dist_ if cfg.strategy == "fsdp" else None)
                totals, parts_total = update_policy(run, rollouts, cfg, cfg.policy_loss(), dist_, tokenizer.pad_token_id,
                                                    f"{cfg.seed}|{iteration}")
                iteration += 1
                everyone = [r for part in dist_.gather(records) for r in part]
                if dist_.main and cfg.save_rollouts:
                    write_jsonl_atomic(out / "rollouts" / f"{iteration:06d}.jsonl", everyone)
                live = compute_metrics(everyone)["overall"] if everyone else {}
                sums = dist_.sum([x for v in observed.values() for x in (sum(v), len(v))] + [left_out])
                means = {k: sums[2 * i] / sums[2 * i + 1] if sums[2 * i + 1] else None for i, k in enumerate(observed)}
                left_out = sums[-1]
                record = {"iteration": iteration, "train/loss": totals.surrogate_sum / max(1, parts_total),
                          "train/clip_frac": totals.clipped_parts / max(1, parts_total),
                          "train/kl_ref": totals.kl_ref, **means,
                          **{k: live.get(k) for k in LIVE}, "rollouts": len(everyone), "groups_left_out": int(left_out),
                          "grader_failures": grader_failures(everyone),
                          "tokens": sum(r["tokens"] for r in everyone),
                          "push_seconds": push_seconds, "gen_seconds": gen_seconds, "seconds": time.monotonic() - start}
                log.append(record)
                run_log.write(iteration, record, loss=f"{record['train/loss']:.3f}", reward=f"{record['reward/outcome_mean'] or 0:.2f}",
                              acc=f"{live.get('eval/acc_final') or 0:.2f}")
                if iteration % cfg.ckpt_every == 0 or iteration == cfg.iterations:
                    checkpoint(out, cfg, dist_, model, run.trainable_names, run.opt, key=key, iteration=iteration, baselines=state)
        run_log.close()
        save_model(model, tokenizer, cfg, out, dist_)
        if dist_.main:
            write_json_atomic(info_path, {"key": key, "iterations": iteration, "config": to_dict(cfg),
                                          "last": log[-1] if log else None})
            print(f"wrote {out / 'model'} after {iteration} iterations", file=sys.stderr)
        dist_.barrier()
        backend.close()  # last: a vLLM engine's shutdown also tears down the process group it joined
        return out / "model"
