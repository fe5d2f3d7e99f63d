"""Latency and throughput of a running inference service under a concurrency sweep.

Start a server, then drive it::

    distrinews-bench serve --checkpoint runs/tiny --port 8000 &
    distrinews-bench bench-serve --url http://127.0.0.1:8000 --concurrency 1,4,16 \\
        --requests 200 --max-seconds 30 --texts-per-request 1 --name serving

At each concurrency level N, N client tasks each send ``POST /predict`` back to back (a
*closed loop*: a new request leaves as soon as that task's previous answer arrives) until the
level has sent ``--requests`` requests or ``--max-seconds`` have passed. Per level we record:

* requests/s -- successful requests divided by the level's wall time;
* latency p50/p95/p99 -- percentiles of the end-to-end time of successful requests (send to last
  byte, as the client sees it: queueing in the server included). Percentiles, not a mean: a
  service is judged by its slow tail.

The server runs one batch at a time, so once the model is busy extra requests queue: requests/s
flattens while latency grows about linearly with N -- the figure shows where that knee is. A
server started with ``--batch-window-ms`` joins queued requests into one forward pass, which
moves the knee when the per-request cost (HTTP, JSON, a thread hop) rather than the model's
arithmetic dominates. On a small CPU machine the client competes with the server for the same
cores; read absolute figures from such a machine as a lower bound.

Rows go to ``results/<name>/serving.jsonl`` (:mod:`harness.serving_store`). Only loopback URLs
are accepted unless ``allow_remote`` is set: a benchmark should never load someone else's host
by a typo.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from distrinews.errors import UserError
from distrinews.files import refuse_symlink
from distrinews.metrics import percentile
from distrinews.safeio import decimal

from .serving_store import (
    SERVING_SCHEMA_VERSION,
    append_serving_row,
    read_serving_rows,
    serving_path,
)

#: Built-in request texts (news-like, one per AG News class and a few more), used without --data.
#: Most requests in flight at once (--concurrency): each holds a connection and an asyncio task,
#: so 10^9 of them would exhaust memory and file descriptors before the first one is sent.
MAX_CONCURRENCY = 1024

SAMPLE_TEXTS: tuple[str, ...] = (
    "Stocks rallied on Wall Street after the central bank left interest rates unchanged.",
    "The home side scored twice in stoppage time to win the championship final.",
    "Rebels and government forces agreed to a ceasefire after talks brokered by the UN.",
    "The chip maker unveiled a faster processor aimed at laptops and data centres.",
    "Oil prices climbed to a record high as supplies from the Gulf tightened.",
    "NASA said the probe had sent back the first close-up images of the comet's surface.",
    "The striker signed a four-year contract with the club for an undisclosed fee.",
    "Voters went to the polls in the first presidential election since the war ended.",
    "Shares of the software company fell after it cut its full-year revenue forecast.",
    "Researchers released an open-source tool that finds security flaws in web browsers.",
    "The coach was fired after the team lost its fifth straight game of the season.",
    "The prime minister announced a cabinet reshuffle amid a corruption scandal.",
)


@dataclass(frozen=True, kw_only=True)
class BenchServeSpec:
    """One bench-serve run: where to send load, and how much."""

    url: str
    """Base URL of the running server, e.g. http://127.0.0.1:8000 (loopback only by default)."""
    concurrency: tuple[int, ...] = (1, 4, 16)
    """Concurrency levels to sweep, in order: requests in flight at once."""
    requests: int = 200
    """Most requests sent per level."""
    max_seconds: float = 30.0
    """Most wall time per level; the level stops sending when it runs out."""
    texts_per_request: int = 1
    """Texts in each POST /predict (they form one batch on the server)."""
    warmup_requests: int = 3
    """Requests sent (one at a time, not recorded) before the first level, so first-call costs
    (lazy initialisation, allocator growth, connection set-up) stay out of the figures."""
    timeout_s: float = 60.0
    """Per-request timeout; a request that exceeds it counts as an error."""
    allow_remote: bool = False
    """Permit a non-loopback host (this machine must only send load to itself by default)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "url", check_url(self.url, allow_remote=self.allow_remote))
        if not self.concurrency or any(
            isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in self.concurrency
        ):
            raise UserError(
                f"concurrency must be one or more positive integers, got {self.concurrency!r}"
            )
        for name in ("requests", "texts_per_request"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"{name} must be a positive integer, got {value!r}")
        if self.warmup_requests < 0:
            raise UserError(f"warmup_requests must be >= 0, got {self.warmup_requests}")
        for name in ("max_seconds", "timeout_s"):
            if not getattr(self, name) > 0:
                raise UserError(f"{name} must be > 0, got {getattr(self, name)}")


@dataclass(frozen=True, kw_only=True)
class LevelResult:
    """What one concurrency level measured."""

    concurrency: int
    latencies_s: tuple[float, ...]
    """End-to-end latency of each successful request, in completion order."""
    errors: int
    """Requests that failed: a non-200 answer or a transport error/timeout."""
    duration_s: float
    """Wall time from the first send to the last answer."""
    error_samples: tuple[str, ...] = field(default=())
    """Up to 3 one-line descriptions of errors, for the console."""

    @property
    def requests(self) -> int:
        return len(self.latencies_s) + self.errors


def check_url(url: str, *, allow_remote: bool) -> str:
    """The URL without a trailing slash; refuses non-http(s) and, unless allowed, non-loopback."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"--url {url!r}: expected http://HOST:PORT, e.g. http://127.0.0.1:8000")
    if not allow_remote and not is_loopback(parts.hostname):
        raise UserError(
            f"--url {url!r}: host {parts.hostname!r} is not loopback; bench-serve only sends "
            "load to this machine (127.0.0.0/8, ::1, localhost) unless --allow-remote"
        )
    return url.rstrip("/")


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: we do not resolve it (DNS may point anywhere)
        return False


