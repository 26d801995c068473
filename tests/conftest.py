import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from s2r.grader import Grader  # noqa: E402
from s2r.tasks.benchmarks import find_data_dir  # noqa: E402


@pytest.fixture(scope="session")
def data_dir():
    """The real benchmark data (../shared/data); CI has it beside the clone."""
    return find_data_dir()


@pytest.fixture(scope="session")
def grader():
    with Grader(timeout=2.0) as g:
        yield g
