"""The suite's own schedule (tests/conftest.py::deal): slow tests dealt across xdist workers."""

from __future__ import annotations

from types import SimpleNamespace

from tests.conftest import SLOW_DEFAULT_S, deal


class Item:
    def __init__(
        self, name: str, seconds: float | None = None, slow: bool = False, group: str = ""
    ) -> None:
        self.name, self.group = name, group or None
        kwargs = {} if seconds is None else {"seconds": seconds}
        self.mark = SimpleNamespace(kwargs=kwargs) if (slow or seconds is not None) else None

    def get_closest_marker(self, name: str):
        return self.mark if name == "slow" else None

    def __repr__(self) -> str:
        return self.name


GROUP = lambda item: item.group  # noqa: E731


def _slices(items: list, workers: int) -> list[list]:
    """What pytest-xdist's worksteal hands each worker first: contiguous near-equal slices."""
    out, left, start = [], len(items), 0
    for i in range(workers):
        size = left // (workers - i)
        out.append(items[start : start + size])
        start, left = start + size, left - size
    return out


def test_each_worker_starts_on_its_share_of_the_slow_tests_longest_first():
    quick = [Item(f"q{i}") for i in range(20)]
    slow = [Item("s1", slow=True), Item("long", 100), Item("mid", 50), Item("s2", slow=True),
            Item("mid2", 45)]  # fmt: skip
    items = quick[:5] + slow[:2] + quick[5:] + slow[2:]
    order = deal(items, 3, group=GROUP)
    assert sorted(order, key=id) == sorted(items, key=id)  # a permutation: nothing lost
    heads = [[it.name for it in s if it.mark] for s in _slices(order, 3)]
    # Longest-processing-time: 100 alone; 50 and 45 apart; the 10 s defaults fill the least.
    assert heads == [["long"], ["mid", "s2"], ["mid2", "s1"]]
    for s in _slices(order, 3):  # slow tests at each slice's head, quick ones after
        marks = [it.mark is not None for it in s]
        assert marks == sorted(marks, reverse=True)
    assert SLOW_DEFAULT_S == 10.0  # the default the expected heads above assume


def test_one_worker_runs_slow_tests_first_longest_first():
    items = [Item("q"), Item("a", slow=True), Item("b", 30), Item("q2")]
    assert [it.name for it in deal(items, 1, group=GROUP)] == ["b", "a", "q", "q2"]


def test_more_slow_tests_than_a_slice_holds_are_kept():
    items = [Item(f"s{i}", slow=True) for i in range(7)] + [Item("q")]
    order = deal(items, 4, group=GROUP)
    assert len(order) == 8 and sorted(it.name for it in order) == sorted(it.name for it in items)


def test_slow_tests_sharing_a_module_fixture_stay_on_one_worker():
    """A module fixture is built once per worker that runs one of its tests (a server, a launch)."""
    served = [Item(f"serve{i}", 5, group="server") for i in range(4)]
    items = [Item("long", 25), *served, Item("other", 15), *[Item(f"q{i}") for i in range(10)]]
    heads = [[it.name for it in s if it.mark] for s in _slices(deal(items, 3, group=GROUP), 3)]
    assert ["serve0", "serve1", "serve2", "serve3"] in heads  # together, in file order
    assert heads == [["long"], ["serve0", "serve1", "serve2", "serve3"], ["other"]]


def test_the_real_grouping_reads_module_scoped_fixtures(request):
    from tests.conftest import shared_fixture

    assert shared_fixture(request.node) is None  # only function and session fixtures here