def parse_concurrency(text: str) -> tuple[int, ...]:
    """``"1,4,16"`` -> ``(1, 4, 16)``; anything else is a UserError naming the bad part."""
    out = []
    for part in text.split(","):
        part = part.strip()
        n = decimal(part)
        if n is None and part.isascii() and part.isdigit():
            n = MAX_CONCURRENCY + 1  # more digits than decimal reads: over the bound anyway
        if not n or n < 1:
            raise UserError(
                f"--concurrency {text!r}: {part!r} is not a positive integer (e.g. 1,4,16)"
            )
        if n > MAX_CONCURRENCY:
            raise UserError(
                f"--concurrency {text!r}: {part} requests in flight; at most {MAX_CONCURRENCY} "
                "(each holds a connection and a task of its own)"
            )
        out.append(int(part))
    return tuple(out)


class RequestBodies(Sequence[dict]):
    """``count`` request bodies cycling through ``texts`` (deterministic, so runs compare), each
    made when it is sent: ``--requests`` bounds the requests, never memory up front (10^9
    prebuilt bodies were a MemoryError before the first request)."""

    def __init__(self, texts: Sequence[str], texts_per_request: int, count: int) -> None:
        if not texts:
            raise UserError("no texts to send")
        self._texts, self._per, self._count = tuple(texts), texts_per_request, count

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._count))]
        if not -self._count <= i < self._count:
            raise IndexError(i)
        i %= self._count
        n = len(self._texts)
        return {"texts": [self._texts[(i * self._per + j) % n] for j in range(self._per)]}


def request_bodies(texts: Sequence[str], texts_per_request: int, count: int) -> RequestBodies:
    """``count`` request bodies cycling through ``texts``, made as they are sent."""
    return RequestBodies(texts, texts_per_request, count)


def load_texts(data: str | None, *, max_chars: int = 2000) -> tuple[str, ...]:
    """Texts from a load_agnews source (cut to ``max_chars``), or the built-in samples."""
    if data is None:
        return SAMPLE_TEXTS
    from distrinews.dataset import load_agnews

    news = load_agnews(data)
    if news.texts is None:
        raise UserError(f"--data {data!r}: synthetic data has no texts; give a .csv/.jsonl file")
    return tuple(text[:max_chars] for text in news.texts)


def level_columns(level: LevelResult, *, texts_per_request: int) -> dict[str, Any]:
    """The measured columns of a serving row for one level (pure)."""
    lat = level.latencies_s
    ok = len(lat)
    rps = ok / level.duration_s if level.duration_s > 0 else None
    return {
        "concurrency": level.concurrency,
        "texts_per_request": texts_per_request,
        "requests": level.requests,
        "errors": level.errors,
        "duration_s": level.duration_s,
        "requests_per_s": rps,
        "texts_per_s": None if rps is None else rps * texts_per_request,
        "latency_s_p50": percentile(lat, 50) if lat else None,
        "latency_s_p95": percentile(lat, 95) if lat else None,
        "latency_s_p99": percentile(lat, 99) if lat else None,
        "latency_s_mean": sum(lat) / ok if lat else None,
    }


# --------------------------------------------------------------------------------------------
# Driving the server (async httpx client)
# --------------------------------------------------------------------------------------------


