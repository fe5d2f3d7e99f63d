"""bench-serve: URL safety, request accounting, the serving ledger and its figure.

The load driver runs here against the real app in-process (httpx.ASGITransport, lifespan
included); tests/distributed/test_serve_process.py drives a real uvicorn server over TCP.
"""

from __future__ import annotations

import asyncio
import json
import socket

import httpx
import pytest
from click.testing import CliRunner

from distrinews.errors import UserError
from distrinews.serve import ServeLimits, create_app, get_predictor
from harness.bench_serve import (
    SAMPLE_TEXTS,
    BenchServeSpec,
    LevelResult,
    bench_serve,
    bench_serve_async,
    check_url,
    format_table,
    level_columns,
    parse_concurrency,
    request_bodies,
)
from harness.cli import cli
from harness.report.figures import fig_serving
from harness.serving_store import (
    SERVING_KEYS,
    append_serving_row,
    read_serving_rows,
    serving_path,
)
from tests.unit.test_serve import FailOnText, build_tiny_checkpoint

# -- the URL guard: load goes to this machine only ---------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8000", "http://127.3.2.1:1/", "http://localhost:80", "http://[::1]:8000"],
)
def test_loopback_urls_are_accepted(url):
    assert check_url(url, allow_remote=False) == url.rstrip("/")


@pytest.mark.parametrize(
    "url", ["http://10.0.0.1:8000", "http://example.com", "http://0.0.0.0:8000", "http://[::]:80"]
)
def test_non_loopback_urls_are_refused_unless_allowed(url):
    with pytest.raises(UserError, match=r"not loopback.*--allow-remote"):
        check_url(url, allow_remote=False)
    assert check_url(url, allow_remote=True) == url.rstrip("/")


@pytest.mark.parametrize("url", ["127.0.0.1:8000", "ftp://127.0.0.1/", "http://", ""])
def test_malformed_urls_are_refused(url):
    with pytest.raises(UserError, match="expected http://HOST:PORT"):
        check_url(url, allow_remote=True)


def test_cli_refuses_a_remote_url_in_one_line(tmp_path):
    args = ["bench-serve", "--url", "http://192.168.1.5:8000", "--results", str(tmp_path)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "not loopback" in result.output
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("name", "says"),
    [("../up", "use letters"), (".hidden", "use letters"), ("x" * 101, "at most 100")],
)
def test_cli_refuses_a_folder_name_a_sweep_could_not_have(tmp_path, name, says):
    # One rule for results-folder names (harness.spec.check_name), sweeps and serving alike.
    args = ["bench-serve", "--url", "http://127.0.0.1:9", "--results", str(tmp_path)]
    result = CliRunner().invoke(cli, [*args, "--name", name])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and "--name" in result.output and says in result.output
    assert not any(tmp_path.iterdir())


# -- spec and pure helpers --------------------------------------------------------------------


def test_parse_concurrency():
    assert parse_concurrency("1,4,16") == (1, 4, 16)
    assert parse_concurrency(" 2 ") == (2,)
    for bad in ("", "1,,2", "0", "1,x", "-1"):
        with pytest.raises(UserError, match="--concurrency"):
            parse_concurrency(bad)


@pytest.mark.parametrize(
    ("field", "value"),
    [("concurrency", ()), ("concurrency", (1, 0)), ("requests", 0), ("max_seconds", 0.0)],
)
def test_spec_rejects_bad_values(field, value):
    with pytest.raises(UserError, match=field):
        BenchServeSpec(url="http://127.0.0.1:1", **{field: value})


def test_request_bodies_cycle_through_the_texts():
    bodies = request_bodies(["a", "b", "c"], 2, 3)
    assert list(bodies) == [{"texts": ["a", "b"]}, {"texts": ["c", "a"]}, {"texts": ["b", "c"]}]
    assert len(bodies) == 3 and bodies[-1] == bodies[2]


def test_a_billion_requests_cost_no_memory_before_they_are_sent():
    """Issue 25 (unbounded): --requests 10^9 built 10^9 bodies up front."""
    import tracemalloc

    tracemalloc.start()
    bodies = request_bodies(["a", "b", "c"], 2, 10**9)
    assert len(bodies) == 10**9 and bodies[10**9 - 1] == bodies[0]  # period 3
    assert tracemalloc.get_traced_memory()[1] < 1 << 20
    tracemalloc.stop()


