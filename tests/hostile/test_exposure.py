"""Issue 25, item 4: a single-host point listens on loopback only.

While a real two-rank point runs (torchrun agent, two gloo ranks), every listening TCP socket of
its processes is read from /proc; any address but loopback fails the test. Before the fix the
agent listened on ``[::]`` twice (its rendezvous store and the store it shared with the ranks):
anyone who could reach the machine could talk to them.
"""

from __future__ import annotations

import ipaddress
import threading
import time

import pytest

from harness import spec, store
from harness import sweep as sw
from tests.helpers_procs import LAUNCH_MODEL, listening_sockets

#: Sleeping steps, so the point lasts a few seconds once the ranks are up.
SLOW_STEPS = LAUNCH_MODEL.replace("fwd_ms=1,bwd_ms=2", "fwd_ms=20,bwd_ms=40")


@pytest.mark.slow(seconds=20)
def test_a_single_host_point_listens_on_loopback_only(tmp_path):
    path = tmp_path / "lo.toml"
    path.write_text(
        f'name = "lo"\ntimeout_s = 120\n[run]\ndevice = "cpu"\nmodel = "{SLOW_STEPS}"\n'
        'data = "synthetic:256"\nmax_length = 32\nper_device_batch = 4\nprecision = "fp32"\n'
        "warmup_steps = 1\nmeasured_steps = 10\n[axes]\ngpus_per_node = [2]\n"
    )
    results = tmp_path / "r"
    options = sw.SweepOptions(results=results, progress=False)
    done: dict = {}
    thread = threading.Thread(
        target=lambda: done.update(r=sw.run_sweep(spec.load_sweep(path), options, echo=print))
    )
    thread.start()
    seen: set = set()
    while thread.is_alive():
        seen |= listening_sockets(str(results))
        time.sleep(0.05)
    thread.join()
    (row,) = store.read_ledger(done["r"].sweep_dir)
    assert row["status"] == "ok", row["reason"]
    # The poll saw the point: the agent's rendezvous store and both ranks' gloo sockets.
    assert len({pid for pid, _, _ in seen}) >= 3, seen
    exposed = sorted((a, p) for _, a, p in seen if not ipaddress.ip_address(a).is_loopback)
    assert not exposed, f"listening beyond loopback: {exposed}"