async def run_level(
    client: Any, bodies: Sequence[dict], *, concurrency: int, max_seconds: float
) -> LevelResult:
    """Send ``bodies`` to ``POST /predict`` with ``concurrency`` closed-loop tasks."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    next_index = 0  # shared by the tasks; safe without a lock on one event loop
    deadline = time.perf_counter() + max_seconds

    async def one_client() -> None:
        nonlocal next_index
        while next_index < len(bodies) and time.perf_counter() < deadline:
            body = bodies[next_index]
            next_index += 1
            t0 = time.perf_counter()
            try:
                response = await client.post("/predict", json=body)
                failure = None if response.status_code == 200 else _describe(response)
            except httpx.HTTPError as exc:  # refused, reset, timed out: the request failed
                failure = f"{type(exc).__name__}: {exc}"
            elapsed = time.perf_counter() - t0
            if failure is None:
                latencies.append(elapsed)
            else:
                errors.append(failure)

    start = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(concurrency)))
    duration = time.perf_counter() - start
    return LevelResult(
        concurrency=concurrency,
        latencies_s=tuple(latencies),
        errors=len(errors),
        duration_s=duration,
        error_samples=tuple(errors[:3]),
    )


def _describe(response: Any) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = response.text[:200]
    return f"HTTP {response.status_code}: {detail}"


async def server_info(client: Any, url: str) -> dict[str, Any]:
    """The server's /readyz facts; a UserError when it is unreachable or not ready."""
    import httpx

    try:
        response = await client.get("/readyz")
    except httpx.HTTPError as exc:
        raise UserError(
            f"cannot reach {url} ({type(exc).__name__}); is the server running?"
        ) from None
    if response.status_code != 200:
        raise UserError(f"{url} is not ready ({_describe(response)}); wait for /readyz")
    return response.json()


async def bench_serve_async(
    spec: BenchServeSpec,
    texts: Sequence[str],
    *,
    transport: Any = None,
    on_level: Any = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run the sweep; return (server info, one row per level). ``transport`` lets tests drive
    an in-process ASGI app (``httpx.ASGITransport``) instead of a socket."""
    import httpx

    top = max(spec.concurrency)
    async with httpx.AsyncClient(
        base_url=spec.url,
        transport=transport,
        timeout=spec.timeout_s,
        # A connection per in-flight request, kept alive: we measure the server, not TCP setup.
        limits=httpx.Limits(max_connections=top, max_keepalive_connections=top),
        trust_env=False,  # never route loopback load through an HTTP(S)_PROXY from the env
    ) as client:
        info = await server_info(client, spec.url)
        # Respect the server's input limits, so every request measures inference, not a 422.
        if spec.texts_per_request > info.get("max_texts", spec.texts_per_request):
            raise UserError(
                f"--texts-per-request {spec.texts_per_request} is over the server's limit of "
                f"{info['max_texts']} texts per request"
            )
        if "max_chars" in info:
            texts = [text[: info["max_chars"]] for text in texts]
        started_at = datetime.now(UTC).isoformat(timespec="seconds")
        if spec.warmup_requests:
            warm = request_bodies(texts, spec.texts_per_request, spec.warmup_requests)
            await run_level(client, warm, concurrency=1, max_seconds=spec.max_seconds)
        rows = []
        for concurrency in spec.concurrency:
            bodies = request_bodies(texts, spec.texts_per_request, spec.requests)
            level = await run_level(
                client, bodies, concurrency=concurrency, max_seconds=spec.max_seconds
            )
            row = {
                "schema_version": SERVING_SCHEMA_VERSION,
                "kind": "serving",
                "started_at": started_at,
                "checkpoint": info.get("checkpoint"),
                "device": info.get("device"),
                "batch_window_s": info.get("batch_window_s"),
                "url": spec.url,
                **level_columns(level, texts_per_request=spec.texts_per_request),
            }
            rows.append(row)
            if on_level is not None:
                on_level(row, level)
    return info, rows


def bench_serve(
    spec: BenchServeSpec,
    texts: Sequence[str],
    *,
    results_dir: Path | None = None,
    on_level: Any = None,
) -> list[dict[str, Any]]:
    """Run the sweep against ``spec.url``; append each level's row to ``results_dir`` as it
    finishes (so an interrupted sweep keeps the levels it completed)."""

    if results_dir is not None:
        # Before any request: the rows will be appended to this file, so it must be a serving
        # ledger (not a symlink, not some other file under that name) -- refused in one line.
        refuse_symlink(serving_path(results_dir))
        read_serving_rows(results_dir)

    def record(row: dict[str, Any], level: LevelResult) -> None:
        if results_dir is not None:
            append_serving_row(results_dir, row)
        if on_level is not None:
            on_level(row, level)

    _info, rows = asyncio.run(bench_serve_async(spec, texts, on_level=record))
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A fixed-width console table of serving rows (latencies in milliseconds)."""
    names = ("requests", "errors", "req/s", "p50 ms", "p95 ms", "p99 ms")
    lines = [f"{'conc':>5} " + " ".join(f"{name:>8}" for name in names)]
    for r in rows:
        lines.append(
            f"{r['concurrency']:>5} {r['requests']:>8} {r['errors']:>8} "
            f"{_num(r['requests_per_s'], 1):>8} {_ms(r['latency_s_p50']):>8} "
            f"{_ms(r['latency_s_p95']):>8} {_ms(r['latency_s_p99']):>8}"
        )
    return "\n".join(lines)


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"
