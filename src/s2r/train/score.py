"""`s2r score MODEL --stage 1|2`: SCoRe (Kumar et al. 2024), two-turn self-correction by online RL
(docs/score.md; the returns and KL weights of each stage: methods/score.py).

One iteration:
  1. rollouts: P prompts × K samples; each is attempt 1 (the `single` strategy), then a user turn with
     the fixed instruction (`--review-prompt`), then attempt 2: the `intrinsic` strategy of
     `s2r eval`, so a trained model is evaluated in exactly its training format. Both answers are
     graded by THE grader as `intrinsic` grades them (attempt 2 without an answer keeps attempt 1's):
     r ∈ {−1, +1}; a rollout the grader failed on is left out (counted), never scored;
  2. tokens: prompt + attempt 1 + instruction turn + attempt 2 (+ EOS) as one sequence, rendered as at
     inference; part 0 is attempt 1, part 1 attempt 2, the prompt and instruction turn are not trained;
  3. advantages: RLOO per attempt over the prompt's K samples of the stage's returns, then each
     part's summed k1 KL to the reference (`--ref-model`, default the starting model) times its
     stage's β is subtracted (stage I: β2 on attempt 1, β1 on attempt 2; stage II: β1 on both);
  4. the clipped per-part update of `s2r rl` (`ppo.update_policy`).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from s2r.config import arg, to_dict
from s2r.format import MarkerFields
from s2r.methods.score import INSTRUCTION, STAGES, kl_weights, score_advantages
from s2r.tasks import DataFields
from s2r.train.common import TrainFields
from s2r.train.ppo import PolicyLoss, Rollout

ATTEMPTS = ("attempt1", "attempt2")


@dataclass
class ScoreConfig(TrainFields, MarkerFields, DataFields):
    model: str = arg(help="starting model folder (stage 2: stage 1's output model)", positional=True)
    stage: int = arg(1, help="1: train attempt 2, attempt 1 held at the reference by β2; 2: both attempts, with the "
                             "self-correction bonus α (r2 − r1) (methods/score.py)")
    ref_model: str | None = arg(None, help="KL reference model folder (default: the starting model; stage 2: pass the "
                                           "original base model)")
    data: list[str] | None = arg(None, help="problem sets: benchmarks (name, name:split) or JSONL files; with --task, "
                                            "its splits (default: arith:train)")
    out: str = arg("runs/score", help="output folder: model/, ckpt.pt, log.jsonl, tb/, score.json")
    alpha: float = arg(10.0, help="stage 2: α of the shaped reward r2 + α (r2 − r1)")
    beta1: float = arg(0.01, help="β1, KL weight to the reference on attempt 2 (stage 2: on both attempts)")
    beta2: float | None = arg(None, help="β2, stage 1's KL weight on attempt 1 (default: 10 × β1)")
    iterations: int = arg(100, help="rollout-and-update iterations")
    prompts: int = arg(64, help="P, prompts per iteration (all processes together)")
    samples: int = arg(4, help="K, two-turn rollouts per prompt (RLOO: at least 2)")
    temperature: float = arg(1.0, help="rollout sampling temperature")
    max_tokens: int = arg(1024, help="token budget of each attempt")
    updates: int = arg(1, help="optimiser steps per pass over the iteration's rollouts (each on its share of them)")
    epochs: int = arg(1, help="passes over the iteration's rollouts (PPO epochs)")
    lr: float = arg(1e-6, help="learning rate (AdamW, constant)")
    clip_eps: float = arg(0.2, help="ε of the clipped per-part surrogate")
    generation_batch_size: int = arg(64, help="prompts per generate() call")
    seed: int = arg(0, help="seed of the prompt order and of sampling")
    grader_timeout: float = arg(2.0, help="seconds per grading comparison (past it the attempt is unverifiable: a "
                                          "grader failure, and its rollout is left out of the update)")
    ckpt_every: int = arg(10, help="iterations between checkpoints")
    save_rollouts: bool = arg(False, help="write each iteration's graded rollouts with their advantages to "
                                          "OUT/rollouts/NNNNNN.jsonl")

    @property
    def kl_betas(self) -> tuple[float, float]:
        """β of attempt 1 and attempt 2 in this stage."""
        return kl_weights(self.stage, self.beta1, 10 * self.beta1 if self.beta2 is None else self.beta2)

    @property
    def kl_coef(self) -> float:
        """Whether a reference is needed (load_models): > 0 when either attempt has a KL weight."""
        return max(self.kl_betas)

    def policy_loss(self) -> PolicyLoss:
        return PolicyLoss(self.clip_eps, self.beta1, "k1", self.temperature)

    def key(self, data_digest: str) -> str:
        """What determines the trained weights (not where they go or how fast)."""
        skip = ("out", "iterations", "ckpt_every", "device", "threads", "tensorboard", "generation_batch_size",
                "save_rollouts", *self.loading_options())
        fields = {k: v for k, v in asdict(self).items() if k not in skip}
        return hashlib.sha256(json.dumps([fields, data_digest], sort_keys=True).encode()).hexdigest()[:16]

    def check(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage must be 1 or 2, not {self.stage!r}")
        if self.samples < 2:
            raise ValueError("SCoRe's RLOO advantages need --samples ≥ 2")


# ----------------------------------------------------------------------------------- pure pieces


def rewards_of(record: dict) -> tuple[float, float] | None:
    """(r1, r2) of a graded two-turn record: +1 for a correct answer, else −1, each attempt's answer
    as the intrinsic strategy scores it (attempt 2 without an answer keeps attempt 1's: "no change"
    is an answer at inference, so it is one here). None when the grader failed on either (never scored).

    grades (incorrect, correct) -> (−1, 1);  a grader timeout on either -> None"""
    from s2r.grader import grader_failed

    if any(grader_failed(a.get("reason", "")) for a in record["attempts"]):
        return None
    first, second = (1.0 if a["grade"] == "correct" else -1.0 for a in record["attempts"])
    return first, second


def two_turn_text(first_prompt: str, second_prompt: str, attempt1: str, attempt2: str) -> tuple[str, list, list]:
    """(completion after the first prompt, the parts' character spans, the instruction turn's span):
    the second prompt is the first one, attempt 1 and the rendered instruction turn.

    "Q\\n", "Q\\nab\\n\\nFix?\\n", "ab", "c" -> ("ab\\n\\nFix?\\nc", [(0, 2), (2, 10)], [(2, 9)])"""
    turn = second_prompt[len(first_prompt) :]
    if not second_prompt.startswith(first_prompt) or not turn.startswith(attempt1):
        raise ValueError("the prompt template does not render the first turn as the start of the second one")
    text = turn + attempt2
    return text, [(0, len(attempt1)), (len(attempt1), len(text))], [(len(attempt1), len(turn))]


def group_advantages(groups: list[list[tuple[float, float] | None]], stage: int,
                     alpha: float) -> list[list[tuple[float, float] | None]]:
    """(A1, A2) per rollout, RLOO within each prompt group over the rollouts that were graded (None:
    a grader failure, left out); None for those, and for groups left with fewer than 2.

    stage 1, [[(−1, 1), None, (1, −1)]] -> [[(2, 2), None, (−2, −2)]]"""
    out = []
    for g in groups:
        kept = [x for x in g if x is not None]
        adv = iter(score_advantages([kept], stage, alpha)[0] if len(kept) >= 2 else [])
        out.append([next(adv) if x is not None and len(kept) >= 2 else None for x in g])
    return out


def attempt_kl(rollouts: list[Rollout]) -> list[float]:
    """[Σ k1, tokens] of attempt 1, then of attempt 2, over the rollouts' trained tokens, with
    k1_t = old_logp_t − ref_logp_t (rollouts without both contribute nothing).

    one rollout, parts [−1, 0, 0, 1], old [−1, −1, −2], ref [−2, −1.5, −2] -> [1.5, 2, 0, 1]"""
    sums = [0.0, 0, 0.0, 0]
    for r in rollouts:
        if r.old_logp is None or r.ref_logp is None:
            continue
        for p, old, ref in zip(r.parts[1:], r.old_logp, r.ref_logp):
            if p >= 0:
                sums[2 * p] += old - ref
                sums[2 * p + 1] += 1
    return sums


# ----------------------------------------------------------------------------------- rollouts


def two_turns(backend, conversations: list[list[dict]], s):
    """The intrinsic strategy (loop.run_intrinsic) with its pieces kept: [(attempt 1's Rollout, its
    stripped text, the second prompt, the second Completion)], None where generation failed."""
    from s2r.loop import render_all, run_single

    first = run_single(backend, conversations, s)
    convs = [conv + [{"role": "assistant", "content": s.prompt.assistant_prefix + r.text.strip()},
                     {"role": "user", "content": s.prompt.review_prompt}] for conv, r in zip(conversations, first)]
    second_prompts = render_all(backend, convs, s, first=False)
    second = backend.complete(second_prompts, replace(s.params, max_tokens=s.max_tokens))
    return [None if r1.error or c.finish_reason == "error" else (r1, r1.text.strip(), p2, c)
            for r1, p2, c in zip(first, second_prompts, second)]


def graded_records(jobs, turns, s, grader) -> list[dict | None]:
    """Trajectory records as the intrinsic strategy writes them (metrics.py's schema), plus
    `first_text`, `second_text`, `stopped` (attempt 2 ended with EOS) and `answered` (attempt 2 gave an
    answer); None where generation failed."""
    pairs = []
    for (_, p, _), t in zip(jobs, turns):
        if t is not None:
            a1, a2 = t[0].attempts[0]["answer"], s.task.extract(t[3].text)
            pairs += [(a1, p.gold), (a2 if a2 is not None else a1, p.gold)]  # no second answer: the first stands
    grades = iter(s.task.grade_many(pairs, grader))
    answers = iter(a for a, _ in pairs)
    records = []
    for (bench, p, k), t in zip(jobs, turns):
        if t is None:
            records.append(None)
            continue
        r1, a1_text, _, c = t
        attempts = [{"answer": a, "grade": g.verdict, "verdict": None, "reason": g.reason}
                    for a, g in ((next(answers), next(grades)), (next(answers), next(grades)))]
        records.append({"benchmark": bench, **p.as_dict(), "sample": k, "strategy": "intrinsic", "attempts": attempts,
                        "tokens": r1.tokens + c.num_tokens, "truncated": r1.truncated or c.finish_reason == "length",
                        "text": f"{a1_text}\n---\n{c.text}", "first_text": a1_text, "second_text": c.text,
                        "stopped": c.finish_reason == "stop", "answered": s.task.extract(c.text) is not None})
    return records


def make_rollouts(records: list[dict | None], turns, first_prompts: list[str], tokenizer, cfg: ScoreConfig,
                  samples: int) -> tuple[list[Rollout], int]:
    """Rollouts with (A1, A2) and the stage's per-part β from one iteration's graded records (K per
    prompt, in order); each graded record gains `rewards` and `advantages`. Returns (rollouts,
    rollouts left out: a grader failure, a failed generation, or too few left in the group)."""
    from s2r.train.batching import encode_parts

    rewards = [None if r is None else rewards_of(r) for r in records]
    groups = [rewards[g : g + samples] for g in range(0, len(rewards), samples)]
    advs = [a for g in group_advantages(groups, cfg.stage, cfg.alpha) for a in g]
    rollouts = []
    for i, (r, rw, adv) in enumerate(zip(records, rewards, advs)):
        if adv is None:
            continue
        r.update(rewards=list(rw), advantages=list(adv))
        text, spans, instruction = two_turn_text(first_prompts[i // samples], turns[i][2], r["first_text"], r["second_text"])
        ids, parts = encode_parts(tokenizer, first_prompts[i // samples], text, spans, add_eos=r["stopped"], skip=instruction)
        rollouts.append(Rollout(ids, parts, list(adv), kl=list(cfg.kl_betas)))
    return rollouts, sum(a is None for a in advs)


def run_score(cfg: ScoreConfig) -> Path:
    from s2r.grader import Grader
    from s2r.jsonl import write_json_atomic, write_jsonl_atomic
    from s2r.loop import Settings
    from s2r.metrics import compute_metrics
    from s2r.models.backend import SamplingParams
    from s2r.models.hf import TransformersBackend
    from s2r.prompts import messages_for, problem_prompt
    from s2r.tasks import grading_task
    from s2r.train.common import checkpoint, finished, launched, load_models, save_model, start_run
    from s2r.train.ppo import score_tokens, update_policy
    from s2r.train.rl import grader_failures, iteration_prompts, problem_set
    from s2r.train.sharding import unsharded

    cfg.check()
    cfg = cfg.from_model(cfg.model, review_prompt=INSTRUCTION)  # --review-prompt, else s2r.json's, else SCoRe's
    with launched(cfg) as dist_:
        out = Path(cfg.out)
        datasets, problems, digest = problem_set(cfg)
        key = cfg.key(digest)
        info_path = out / "score.json"
        if finished(info_path, key, lambda info: info.get("iterations", 0) >= cfg.iterations, dist_.main, "SCoRe model"):
            return out / "model"
        model, ref, tokenizer = load_models(cfg, dist_, cfg.ref_model)
        run = start_run(cfg, out, key, model, dist_, "iteration", cfg.iterations, f"score (stage {cfg.stage})", "iteration")
        iteration, log = run.done, run.log
        prompt_cfg = cfg.prompt_config()
        backend = TransformersBackend(model, tokenizer, batch_size=cfg.generation_batch_size)
        start = time.monotonic()
        with Grader(timeout=cfg.grader_timeout, workers=1) as grader:
            while iteration < cfg.iterations:
                mine = iteration_prompts(len(problems), cfg.prompts, iteration, cfg.seed)[dist_.rank :: dist_.world]
                jobs = [(problems[i][0], problems[i][1], k) for i in mine for k in range(cfg.samples)]
                settings = Settings(max_tokens=cfg.max_tokens, fmt=cfg.fmt, prompt=prompt_cfg, task=grading_task(datasets),
                                    params=SamplingParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature,
                                                          seed=cfg.seed * 1_000_003 + iteration * 1009 + dist_.rank))
                model.eval()
                t0 = time.monotonic()
                with unsharded(model):  # fsdp: whole weights, so that processes decode different step counts
                    turns = two_turns(backend, [messages_for(p.problem, prompt_cfg) for _, p, _ in jobs], settings)
                gen_seconds = time.monotonic() - t0
                model.train()
                records = graded_records(jobs, turns, settings, grader)
                first_prompts = [problem_prompt(problems[i][1].problem, prompt_cfg, tokenizer) for i in mine]
                rollouts, left_out = make_rollouts(records, turns, first_prompts, tokenizer, cfg, cfg.samples)
                score_tokens(model, ref, rollouts, cfg.micro_batch_size, tokenizer.pad_token_id, dist_.device, run.autocast,
                             cfg.temperature, dist_=dist_ if cfg.strategy == "fsdp" else None)  # π_old too: its KL per attempt
                kl = dist_.sum(attempt_kl(rollouts))
                totals, parts_total = update_policy(run, rollouts, cfg, cfg.policy_loss(), dist_, tokenizer.pad_token_id,
                                                    f"{cfg.seed}|{iteration}")
                iteration += 1
                everyone = [r for part in dist_.gather([r for r in records if r is not None]) for r in part]
                if dist_.main and cfg.save_rollouts:
                    write_jsonl_atomic(out / "rollouts" / f"{iteration:06d}.jsonl", everyone)
                graded = [r for r in everyone if "rewards" in r]
                live = compute_metrics(graded)["overall"] if graded else {}
                record = {"iteration": iteration, "train/loss": totals.surrogate_sum / max(1, parts_total),
                          "train/clip_frac": totals.clipped_parts / max(1, parts_total), "train/kl_ref": totals.kl_ref,
                          **{f"train/kl_ref_{a}": kl[2 * i] / kl[2 * i + 1] if kl[2 * i + 1] else None
                             for i, a in enumerate(ATTEMPTS)},
                          **{f"reward/{a}": sum(r["rewards"][i] for r in graded) / len(graded) if graded else None
                             for i, a in enumerate(ATTEMPTS)},
                          **{k: live.get(k) for k in ("eval/acc_first", "eval/acc_final", "eval/i2c", "eval/c2i")},
                          "count/i2c": sum(r["rewards"] == [-1.0, 1.0] for r in graded),
                          "count/c2i": sum(r["rewards"] == [1.0, -1.0] for r in graded),
                          "train/answered": sum(r["answered"] for r in graded) / len(graded) if graded else None,
                          "rollouts": len(everyone), "rollouts_left_out": int(dist_.sum([left_out])[0]),
                          "grader_failures": grader_failures(everyone), "tokens": sum(r["tokens"] for r in everyone),
                          "gen_seconds": gen_seconds, "seconds": time.monotonic() - start}
                log.append(record)
                run.run_log.write(iteration, record, loss=f"{record['train/loss']:.3f}",
                                  acc=f"{record['eval/acc_first'] or 0:.2f} -> {record['eval/acc_final'] or 0:.2f}")
                if iteration % cfg.ckpt_every == 0 or iteration == cfg.iterations:
                    checkpoint(out, cfg, dist_, model, run.trainable_names, run.opt, key=key, iteration=iteration)
        run.run_log.close()
        save_model(model, tokenizer, cfg, out, dist_)  # s2r.json: system, template and the review prompt
        if dist_.main:
            write_json_atomic(info_path, {"key": key, "iterations": iteration, "config": to_dict(cfg),
                                          "last": log[-1] if log else None})
            print(f"wrote {out / 'model'} after {iteration} iterations of SCoRe stage {cfg.stage}", file=sys.stderr)
        dist_.barrier()
        return out / "model"
