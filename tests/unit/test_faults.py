"""Planted faults and their knobs (distrinews/faults.py) that need no process group.

Each failure fault is driven through a real torchrun launch in tests/distributed/test_worker.py
and each slowdown through attribution in tests/distributed/test_attribution_planted.py.
"""

from __future__ import annotations

import pytest

from distrinews.errors import UserError

# -- the CPU memory limit that makes out-of-memory real in tests -----------------------------


@pytest.mark.parametrize("raw", ["0", "-1", "nan", "inf", "lots"])
def test_a_bad_memory_limit_is_one_line_naming_the_variable(raw):
    from distrinews.faults import MEMORY_LIMIT_ENV, apply_memory_limit

    with pytest.raises(UserError) as err:
        apply_memory_limit({MEMORY_LIMIT_ENV: raw})  # refused before any limit is set
    assert str(err.value) == (
        f"{MEMORY_LIMIT_ENV} = {raw!r} is not allowed; expected a number of GiB > 0"
    )
    assert apply_memory_limit({}) is None


@pytest.mark.slow
def test_the_memory_limit_caps_the_address_space_above_its_start_size():
    import subprocess
    import sys

    code = (
        "import resource\n"
        "from distrinews.faults import apply_memory_limit, _mapped_bytes\n"
        "before = _mapped_bytes()\n"
        "limit = apply_memory_limit({'DISTRINEWS_RANK_MEMORY_LIMIT_GIB': '0.25'})\n"
        "assert resource.getrlimit(resource.RLIMIT_AS)[0] == limit\n"
        "print(limit - before)\n"
        "try:\n"
        "    bytearray(2**29)\n"
        "except MemoryError:\n"
        "    print('MemoryError')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    headroom, error = out.stdout.split()
    assert abs(int(headroom) - 2**28) < 2**20  # 0.25 GiB above what it mapped at start
    assert error == "MemoryError"  # 0.5 GiB more does not fit: a real allocation failure


# -- the NaN fault, on either model ----------------------------------------------------------


@pytest.mark.parametrize("model", ["tiny", "synthetic-sleep:layers=1,fwd_ms=0,bwd_ms=0"])
def test_the_nan_fault_makes_the_first_loss_nan_on_either_model(model):
    """The launch tests plant ``nan`` in the synthetic model (tests/helpers_procs.py), the GPU
    checks in DistilBERT: the planted NaN must reach the loss through either forward pass."""
    import torch

    from distrinews.distributed import DistContext
    from distrinews.faults import inject_fault
    from distrinews.runspec import RunSpec
    from distrinews.train import build_model

    net = build_model(RunSpec(device="cpu", model=model))
    ids = torch.ones(2, 8, dtype=torch.long)
    clean = torch.nn.functional.cross_entropy(net(ids, torch.ones_like(ids)), torch.zeros(2).long())
    assert torch.isfinite(clean)
    ctx = DistContext(rank=0, local_rank=0, world_size=1, local_world_size=1,
                      device=torch.device("cpu"), backend="gloo")  # fmt: skip
    inject_fault("nan", ctx, net)
    logits = net(ids, torch.ones_like(ids))
    assert torch.isnan(torch.nn.functional.cross_entropy(logits, torch.zeros(2).long()))
