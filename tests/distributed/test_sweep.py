"""The sweep harness end to end: real torchrun, the real worker, gloo on CPU.

Covers every failure class through a real launch, resume after SIGKILL and SIGINT (no lost or
duplicate rows), the one-writer lock, a two-node c10d rendezvous on loopback, the default
sweep through the real CLI, bad sweep files, --dry-run, and export.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from distrinews import failures, files
from distrinews.errors import UserError
from distrinews.runspec import RunSpec
from harness import launch, spec, store
from harness import sweep as sw
from harness.cli import cli
from tests.helpers_procs import LAUNCH_MODEL, listening_sockets, processes_mentioning

# The launch tests' model (tests/helpers_procs.py): their subject is the launch path, and the
# default-sweep test below runs DistilBERT itself.
LAUNCH = f"""
[run]
device = "cpu"
model = "{LAUNCH_MODEL}"
data = "synthetic:256"
max_length = 32
per_device_batch = 4
precision = "fp32"
warmup_steps = 1
measured_steps = 3
"""


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _rows(sweep_dir: Path) -> list[dict]:
    return store.read_ledger(sweep_dir)


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


# -- pure planning -----------------------------------------------------------------------------


def _point(**kw) -> spec.Point:
    return spec.Point(spec=RunSpec(device="cpu", **kw))


def test_plan_resumes_ok_keeps_failures_and_records_skips_once():
    ok, failed, fresh = _point(seed=1), _point(seed=2), _point(seed=3)
    skipped = spec.Point(spec=RunSpec(seed=4), skip_reason="needs 1 GPUs per node")
    rows = [
        {"run_id": failed.run_id, "status": "ok"},
        {"run_id": failed.run_id, "status": "oom", "reason": "CUDA out of memory"},
        {"run_id": ok.run_id, "status": "crashed"},
        {"run_id": ok.run_id, "status": "ok"},  # latest row wins
    ]
    actions = {
        p.point.run_id: p.action
        for p in sw.plan([ok, failed, fresh, skipped], rows, retry_failed=False)
    }
    assert actions == {
        ok.run_id: "done",
        failed.run_id: "kept_failed",
        fresh.run_id: "run",
        skipped.run_id: "skip",
    }
    rows.append({"run_id": skipped.run_id, "status": "skipped", "reason": "needs 1 GPUs per node"})
    retry = {p.point.run_id: p.action for p in sw.plan([failed, skipped], rows, retry_failed=True)}
    assert retry == {failed.run_id: "run", skipped.run_id: "skip_recorded"}


# -- CLI input handling ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, needle",
    [
        ('name = "x"\n[axes]\nper_device_batch = [0]', "axes.per_device_batch[0]"),
        ('name = "x"\n[axes]\nprecision = ["fp8"]', "allowed: fp32, tf32, fp16, bf16"),
        ('name = "x"\ncolour = 1', "unknown key 'colour'"),
        ('name = "x"\n[axes]\nprecision = []', "axes.precision is empty"),
        ('name = "x"\n[run]\ncompile = "no"', "run.compile"),
        ('name = "x"\n[axes\n', "invalid TOML"),
    ],
)
def test_bad_sweep_file_is_one_line_exit_2_and_writes_nothing(tmp_path, text, needle):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    results = tmp_path / "results"
    out = CliRunner().invoke(cli, ["sweep", str(path), "--results", str(results)])
    assert out.exit_code == 2, out.output
    lines = out.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}:"), out.output
    assert needle in lines[0]
    assert not results.exists()


def test_dry_run_prints_points_and_writes_nothing(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('name = "dry"\n' + LAUNCH + "[axes]\ngpus_per_node = [1, 2]\nnodes = [1, 2]\n")
    out = CliRunner().invoke(
        cli, ["sweep", str(path), "--results", str(tmp_path / "r"), "--dry-run"]
    )
    assert out.exit_code == 0, out.output
    assert "4 points: 2 run, 2 skip" in out.output
    assert "needs 2 nodes" in out.output
    assert not (tmp_path / "r").exists()


def test_sbatch_command_writes_a_script_for_a_valid_sweep(tmp_path):
    script = tmp_path / "job.sbatch"
    out = CliRunner().invoke(
        cli,
        ["sbatch", "h100-2node-scaling", "--nodes", "2", "--gpus-per-node", "8",
         "--partition", "gpu", "-o", str(script)],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    text = script.read_text()
    assert "#SBATCH --nodes=2" in text and "#SBATCH --partition=gpu" in text
    assert "--launcher slurm --nodes 2" in text
    assert "12/12 points fit" in out.output
    bad = CliRunner().invoke(cli, ["sbatch", "nope", "--nodes", "1", "--gpus-per-node", "1",
                                   "-o", str(tmp_path / "x")])  # fmt: skip
    assert bad.exit_code == 2 and not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--partition", "debug\ntouch PWNED"], "--partition"),
        (["--partition", "debug; touch PWNED"], "--partition"),
        (["--account", "$(touch PWNED)"], "--account"),
        (["--time", "10`touch PWNED`"], "--time"),
        (["--results", "r\ntouch PWNED"], "control character"),
        (["--data", "x\ntouch PWNED"], "control character"),
        (["--name", "a;b"], "name = 'a;b'"),
        (["--gpus-per-node", "2"], "runs on cpu only: --gpus-per-node does not apply"),
    ],
)
def test_sbatch_refuses_what_it_cannot_write_safely_one_line_exit_2(tmp_path, args, needle):
    out = tmp_path / "job.sbatch"
    run = CliRunner().invoke(cli, ["sbatch", "cpu-2node", "--nodes", "2", *args, "-o", str(out)])
    assert run.exit_code == 2, run.output
    (line,) = run.output.strip().splitlines()
    assert line.startswith("error: ") and needle in line, line
    assert not out.exists()


def test_sbatch_for_a_cpu_sweep_asks_for_no_gpus_and_a_cuda_sweep_needs_them(tmp_path):
    out = tmp_path / "cpu.sbatch"
    run = CliRunner().invoke(cli, ["sbatch", "cpu-2node", "--nodes", "2", "-o", str(out)])
    assert run.exit_code == 0, run.output
    text = out.read_text()
    assert "--gpus-per-node" not in text and "#SBATCH --nodes=2" in text
    assert f"exec {sys.executable} -m harness.cli sweep cpu-2node --launcher slurm" in text
    assert f"cd {Path.cwd().resolve()}" in text.splitlines()
    gpu = CliRunner().invoke(cli, ["sbatch", "h100-2node-scaling", "--nodes", "2", "-o", "-"])
    assert gpu.exit_code == 2 and "give --gpus-per-node" in gpu.output


def test_progress_bar_only_on_a_terminal(monkeypatch):
    """Redirected stderr gets plain result lines: no bar frames between them."""
    import io

    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a file or pipe: isatty() is False
    assert isinstance(sw._progress(3, enabled=True), sw._NoBar)

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    bar = sw._progress(3, enabled=True)
    assert not isinstance(bar, sw._NoBar)
    bar.close()
    assert not isinstance(sw._progress(3, enabled=False), type(bar))


def test_second_sweep_into_a_locked_folder_is_refused_with_one_line(tmp_path):
    results = tmp_path / "r"
    path = tmp_path / "s.toml"
    path.write_text('name = "locked"\n' + LAUNCH + "[axes]\ngpus_per_node = [1]\n")
    with store.sweep_lock(results / "locked"):  # as a running sweep holds it
        out = CliRunner().invoke(cli, ["sweep", str(path), "--results", str(results)])
    assert out.exit_code == 2, out.output
    (line,) = out.output.strip().splitlines()
    assert "in use by another sweep" in line
    assert not store.ledger_path(results / "locked").exists()
    assert not (results / "locked" / "env.json").exists()


# -- real launches -----------------------------------------------------------------------------


@pytest.mark.scenario
@pytest.mark.slow(seconds=50)
def test_every_failure_class_through_a_real_torchrun(tmp_path):
    """Each planted failure, launched as a sweep launches it, down to the ledger row, and the
    worker's own evidence beside it: error.json's class and exit code (distrinews/failures.py's
    table), one-line message, rank and traceback, and torchrun reporting that exit code."""
    path = tmp_path / "faults.toml"
    path.write_text(
        'name = "faults"\ntimeout_s = 120\n' + LAUNCH + '[axes]\nfault = ["crash", "oom"]\n'
    )
    faults = spec.load_sweep(path)
    # A dead rank, or one rank alone crashing, needs a peer to notice it: two ranks. (The
    # SLURM tests hold the same faults across two nodes to these same expectations.) NaN too:
    # both ranks see it, and the first to report it wins error.json.
    two = spec.parse_sweep(
        'name = "faults"\n' + LAUNCH
        + '[axes]\ngpus_per_node = [2]\nfault = ["rank_exit", "crash_last", "nan"]\n'
    )  # fmt: skip
    # The worker refuses a data file that does not exist: an invalid spec, found at run time.
    invalid = faults.with_run(data=str(tmp_path / "missing.csv"), fault="none")
    options = sw.SweepOptions(results=tmp_path / "r", progress=False)
    sweep_dir = tmp_path / "r" / "faults"
    for sweep_spec in (faults, two, invalid):
        sw.run_sweep(sweep_spec, options, echo=lambda _m: None)
    rows = {(r["fault"], r["data"]): r for r in _rows(sweep_dir)}
    syn = "synthetic:256"
    assert rows[("crash", syn)]["status"] == "crashed"
    assert "injected fault: crash" in rows[("crash", syn)]["reason"]
    assert rows[("oom", syn)]["status"] == "oom"
    assert rows[("nan", syn)]["status"] == "crashed"
    assert rows[("nan", syn)]["reason"].startswith("nan_loss")
    assert rows[("rank_exit", syn)]["status"] == "nccl_error"
    assert "first failure: rank 1" in rows[("rank_exit", syn)]["reason"]
    assert rows[("crash_last", syn)]["status"] == "crashed"
    assert "injected fault: crash on rank 1" in rows[("crash_last", syn)]["reason"]
    assert rows[("none", str(tmp_path / "missing.csv"))]["status"] == "invalid"
    for row in rows.values():
        assert row["samples_per_s"] is None and row["reason"]  # never a number for a failure
        pdir = sweep_dir / row["point_dir"]
        assert (pdir / "run.json").is_file() and (pdir / "status.json").is_file()
        assert (pdir / "logs" / "launcher.log").is_file()
        assert list((pdir / "logs").rglob("stderr.log")), "per-rank logs kept"
        status = json.loads((pdir / "status.json").read_text())
        assert status["status"] == row["status"]
        assert not (pdir / "record.json").exists()

    # The worker's side: the class and exit code it chose, and torchrun passing the code on.
    worker_says = {"crash": "crashed", "oom": "oom", "nan": "nan_loss", "rank_exit": "rank_died"}
    for fault, failure in worker_says.items():
        pdir = sweep_dir / rows[(fault, syn)]["point_dir"]
        error = json.loads((pdir / "error.json").read_text())
        assert error["failure"] == failure, error
        assert error["exit_code"] == failures.EXIT_CODES[failure]
        assert "\n" not in error["message"] and error["message"]
        assert isinstance(error["rank"], int) and error["traceback_tail"]
        launcher_log = (pdir / "logs" / "launcher.log").read_text()
        if fault == "rank_exit":
            assert error["rank"] == 0  # the survivor reports; rank 1 died without a word
        else:
            code = error["exit_code"]
            assert re.search(rf"exitcode\s*:\s*{code}\b", launcher_log), launcher_log[-2000:]
    oom = json.loads((sweep_dir / rows[("oom", syn)]["point_dir"] / "error.json").read_text())
    assert "can't allocate memory" in oom["message"]  # the real allocator said no
    # Without --retry-failed a re-run launches nothing and adds no rows.
    before = _rows(sweep_dir)
    result = sw.run_sweep(faults, options, echo=lambda _m: None)
    assert result.ran == 0 and _rows(sweep_dir) == before


@pytest.mark.slow
def test_hang_past_timeout_is_killed_with_its_whole_tree_and_listened_on_loopback_only(tmp_path):
    """A two-rank point hangs in its first step until the timeout kills its whole tree.

    While it hangs its processes are alive with every socket open, so the test also lists
    what they listen on (issue 25, item 4): a single-host point listens on loopback only --
    the agent's rendezvous store, rank 0's store and both ranks' gloo sockets. Before the
    fix the agent listened on [::] twice, reachable from anywhere the machine is.
    """
    path = tmp_path / "hang.toml"
    axes = '[axes]\nfault = ["hang"]\ngpus_per_node = [2]\n'
    path.write_text('name = "hang"\ntimeout_s = 12\n' + LAUNCH + axes)
    results = tmp_path / "r"
    options = sw.SweepOptions(results=results, progress=False)
    start = time.monotonic()
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
    assert time.monotonic() - start < 60
    (row,) = _rows(done["r"].sweep_dir)
    assert row["status"] == "timeout" and "12 s" in row["reason"]
    assert row["samples_per_s"] is None
    assert processes_mentioning(str(done["r"].sweep_dir)) == []
    # The agent's stores are up within a second (before the fix: its two '::' listeners); the
    # ranks' sockets once both have reached the hang, which a loaded box may not manage in 12 s.
    log = (done["r"].sweep_dir / row["point_dir"] / "logs" / "launcher.log").read_text()
    ranks_up = log.count("injected fault: hang") == 2
    assert len({pid for pid, *_ in seen}) >= (3 if ranks_up else 1), (ranks_up, seen)
    exposed = sorted(s[1:] for s in seen if not ipaddress.ip_address(s[1]).is_loopback)
    assert not exposed, f"listening beyond loopback: {exposed}"


@pytest.mark.slow
def test_two_node_rendezvous_on_loopback_runs_the_real_worker(tmp_path):
    """Two torchrun agents (as on two machines) meet in a c10d rendezvous on 127.0.0.1, and
    listen on that address only."""
    run = RunSpec(
        nodes=2, nproc_per_node=1, device="cpu", model=LAUNCH_MODEL, data="synthetic:256",
        max_length=32, per_device_batch=4, precision="fp32", warmup_steps=1, measured_steps=3,
    )  # fmt: skip
    pdir = tmp_path / "point"
    pdir.mkdir()
    (pdir / "run.json").write_text(run.to_json())
    rdzv = launch.Rendezvous(endpoint=f"127.0.0.1:{launch.free_port('127.0.0.1')}", run_id="t2n")
    argv = launch.build_torchrun_argv(run, pdir, rdzv=rdzv)
    env = launch.build_env(run)
    agents = [
        subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
        for _ in range(2)
    ]  # fmt: skip
    seen: set = set()
    deadline = time.monotonic() + 150
    try:
        # Issue 25: nothing listens on every interface across nodes either -- the rendezvous
        # store on the endpoint's address, the ranks' store and gloo on the node's own.
        while any(a.poll() is None for a in agents) and time.monotonic() < deadline:
            seen |= listening_sockets(str(pdir))
            time.sleep(0.05)
        codes = [a.wait(timeout=max(1.0, deadline - time.monotonic())) for a in agents]
    finally:
        for a in agents:
            if a.poll() is None:
                os.killpg(a.pid, signal.SIGKILL)
    assert codes == [0, 0]
    assert len({pid for pid, *_ in seen}) >= 3, seen  # both agents' and the ranks' sockets
    assert {address for _, address, *_ in seen} == {"127.0.0.1"}, seen  # never [::] or 0.0.0.0
    record = json.loads((pdir / "record.json").read_text())
    assert record["env"]["world_size"] == 2 and record["env"]["backend"] == "gloo"
    assert len(record["step_times_s"]) == 2  # both ranks' step times gathered
    assert len(list((pdir / "logs").glob("t2n_*"))) == 2  # one log tree per agent


@pytest.mark.scenario
@pytest.mark.slow(seconds=40)
def test_sweep_resumes_after_sigkill_and_sigint_without_loss_or_duplicates(tmp_path):
    # The CPU default, with enough measured steps that the second point is still running when
    # the test interrupts it (the default's steps can finish between a poll and the signal).
    # Its steps sleep (42 ms each) instead of computing: the point lasts as long without
    # burning the cores the rest of the suite runs on.
    path = tmp_path / "resume.toml"
    # One repeat: two points, as the checks below count them.
    text = (Path(spec.__file__).parent / "sweeps" / "cpu-smoke.toml").read_text()
    text = text.replace('name = "cpu-smoke"', 'name = "resume"')
    sleepy = "synthetic-sleep:layers=2,layer_mb=0.0625,embed_mb=0.0625,fwd_ms=5,bwd_ms=15"
    text = re.sub(r"(?m)^model = .*$", f'model = "{sleepy}"', text)
    text = re.sub(r"(?m)^measured_steps = \d+", "measured_steps = 100", text)
    text = re.sub(r"(?m)^repeats = \d+", "repeats = 1", text)
    assert "measured_steps = 100" in text and "repeats = 1" in text and sleepy in text
    path.write_text(text)
    results = tmp_path / "results"
    sweep_dir = results / "resume"
    args = [sys.executable, "-m", "harness.cli", "sweep", str(path), "--results", str(results),
            "--no-progress"]  # fmt: skip

    def start() -> subprocess.Popen[str]:
        # SIGINT back to its default in the child, as in an interactive terminal: a shell that
        # runs this suite in the background (CI) hands children SIGINT ignored, and Python then
        # never raises KeyboardInterrupt.
        return subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )  # fmt: skip

    # 1. SIGKILL the sweep while its second point runs.
    first = start()
    try:
        _wait_for(lambda: len(_rows(sweep_dir)) == 1, 120, "the first point's row")
        second_id = next(p for p in spec.load_sweep(path).expand(spec.Resources())
                         if p.run_id != _rows(sweep_dir)[0]["run_id"]).run_id  # fmt: skip
        logs = sweep_dir / "points" / second_id / "logs"
        _wait_for(lambda: any(logs.rglob("stderr.log")), 60, "the second point's ranks")
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    # torchrun got SIGTERM from the kernel when its parent died, and took its workers along.
    _wait_for(lambda: not processes_mentioning(str(sweep_dir)), 60, "orphans to exit")
    after_kill = _rows(sweep_dir)
    assert len(after_kill) == 1 and after_kill[0]["status"] == "ok"
    assert store.ledger_path(sweep_dir).read_bytes().endswith(b"\n")

    # 2. SIGINT (Ctrl-C) during the second point: exit 130, still one row, nothing left over.
    stale = set(logs.rglob("stderr.log"))  # the killed attempt's logs, until the re-run
    second = start()
    try:
        _wait_for(lambda: set(logs.rglob("stderr.log")) - stale, 90, "the re-run second point")
        os.kill(second.pid, signal.SIGINT)
        _, err = second.communicate(timeout=60)
    finally:
        if second.poll() is None:
            second.kill()
    assert second.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert _rows(sweep_dir) == after_kill
    _wait_for(lambda: not processes_mentioning(str(sweep_dir)), 30, "orphans to exit")

    # 3. Run to the end: the finished point is kept, the other runs once.
    done = _cli("sweep", str(path), "--results", str(results), "--no-progress", timeout=240)
    assert done.returncode == 0, done.stderr
    assert "1 point(s) already ok" in done.stdout
    assert f"results: {sweep_dir}" in done.stdout
    rows = _rows(sweep_dir)
    assert [r["run_id"] for r in rows][:1] == [after_kill[0]["run_id"]]
    assert rows[0] == after_kill[0]
    assert len(rows) == 2 and len({r["run_id"] for r in rows}) == 2
    assert all(r["status"] == "ok" and r["samples_per_s"] > 0 for r in rows)
    assert sorted(r["world_size"] for r in rows) == [1, 2]
    assert (
        rows[0]["env_fingerprint"]
        == json.loads((sweep_dir / "env.json").read_text())["fingerprint"]
    )
    assert (sweep_dir / "sweep.json").is_file()
    for row in rows:
        assert row["telemetry_available"] is False  # CPU points: no GPU to sample

    # 4. Nothing left to do: no launch, no new rows. (In-process: nothing is launched, so a
    # process of its own would only cost this test another import of torch.)
    again = CliRunner().invoke(
        cli, ["sweep", str(path), "--results", str(results), "--no-progress"]
    )
    assert again.exit_code == 0 and "ran 0 point(s)" in again.stdout, again.output
    # Its first line says so, and how to measure again (a quick look that does nothing must
    # not look like one that ran).
    first = again.stdout.splitlines()[0]
    assert "2 points, none to run (2 already ok" in first and "--name NEW" in first
    assert _rows(sweep_dir) == rows


@pytest.mark.slow(seconds=25)
def test_default_sweep_end_to_end_prints_results_and_report(tmp_path):
    """`distrinews-bench sweep` with no argument on this GPU-less machine: the cpu-smoke sweep."""
    results = tmp_path / "results"
    # One repeat: the whole path at a quarter of the cost (the gate-ready repeats of cpu-smoke
    # are checked in tests/unit/test_spec.py).
    done = _cli("sweep", "--results", str(results), "--no-progress", "--repeats", "1", timeout=240)
    assert done.returncode == 0, done.stderr
    sweep_dir = results / "cpu-smoke"
    # The first line, also when stdout is not a terminal: which sweep, why, how many, how long.
    first = done.stdout.splitlines()[0]
    assert first.startswith(
        "sweep cpu-smoke (harness/sweeps/cpu-smoke.toml; no GPU found: the default for a "
        f"machine without one) -> {sweep_dir}: 2 points, 2 to run; estimated "
    ), first
    assert "measured on" in first
    assert f"results: {sweep_dir}" in done.stdout
    assert f"report: {sweep_dir / 'report.html'}" in done.stdout
    assert (sweep_dir / "report.html").stat().st_size > 1_000_000  # plotly.js inline
    rows = _rows(sweep_dir)
    assert sorted(r["world_size"] for r in rows) == [1, 2]
    assert all(r["status"] == "ok" and r["samples_per_s"] > 0 for r in rows)
    # What the explain measurements cost the 2-rank point: under 10% of its wall time, the
    # target tests/bench/test_bench_explain.py measures over 3 launches (--benchmark-enable).
    (two,) = (r for r in rows if r["world_size"] == 2)
    explain_s = json.loads((sweep_dir / two["point_dir"] / "record.json").read_text())["metrics"][
        "explain_time_s"
    ]
    assert 0 < explain_s < 0.10 * two["duration_s"], (explain_s, two["duration_s"])
    table = tmp_path / "all.parquet"
    out = CliRunner().invoke(cli, ["export", str(results), "-o", str(table)])
    assert out.exit_code == 0, out.output
    frame = pd.read_parquet(table)
    assert len(frame) == len(rows) and set(frame["status"]) == {"ok"}
    # A clean end leaves no lock file behind.
    assert not (sweep_dir / store.LOCK_NAME).exists()
    # Every result file and folder gets the umask's ordinary mode, like the ledger: a
    # teammate can read it (mkstemp/mkdtemp would make 0600/0700).
    umask = files.umask()
    made = [sweep_dir, table, *sweep_dir.rglob("*")]
    wrong = [
        f"{p.relative_to(tmp_path)}: {oct(p.stat().st_mode & 0o777)}"
        for p in made
        if p.stat().st_mode & 0o777 != (0o777 if p.is_dir() else 0o666) & ~umask
    ]
    assert not wrong, wrong
    names = {p.name for p in made}
    assert {"env.json", "sweep.json", "run.json", "record.json", "status.json"} <= names


@pytest.mark.slow
def test_point_telemetry_is_kept_raw_and_summarised_over_the_measured_window(tmp_path):
    """A real point with the real NVML sampler driven by a fake pynvml (no GPU here)."""
    from harness import telemetry
    from tests.unit.test_telemetry import fake_nvml

    def sampler_for(_spec, _env):
        return telemetry.make_sampler(visible="1", count=1, interval_s=0.005, nvml=fake_nvml(2))

    path = tmp_path / "t.toml"
    path.write_text('name = "tele"\n' + LAUNCH.replace("measured_steps = 3", "measured_steps = 8"))
    options = sw.SweepOptions(results=tmp_path / "r", progress=False)
    result = sw.run_sweep(
        spec.load_sweep(path), options, echo=lambda _m: None, sampler_for=sampler_for
    )
    (row,) = _rows(result.sweep_dir)
    assert row["status"] == "ok" and row["telemetry_available"] is True
    pdir = result.sweep_dir / row["point_dir"]
    samples = [json.loads(line) for line in (pdir / "telemetry.jsonl").read_text().splitlines()]
    assert samples and {s["gpu_uuid"] for s in samples} == {"GPU-00001-aaaa"}
    window = json.loads((pdir / "record.json").read_text())["measured_window"]
    inside = [s for s in samples if window["start_unix"] <= s["t_unix"] <= window["end_unix"]]
    assert row["telemetry_samples"] == len(inside)
    assert len(samples) > len(inside)  # warmup and startup samples are kept raw, not summarised
    if inside:
        assert row["gpu_util_pct_mean"] == 51 and row["gpu_power_w_mean"] == pytest.approx(301.0)
        assert row["gpu_throttle_reasons"] == "sw_power_cap,sw_thermal"


def test_resuming_a_folder_from_another_environment_is_refused(tmp_path):
    sweep_dir = tmp_path / "r" / "envcheck"
    store.atomic_write_json(sweep_dir / "env.json", {"fingerprint": "somewhere-else"})
    path = tmp_path / "s.toml"
    path.write_text('name = "envcheck"\n' + LAUNCH + "[axes]\ngpus_per_node = [1]\n")
    options = sw.SweepOptions(results=tmp_path / "r", progress=False)
    with pytest.raises(UserError, match="holds results from another environment"):
        sw.run_sweep(spec.load_sweep(path), options)
    assert not store.ledger_path(sweep_dir).exists()
    with pytest.raises(UserError, match="--nodes applies to --launcher slurm"):
        sw.SweepOptions(nodes=2)


@pytest.mark.slow
def test_srun_sampler_stops_its_step_and_merges_node_files(tmp_path):
    """The SLURM per-node sampler's process handling, with a local stand-in for the srun step."""
    folder = tmp_path / "telemetry"
    script = (
        "import json, os, signal, sys, time\n"
        f"os.makedirs({str(folder)!r}, exist_ok=True)\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
        f"with open({str(folder / 'n1.jsonl')!r}, 'a') as fh:\n"
        "    while True:\n"
        "        fh.write(json.dumps({'t_unix': time.time(), 'host': 'n1'}) + '\\n'); fh.flush()\n"
        "        time.sleep(0.01)\n"
    )
    sampler = sw.SrunSampler(
        [sys.executable, "-c", script], env=dict(os.environ), folder=folder,
        log_path=tmp_path / "logs" / "telemetry.log",
    )  # fmt: skip
    sampler.start()
    _wait_for(lambda: (folder / "n1.jsonl").is_file(), 30, "the node sampler")
    time.sleep(0.2)
    samples = sampler.stop()
    assert sampler.available and samples and {s["host"] for s in samples} == {"n1"}
    assert not processes_mentioning(str(folder))
