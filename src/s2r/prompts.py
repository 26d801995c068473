"""From a problem to the text a backend completes.

With a chat template (the tokenizer has one, and `template` is "auto" or "chat") the conversation is
rendered by `tokenizer.apply_chat_template(..., add_generation_prompt=True)`. Otherwise the plain
template below is used; the embedded task's tiny models are trained on it.

    {system}\\n\\n            (when there is a system prompt)
    Question: {problem}\\n
    Answer:\\n               <- the model writes here
"""

from __future__ import annotations

from dataclasses import dataclass

from s2r.config import arg

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


def messages_for(problem: str, cfg: PromptConfig) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": cfg.system}] if cfg.system else []
    return msgs + [{"role": "user", "content": problem}]


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