def test_level_columns_computes_rate_and_percentiles():
    level = LevelResult(
        concurrency=4, latencies_s=tuple(i / 100 for i in range(1, 101)), errors=2, duration_s=2.0
    )
    row = level_columns(level, texts_per_request=3)
    assert (row["requests"], row["errors"]) == (102, 2)
    assert row["requests_per_s"] == pytest.approx(50.0)  # successes only
    assert row["texts_per_s"] == pytest.approx(150.0)
    assert row["latency_s_p50"] == pytest.approx(0.505)
    assert row["latency_s_p95"] == pytest.approx(0.9505)
    assert row["latency_s_p99"] == pytest.approx(0.9901)
    assert row["latency_s_mean"] == pytest.approx(0.505)


def test_level_columns_a_level_where_everything_failed_gives_nulls_not_zeros():
    row = level_columns(
        LevelResult(concurrency=1, latencies_s=(), errors=5, duration_s=1.0), texts_per_request=1
    )
    assert row["requests_per_s"] == 0.0 and row["errors"] == 5
    assert row["latency_s_p50"] is None and row["latency_s_mean"] is None


# -- the serving ledger ------------------------------------------------------------------------


def _row(concurrency=1, started="2026-01-01T00:00:00+00:00", p50=0.01):
    return {
        "schema_version": 1,
        "kind": "serving",
        "started_at": started,
        "checkpoint": "/runs/tiny/checkpoints/step-00000005",
        "device": "cpu",
        "batch_window_s": 0.0,
        "url": "http://127.0.0.1:8000",
        "concurrency": concurrency,
        "texts_per_request": 1,
        "requests": 10,
        "errors": 0,
        "duration_s": 0.5,
        "requests_per_s": 20.0 * concurrency,
        "texts_per_s": 20.0 * concurrency,
        "latency_s_p50": p50,
        "latency_s_p95": None if p50 is None else p50 * 2,
        "latency_s_p99": None if p50 is None else p50 * 3,
        "latency_s_mean": p50,
    }


def test_serving_rows_round_trip_and_a_torn_line_is_dropped(tmp_path):
    append_serving_row(tmp_path, _row(1))
    with serving_path(tmp_path).open("a") as fh:
        fh.write('{"kind": "serving", "concurr')  # a kill in the middle of a write
    assert read_serving_rows(tmp_path) == [_row(1)]
    append_serving_row(tmp_path, _row(2))  # cuts the torn tail off first
    assert read_serving_rows(tmp_path) == [_row(1), _row(2)]
    lines = serving_path(tmp_path).read_text().splitlines()
    assert [json.loads(line)["concurrency"] for line in lines] == [1, 2]


def test_bad_serving_rows_are_refused(tmp_path):
    with pytest.raises(ValueError, match="lacks"):
        append_serving_row(tmp_path, {k: v for k, v in _row().items() if k != "errors"})
    with pytest.raises(ValueError, match="not finite"):
        append_serving_row(tmp_path, {**_row(), "latency_s_p50": float("nan")})
    with pytest.raises(ValueError, match="flat"):
        append_serving_row(tmp_path, {**_row(), "url": ["x"]})
    assert not serving_path(tmp_path).exists()


def test_a_corrupt_serving_ledger_names_file_and_line(tmp_path):
    serving_path(tmp_path).write_text(json.dumps(_row()) + "\nnot json\n")
    with pytest.raises(UserError, match=r"serving.jsonl: line 2"):
        read_serving_rows(tmp_path)


def test_serving_figure_draws_one_colour_per_run_and_skips_nulls():
    rows = [_row(c) for c in (1, 4, 16)] + [
        {
            **_row(c, started="2026-01-02T00:00:00+00:00", p50=None if c == 16 else 0.02),
            "batch_window_s": 0.005,
        }
        for c in (1, 4, 16)
    ]
    fig = fig_serving(rows)
    assert len(fig.data) == 2 * 4  # per run: requests/s + p50/p95/p99
    throughput = [t for t in fig.data if t.showlegend is not False]
    assert [list(t.x) for t in throughput] == [[1, 4, 16], [1, 4, 16]]
    assert list(throughput[0].y) == [20.0, 80.0, 320.0]
    p50_second = [t for t in fig.data if t.name == "p50"][1]
    assert list(p50_second.y) == [20.0, 20.0, None]  # milliseconds; null stays a gap
    assert throughput[0].line.color != throughput[1].line.color
    assert list(fig.layout.xaxis.tickvals) == [1, 4, 16]
    assert throughput[0].name.startswith("tiny/step-00000005 · 1 text/req · 2026-01-01")
    assert "1 text/req · batch window 5 ms · 2026-01-02" in throughput[1].name
    fig.to_json()  # serialisable for the HTML report


