"""The largest-batch search algorithm and the [max_batch] sweep-file table.

The algorithm is checked here against a known memory threshold (pure logic); the search
through real processes hitting real out-of-memory is in tests/distributed/test_cost.py.
"""

from __future__ import annotations

import pytest

from distrinews.errors import UserError
from harness import max_batch as MB
from harness import spec as S


def threshold(fits_up_to: int, log: list[int] | None = None):
    """A trial where every batch up to ``fits_up_to`` runs and larger ones run out of memory."""

    def trial(batch: int) -> tuple[str, str | None]:
        if log is not None:
            log.append(batch)
        return ("ok", None) if batch <= fits_up_to else ("oom", "out of memory")

    return trial


@pytest.mark.parametrize("fits", [1, 7, 8, 9, 100, 383, 384, 1000])
@pytest.mark.parametrize("start", [1, 8, 64])
def test_search_finds_the_exact_largest_batch(fits, start):
    result = MB.search(start, threshold(fits), max_trials=64, budget_s=1e9, limit=1 << 20)
    assert result.stopped == "converged" and result.exact
    assert result.largest_ok == fits and result.smallest_oom == fits + 1


def test_search_doubles_then_bisects():
    log: list[int] = []
    result = MB.search(8, threshold(100, log), max_trials=64, budget_s=1e9, limit=4096)
    assert log == [8, 16, 32, 64, 128, 96, 112, 104, 100, 102, 101]
    assert [s for _, s in result.trials] == ["ok"] * 4 + ["oom", "ok", "oom", "oom", "ok"] + [
        "oom",
        "oom",
    ]


def test_search_halves_when_the_start_does_not_fit_and_says_when_nothing_fits():
    log: list[int] = []
    result = MB.search(64, threshold(5, log), max_trials=64, budget_s=1e9, limit=4096)
    assert log[:5] == [64, 32, 16, 8, 4] and result.largest_ok == 5
    none = MB.search(8, threshold(0), max_trials=64, budget_s=1e9, limit=4096)
    assert none.stopped == "nothing_fits" and none.largest_ok is None and none.smallest_oom == 1


def test_search_is_bounded_in_trials_time_and_batch():
    result = MB.search(8, threshold(100), max_trials=6, budget_s=1e9, limit=4096)
    assert result.stopped == "max_trials" and len(result.trials) == 6 and not result.exact
    assert (result.largest_ok, result.smallest_oom) == (96, 128)  # the bracket so far

    now = [0.0]

    def slow(batch: int) -> tuple[str, str | None]:
        now[0] += 10.0  # every trial takes 10 s
        return "ok", None

    timed = MB.search(1, slow, max_trials=64, budget_s=35.0, limit=4096, clock=lambda: now[0])
    assert timed.stopped == "budget" and len(timed.trials) == 4  # none starts after 35 s

    capped = MB.search(8, threshold(10**9), max_trials=64, budget_s=1e9, limit=100)
    assert capped.stopped == "limit" and capped.largest_ok == 100 and capped.smallest_oom is None


def test_a_trial_failing_otherwise_ends_the_search_with_its_reason():
    def crash(batch: int) -> tuple[str, str | None]:
        return ("ok", None) if batch < 32 else ("crashed", "RuntimeError: boom")

    result = MB.search(8, crash, max_trials=64, budget_s=1e9, limit=4096)
    assert result.stopped == "failed" and result.largest_ok == 16
    assert result.reason == "batch 32: crashed: RuntimeError: boom"


def test_max_batch_table_parses_and_bad_values_are_one_line():
    text = 'name = "x"\n[max_batch]\nsearch = true\nmax_trials = 5\nbudget_s = 60\n'
    parsed = S.parse_sweep(text, source="s.toml")
    assert parsed.max_batch == MB.MaxBatchSearch(search=True, max_trials=5, budget_s=60)
    assert S.parse_sweep('name = "x"\n').max_batch.search is False
    for bad, needle in [
        ("search = 1", "max_batch.search = 1: expected true or false"),
        ("max_trials = 0", "max_batch.max_trials = 0: expected an integer >= 1"),
        ("budget_s = nan", "max_batch.budget_s = nan: not a finite number"),  # refused on read
        ("limit = 2.5", "max_batch.limit = 2.5"),
        ("steps = 3", "unknown key 'max_batch.steps'"),
    ]:
        with pytest.raises(UserError) as err:
            S.parse_sweep(f'name = "x"\n[max_batch]\n{bad}\n', source="s.toml")
        assert str(err.value).startswith("s.toml: ") and needle in str(err.value)
    with pytest.raises(UserError, match="max_batch must be a table"):
        S.parse_sweep('name = "x"\nmax_batch = true\n', source="s.toml")


def test_configurations_group_points_by_everything_but_batch_and_repeat():
    from distrinews.runspec import RunSpec

    specs = [
        RunSpec(per_device_batch=b, repeat=r, precision=p)
        for b in (64, 32, 128)
        for r in (0, 1)
        for p in ("bf16", "fp32")
    ]
    groups = dict(MB.configurations(specs))
    assert len(groups) == 2
    assert {s.per_device_batch for s in groups.values()} == {32}  # the smallest is the start
    trial = MB.trial_spec(specs[0], 256, MB.MaxBatchSearch(trial_steps=3))
    assert (trial.per_device_batch, trial.measured_steps, trial.warmup_steps) == (256, 3, 1)
