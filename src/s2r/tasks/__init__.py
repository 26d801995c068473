"""Problem sources: real benchmarks (benchmarks.py) and, later, the embedded task."""

from s2r.tasks.benchmarks import BENCHMARKS, Problem, ProblemFields, load_problems

__all__ = ["BENCHMARKS", "Problem", "ProblemFields", "load_problems"]