def test_format_table_prints_milliseconds_and_dashes_for_nulls():
    text = format_table([_row(4), _row(16, p50=None)])
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["conc", "requests", "errors", "req/s"]
    assert all(head in lines[0] for head in ("p50 ms", "p95 ms", "p99 ms"))
    assert lines[1].split() == ["4", "10", "0", "80.0", "10.0", "20.0", "30.0"]
    assert lines[2].split()[-3:] == ["-", "-", "-"]


# -- the driver against the real app, in-process -----------------------------------------------


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("bench"))[0]


def test_bench_counts_server_errors_and_keeps_going(tiny_ckpt):
    app = create_app(tiny_ckpt, device="cpu")
    spec = BenchServeSpec(
        url="http://127.0.0.1:1",
        concurrency=(1, 3),
        requests=12,
        texts_per_request=2,
        warmup_requests=1,
    )
    # Every third request body holds the trigger text (bodies cycle through 6 texts, 2 each).
    texts = ["bank", "oil", "nasa", "boom", "team", "war"]

    async def drive():
        async with app.router.lifespan_context(app):
            service = app.state.service
            assert await asyncio.to_thread(service.done.wait, 60)
            app.dependency_overrides[get_predictor] = lambda: FailOnText(service.predictor, "boom")
            transport = httpx.ASGITransport(app=app)
            return await bench_serve_async(spec, texts, transport=transport)

    info, rows = asyncio.run(drive())
    assert info["checkpoint"] == str(tiny_ckpt)
    assert [r["concurrency"] for r in rows] == [1, 3]
    for row in rows:
        assert set(row) == set(SERVING_KEYS)
        assert (row["requests"], row["errors"]) == (12, 4)  # bodies 1, 4, 7, 10 hold "boom"
        assert row["texts_per_request"] == 2 and row["checkpoint"] == str(tiny_ckpt)
        assert 0 < row["latency_s_p50"] <= row["latency_s_p95"] <= row["latency_s_p99"]
        assert row["requests_per_s"] == pytest.approx(8 / row["duration_s"])
    assert rows[0]["started_at"] == rows[1]["started_at"]


def test_bench_stops_a_level_at_max_seconds(tiny_ckpt):
    app = create_app(tiny_ckpt, device="cpu")
    spec = BenchServeSpec(
        url="http://127.0.0.1:1",
        concurrency=(2,),
        requests=100_000,
        max_seconds=0.5,
        warmup_requests=0,
    )

    async def drive():
        async with app.router.lifespan_context(app):
            assert await asyncio.to_thread(app.state.service.done.wait, 60)
            return await bench_serve_async(
                spec, SAMPLE_TEXTS, transport=httpx.ASGITransport(app=app)
            )

    _, (row,) = asyncio.run(drive())
    assert 0 < row["requests"] < 100_000 and row["errors"] == 0
    assert 0.5 <= row["duration_s"] < 5.0  # in-flight requests finish after the deadline


def test_requests_stay_within_the_servers_limits(tiny_ckpt):
    app = create_app(tiny_ckpt, device="cpu", limits=ServeLimits(max_texts=2, max_chars=5))

    async def drive(texts_per_request):
        spec = BenchServeSpec(
            url="http://127.0.0.1:1",
            concurrency=(1,),
            requests=3,
            texts_per_request=texts_per_request,
            warmup_requests=0,
        )
        async with app.router.lifespan_context(app):
            assert await asyncio.to_thread(app.state.service.done.wait, 60)
            transport = httpx.ASGITransport(app=app)
            return await bench_serve_async(spec, SAMPLE_TEXTS, transport=transport)

    _, (row,) = asyncio.run(drive(2))  # the long sample texts are cut to 5 characters
    assert (row["requests"], row["errors"]) == (3, 0)
    with pytest.raises(UserError, match="over the server's limit of 2 texts"):
        asyncio.run(drive(3))


def test_an_unreachable_server_is_a_user_error(tmp_path):
    with socket.socket() as sock:  # a free port that nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    spec = BenchServeSpec(url=f"http://127.0.0.1:{port}", concurrency=(1,), requests=1)
    with pytest.raises(UserError, match=r"cannot reach .*is the server running"):
        bench_serve(spec, SAMPLE_TEXTS, results_dir=tmp_path)
    assert not serving_path(tmp_path).exists()


def test_a_server_that_is_not_ready_is_a_user_error(tiny_ckpt):
    app = create_app(tiny_ckpt, device="cpu")  # lifespan not run: the model never loads
    spec = BenchServeSpec(url="http://127.0.0.1:1", concurrency=(1,), requests=1)

    async def drive():
        transport = httpx.ASGITransport(app=app)
        return await bench_serve_async(spec, SAMPLE_TEXTS, transport=transport)

    with pytest.raises(UserError, match=r"not ready.*503"):
        asyncio.run(drive())
