"""A scripted fake model: each call for a problem returns the next scripted segment, one character
per token, cut by max_tokens ("length") or a stop string; a segment otherwise ends with EOS."""

from s2r.models.backend import Completion, cut_at_stop


class ScriptedBackend:
    tokenizer = None

    def __init__(self, scripts: dict[str, list[str]], fail: set[str] = frozenset(), keeps_stop_strings: bool = False):
        self.scripts = scripts
        self.keeps_stop_strings = keeps_stop_strings
        self.fail = fail
        self.calls: list[tuple[str, str]] = []  # (problem, prompt)

    def _problem(self, prompt: str) -> str:
        matches = [p for p in self.scripts if f"Question: {p}\n" in prompt]
        assert len(matches) == 1, prompt
        return matches[0]

    def complete(self, prompts, params, max_tokens=None):
        out = []
        for prompt, budget in zip(prompts, max_tokens or [params.max_tokens] * len(prompts)):
            problem = self._problem(prompt)
            if problem in self.fail:
                out.append(Completion("", "error", 0, error="scripted failure"))
                continue
            segment = self.scripts[problem][sum(p == problem for p, _ in self.calls)]
            self.calls.append((problem, prompt))
            text, hit = cut_at_stop(segment, params.stop)
            finish = "stop"
            if len(text) > budget:
                text, finish = text[:budget], "length"
            n = len(text) + (len(hit) if hit else finish == "stop")  # + the stop string's tokens, or the EOS token
            if hit and params.include_stop:
                text += hit
            out.append(Completion(text, finish, n, stop_string=hit))
        return out

    def close(self):
        pass
