"""A real server: `distrinews-bench serve` as a subprocess on a free loopback port, over HTTP.

One server (module fixture) answers every test here: predictions equal the model's own, bad
input is a 422 that leaves it serving, bench-serve drives it and records its rows, and SIGTERM
shuts it down cleanly.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch
from click.testing import CliRunner

from harness.cli import cli
from harness.serving_store import SERVING_KEYS, read_serving_rows
from tests.unit.test_serve import (
    MAX_LENGTH,
    TEXTS,
    build_tiny_checkpoint,
    reference_probabilities,
    served_probabilities,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 90.0


def free_port() -> int:
    """A port the kernel just handed out (bind to 0), so parallel runs never collide."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(base URL, process, checkpoint dir, model, tokenizer, log file) of a ready server."""
    tmp = tmp_path_factory.mktemp("served")
    ckpt, model, tokenizer = build_tiny_checkpoint(tmp)
    port = free_port()
    log = (tmp / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "serve", "--checkpoint", str(tmp / "run"),
         "--port", str(port), "--device", "cpu", "--log-level", "info"],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}: {_tail(tmp / 'server.log')}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                pytest.fail(
                    f"server not ready in {STARTUP_TIMEOUT_S} s: {_tail(tmp / 'server.log')}"
                )
            time.sleep(0.2)
        yield url, proc, ckpt, model, tokenizer, tmp / "server.log"
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        log.close()


def _tail(path: Path) -> str:
    return path.read_text()[-2000:]


def test_served_predictions_over_http_equal_the_models_own(server):
    url, _, ckpt, model, tokenizer, _ = server
    ready = httpx.get(f"{url}/readyz", timeout=10).json()
    assert ready["checkpoint"] == str(ckpt) and ready["max_length"] == MAX_LENGTH
    response = httpx.post(f"{url}/predict", json={"texts": TEXTS}, timeout=30)
    assert response.status_code == 200
    preds = response.json()["predictions"]
    expected = reference_probabilities(model, tokenizer, TEXTS)
    torch.testing.assert_close(served_probabilities(preds), expected, rtol=0, atol=1e-5)
    assert [p["label_index"] for p in preds] == expected.argmax(dim=1).tolist()


def test_bad_input_over_http_is_a_422_and_the_server_keeps_serving(server):
    url = server[0]
    with httpx.Client(base_url=url, timeout=30) as client:
        bad = client.post("/predict", json={"texts": ["x" * 2001]})
        assert bad.status_code == 422
        assert bad.json()["detail"][0]["loc"] == ["body", "texts", 0]
        assert client.post("/predict", content=b"not json").status_code == 422
        assert client.post("/predict", json={"texts": ["bank"]}).status_code == 200
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/openapi.json").json()["info"]["title"] == "distrinews classifier"


def test_bench_serve_against_the_real_server_records_one_row_per_level(server, tmp_path):
    url, _, ckpt, _, _, _ = server
    args = ["bench-serve", "--url", url, "--concurrency", "1,2", "--requests", "10",
            "--max-seconds", "30", "--texts-per-request", "2", "--results", str(tmp_path),
            "--name", "smoke"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    rows = read_serving_rows(tmp_path / "smoke")
    assert [r["concurrency"] for r in rows] == [1, 2]
    for row in rows:
        assert set(row) == set(SERVING_KEYS)
        assert (row["requests"], row["errors"], row["texts_per_request"]) == (10, 0, 2)
        assert row["checkpoint"] == str(ckpt) and row["device"] == "cpu" and row["url"] == url
        assert row["batch_window_s"] == 0.0
        assert 0 < row["latency_s_p50"] <= row["latency_s_p95"] <= row["latency_s_p99"]
        assert row["requests_per_s"] == pytest.approx(10 / row["duration_s"])
        json.dumps(row, allow_nan=False)
    assert "conc" in result.output and "smoke/serving.jsonl" in result.output


def test_sigterm_shuts_the_server_down_cleanly(server):
    """Last test of the module: it stops the shared server.

    uvicorn finishes in-flight requests and the lifespan, then re-raises the signal so the
    process ends the way a SIGTERM'd process should: return code -SIGTERM (or 0 on older
    versions). The log line is the proof that the shutdown was the graceful one.
    """
    url, proc, log = server[0], server[1], server[-1]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) in (0, -signal.SIGTERM)
    text = log.read_text()
    assert "distrinews.serve: model ready" in text
    assert "Application shutdown complete" in text and "Traceback" not in text
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/healthz", timeout=2.0)
