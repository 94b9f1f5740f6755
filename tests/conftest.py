"""Test-wide settings. One torch thread: the tiny models of the tests are dominated by per-op overhead,
and on a 2-core machine shared with other work, 2 threads make small matmuls wait on each other
(a 1.4 s file took 90 s). Subprocess tests (torchrun, SIGKILL/resume) set their own threads."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
