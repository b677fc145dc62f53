"""msprior.allocator: freed activations stay in the process (glibc only)."""

import os
import subprocess
import sys

import pytest

from msprior.allocator import keep_freed_memory

GLIBC = sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION")

# A 64-channel network on inputs of mixed sizes, as the sampler and the evaluation
# run them (every activation under 32 MB); prints the minor page faults of 3 rounds
# after a warm-up round.
ROUNDS = """
import resource, sys, torch
from msprior.allocator import keep_freed_memory
if sys.argv[1] == "tuned":
    assert keep_freed_memory()
from msprior.networks import BFCNN, NetworkSpec
torch.manual_seed(0)
net = BFCNN(NetworkSpec("flat", 5, 64, 9)).eval()
sizes = [(4, 160), (2, 80), (1, 40), (3, 160)]
inputs = [torch.rand(n, 1, s, s) for n, s in sizes]
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
with torch.inference_mode():
    for x in inputs:
        net(x)
    before = faults()
    for _ in range(3):
        for x in inputs:
            net(x)
print(faults() - before)
"""


def _faults(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    done = subprocess.run(
        [sys.executable, "-c", ROUNDS, mode],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(not GLIBC, reason="mallopt thresholds are glibc's")
def test_freed_activations_are_reused_not_faulted_back_in():
    default, tuned = _faults("default"), _faults("tuned")
    # measured here: about 330,000 with glibc's defaults, about 3,000 tuned
    assert tuned * 10 < default, (tuned, default)


def test_a_threshold_set_in_the_environment_is_left_alone(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert keep_freed_memory() is False
