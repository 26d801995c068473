"""From a problem to the text a backend completes.

With a chat template (the tokenizer has one, and `template` is "auto" or "chat") the conversation is
rendered by `tokenizer.apply_chat_template(..., add_generation_prompt=True)`. Otherwise the plain
template below is used; the embedded task's tiny models are trained on it.

    {system}\\n\\n            (when there is a system prompt)
    Question: {problem}\\n
    Answer:\\n               <- the model writes here

At inference the assistant's message may start with a fixed text, `assistant_prefix` (mistake
tuning's "[Correct rationale]\\n"): it is appended to the rendered prompt of the first assistant turn,
and the model writes on after it.

A model folder s2r writes holds `s2r.json`, {"system", "template"} and, when they are not the
defaults, "review_prompt" and "assistant_prefix": the prompt it was trained with. Commands that
render prompts take these settings from it when none is given (`PromptFields.from_model`), so the
embedded task's plain-template models, and models trained for a review turn (SCoRe, CCT) or behind
an assistant prefix (mistake tuning), are evaluated as they were trained with default flags.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from s2r.config import arg
from s2r.jsonl import DataError, write_json_atomic

DEFAULT_SYSTEM = "Solve the problem step by step. Put the final answer in \\boxed{}."

# The prompted second turn of intrinsic self-correction (the SCoRe / confidence-critique baseline).
DEFAULT_REVIEW = (
    "Review your previous answer and find problems with it, if any. "
    "Then give your final answer in \\boxed{}."
)


@dataclass
class PromptConfig:
    system: str = arg(DEFAULT_SYSTEM, help="system prompt ('' for none)")
    template: str = arg("auto", help="auto (chat template when the tokenizer has one), chat, or plain")
    user_format: str = arg("Question: {content}\nAnswer:\n", help="plain template: a user turn")
    assistant_format: str = arg("{content}\n\n", help="plain template: a finished assistant turn")
    system_format: str = arg("{content}\n\n", help="plain template: the system prompt")
    review_prompt: str = arg(DEFAULT_REVIEW, help="intrinsic strategy: the second user turn")
    assistant_prefix: str = arg("", help="text the first assistant message starts with (appended to the rendered prompt)")


MODEL_PROMPT = "s2r.json"  # in a model folder: the prompt settings it was trained with


SAVED = ("system", "template", "review_prompt", "assistant_prefix")  # the settings s2r.json may hold


def write_model_prompt(model_dir: str | Path, prompt: PromptConfig) -> None:
    """s2r.json: system and template, and review_prompt / assistant_prefix where they are not the defaults."""
    saved = {"system": prompt.system, "template": prompt.template}
    if prompt.review_prompt != DEFAULT_REVIEW:
        saved["review_prompt"] = prompt.review_prompt
    if prompt.assistant_prefix:
        saved["assistant_prefix"] = prompt.assistant_prefix
    write_json_atomic(Path(model_dir) / MODEL_PROMPT, saved)


def model_prompt(model_dir: str | Path | None) -> dict[str, str]:
    """The settings of a model folder's s2r.json (those of SAVED it holds); {} when it has none."""
    path = Path(model_dir) / MODEL_PROMPT if model_dir else None
    if path is None or not path.is_file():
        return {}
    try:
        saved = json.loads(path.read_text())
    except ValueError as e:
        raise DataError(f"{path}: malformed JSON: {e}") from None
    if not isinstance(saved, dict) or not all(isinstance(saved.get(k, ""), str) for k in SAVED):
        raise DataError(f"{path}: expected {{\"system\": str, \"template\": str}} (and optionally \"review_prompt\", "
                        "\"assistant_prefix\": str)")
    return {k: saved[k] for k in SAVED if k in saved}


@dataclass(kw_only=True)
class SystemTemplateFields:
    """--system / --template of the commands that render prompts; None = the model folder's
    s2r.json, else the defaults (`from_model`)."""

    system: str | None = arg(None, help="system prompt ('' for none; default: the model folder's s2r.json, else "
                                        "the standard one: solve step by step, answer in \\boxed{})")
    template: str | None = arg(None, help="prompt template: auto (the tokenizer's chat template if any), chat, plain "
                                          "(default: the model folder's s2r.json, else auto)")

    def from_model(self, model_dir: str | Path | None, system: str = DEFAULT_SYSTEM, template: str = "auto",
                   review_prompt: str = DEFAULT_REVIEW):
        """This config with the settings left None taken from the model folder, else these defaults."""
        saved = model_prompt(model_dir)
        defaults = {"system": system, "template": template, "review_prompt": review_prompt, "assistant_prefix": ""}
        return replace(self, **{k: getattr(self, k) if getattr(self, k) is not None else saved.get(k, defaults[k])
                                for k in SAVED if hasattr(self, k)})

    def prompt_config(self) -> PromptConfig:
        """The PromptConfig of these fields (after from_model; None gives the default)."""
        return PromptConfig(**{k: getattr(self, k) for k in SAVED if getattr(self, k, None) is not None})


@dataclass(kw_only=True)
class PromptFields(SystemTemplateFields):
    """Also --review-prompt / --assistant-prefix: the prompt settings of solving and training
    commands. A trainer's values end up in its saved model's s2r.json (train/common.save_model)."""

    review_prompt: str | None = arg(None, help="intrinsic strategy: the second user turn (default: the model folder's "
                                               "s2r.json, else: review your previous answer ...)")
    assistant_prefix: str | None = arg(None, help="text the first assistant message starts with, e.g. mistake tuning's "
                                                  "'[Correct rationale]\\n' (default: the model folder's s2r.json, else none)")


def messages_for(problem: str, cfg: PromptConfig) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": cfg.system}] if cfg.system else []
    return msgs + [{"role": "user", "content": problem}]


def problem_prompt(problem: str, cfg: PromptConfig, tokenizer=None) -> str:
    """The text a trainer's completion of `problem` follows: the rendered prompt, then the assistant
    prefix the model writes on after (as loop.render_all prompts the first assistant turn)."""
    return render_prompt(messages_for(problem, cfg), cfg, tokenizer) + cfg.assistant_prefix


def render_prompt(messages: list[dict[str, str]], cfg: PromptConfig, tokenizer=None) -> str:
    """The text after which the assistant's next message begins."""
    if cfg.template not in ("auto", "chat", "plain"):
        raise ValueError(f"template must be auto, chat or plain, not {cfg.template!r}")
    has_template = tokenizer is not None and getattr(tokenizer, "chat_template", None)
    if cfg.template == "chat" and not has_template:
        raise ValueError("template 'chat' needs a tokenizer with a chat template")
    if has_template and cfg.template != "plain":
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    formats = {"system": cfg.system_format, "user": cfg.user_format, "assistant": cfg.assistant_format}
    return "".join(formats[m["role"]].format(content=m["content"]) for m in messages)
