"""Learning from mistakes (Tong et al. 2024, "Can LLMs learn from previous mistakes?").

- Mistake tuning: SFT on the model's own right *and* wrong rationales, each behind a tag that says
  which it is. The tag is the start of the assistant's message (`prefix`: context, not trained), so
  the model learns what a right and a wrong rationale look like, conditioned on the tag; at
  inference the prompt ends with the "correct" tag (`--assistant-prefix`).
- Self-rethinking: a prompting strategy. After its answer the model is shown mistakes it made on
  other training problems and asked whether it made one of them, then answers again (the
  `intrinsic` strategy with `rethink_prompt` as its second turn). [Departure: the paper groups the
  mistakes into kinds with an LLM; here the shown mistakes are the model's own wrong attempts, with
  the right answers, which needs no other model.]
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from s2r.metrics import answer_key, group_by_problem
from s2r.methods.cct import problem_meta
from s2r.records import SFTRecord

CORRECT_TAG = "[Correct rationale]"
INCORRECT_TAG = "[Incorrect rationale]"


def mistake_tuning_records(attempts: Sequence[dict]) -> tuple[list[dict], dict[str, int]]:
    """One SFT record per distinct (problem, answer) of the sampled attempts, tagged by its grade:
    {"prefix": tag + "\\n", "completion": the attempt, "spans": [[0, len]], ...}. Attempts without
    an answer, or that the grader could not check, are left out. Returns (records, counts per tag)."""
    records, counts = [], {"correct": 0, "incorrect": 0}
    for group in group_by_problem(attempts).values():
        seen = set()
        for r in sorted(group, key=lambda r: r.get("sample", 0)):
            a = r["attempts"][0]
            if a["answer"] is None or a["grade"] not in counts or answer_key(a["answer"]) in seen:
                continue
            seen.add(answer_key(a["answer"]))
            text = r["text"].strip()
            tag = CORRECT_TAG if a["grade"] == "correct" else INCORRECT_TAG
            records.append(SFTRecord(text, [[0, len(text)]], problem=r["problem"], prefix=f"{tag}\n",
                                     meta=problem_meta(r) | {"kind": "mistake-tuning"}).dump())
            counts[a["grade"]] += 1
    return records, counts


def rethink_prompt(attempts: Sequence[dict], k: int = 3, seed: int = 0) -> str:
    """The self-rethinking second turn: up to k of the model's wrong attempts (one per problem,
    seeded), each with the right answer, and the request to check for such a mistake.

    >>> rethink_prompt([{"id": "1", "problem": "Compute 91 / 7.", "gold": "13",
    ...                  "attempts": [{"answer": "12", "grade": "incorrect"}]}], k=1)
    'Here are mistakes you made on other problems:\\n- Compute 91 / 7. You answered 12; the right answer is 13.\\nCheck whether your answer above makes a mistake like these. Then give your final answer in \\\\boxed{}.'
    """
    wrong = [g[0] for g in group_by_problem(r for r in attempts if r["attempts"][0]["grade"] == "incorrect"
                                            and r["attempts"][0]["answer"] is not None).values()]
    if not wrong:
        raise ValueError("self-rethinking needs wrong attempts of the model to show it; the attempts hold none")
    shown = random.Random(seed).sample(wrong, min(k, len(wrong)))
    lines = [f"- {r['problem'].strip()} You answered {r['attempts'][0]['answer']}; the right answer is {r['gold']}."
             for r in shown]
    return ("Here are mistakes you made on other problems:\n" + "\n".join(lines)
            + "\nCheck whether your answer above makes a mistake like these. Then give your final answer in \\boxed{}.")
