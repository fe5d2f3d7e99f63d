"""The inference service's API contract, through FastAPI's TestClient (lifespan included).

The checkpoint is a real one (save_checkpoint) of a tiny model with a tokenizer built from a
small vocab written here, so these tests never skip; one test repeats the core check with the
real distilbert vocab when ../shared is at hand.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
import torch
from click.testing import CliRunner
from fastapi.testclient import TestClient

from distrinews.checkpoint import CheckpointError, TrainingState, rng_state, save_checkpoint
from distrinews.dataset import get_tokenizer
from distrinews.errors import UserError
from distrinews.model import LABELS, NewsClassifier
from distrinews.serve import Predictor, ServeLimits, create_app, get_predictor, resolve_device
from harness.cli import cli

MAX_LENGTH = 16
_WORDS = [
    "the",
    "stocks",
    "market",
    "bank",
    "rates",
    "oil",
    "prices",
    "company",
    "shares",
    "team",
    "won",
    "game",
    "match",
    "season",
    "election",
    "minister",
    "war",
    "president",
    "software",
    "computer",
    "internet",
    "space",
    "nasa",
    "chip",
]
TEXTS = [
    "The stocks market fell as oil prices rose",
    "Team won the match of the season",
    "Nasa space computer chip",
    "Election minister war president",
    "bank",
]


def write_vocab(path: Path) -> Path:
    """A small WordPiece vocab: specials first ([PAD] = 0), whole words, letters, ##letters."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    lines = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_WORDS, *letters]
    lines += [f"##{c}" for c in letters]
    path.write_text("\n".join(lines) + "\n")
    return path


def build_tiny_checkpoint(out_dir: Path, *, tokenizer=None, with_tokenizer: bool = True):
    """A real checkpoint of a tiny random model; returns (checkpoint dir, model, tokenizer).

    Every weight matrix is re-drawn with std 0.2: a fresh init (std 0.02) answers ~0.25 for
    every class and text, which would make "equal predictions" too easy to pass.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if tokenizer is None:
        tokenizer = get_tokenizer(write_vocab(out_dir / "vocab.txt"))
    model = NewsClassifier.from_config("tiny", seed=0)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.2)
    model.eval()
    ckpt = save_checkpoint(
        out_dir / "run",
        model=model,
        optimizer=None,
        scaler=None,
        state=TrainingState(step=5, epoch=0, batch_in_epoch=5),
        rank_rng=[rng_state(torch.device("cpu"))],
        max_length=MAX_LENGTH,
        tokenizer=tokenizer if with_tokenizer else None,
    )
    return ckpt, model, tokenizer


def reference_probabilities(model, tokenizer, texts, max_length=MAX_LENGTH) -> torch.Tensor:
    """The model's own answer, one text at a time with no padding (an independent path)."""
    rows = []
    with torch.inference_mode():
        for text in texts:
            enc = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
            logits = model(enc["input_ids"], enc["attention_mask"])
            rows.append(torch.softmax(logits.float(), dim=-1)[0])
    return torch.stack(rows)


def served_probabilities(predictions) -> torch.Tensor:
    return torch.tensor([[p["probabilities"][name] for name in LABELS] for p in predictions])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("serve"))


@pytest.fixture()
def app(tiny):
    return create_app(tiny[0], device="cpu")


@pytest.fixture()
def client(app):
    with TestClient(app) as client:
        assert app.state.service.done.wait(60), "model did not load within 60 s"
        yield client


# -- readiness and the API contract -----------------------------------------------------------


def test_not_ready_until_the_lifespan_has_loaded_the_model(app):
    client = TestClient(app)  # no `with`: the lifespan (and so the model load) never ran
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["detail"] == "model loading"
    assert client.post("/predict", json={"texts": ["bank"]}).status_code == 503


def test_readyz_reports_the_loaded_model(client, tiny):
    body = client.get("/readyz").json()
    assert body["status"] == "ready"
    assert body["checkpoint"] == str(tiny[0]) and body["device"] == "cpu"
    assert body["max_length"] == MAX_LENGTH and body["labels"] == list(LABELS)
    assert body["parameters"] == tiny[1].num_parameters()
    assert (body["max_texts"], body["max_chars"], body["batch_window_s"]) == (64, 2000, 0.0)


def test_predict_returns_label_index_and_probabilities_per_text(client):
    response = client.post("/predict", json={"texts": TEXTS})
    assert response.status_code == 200
    preds = response.json()["predictions"]
    assert len(preds) == len(TEXTS)
    for p in preds:
        assert list(p["probabilities"]) == list(LABELS)
        assert sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
        assert p["label"] == LABELS[p["label_index"]]
        assert p["label_index"] == max(range(4), key=lambda i: p["probabilities"][LABELS[i]])
    assert len({p["label"] for p in preds}) > 1, "the test model should not answer one class"


def test_served_predictions_equal_the_models_own(client, tiny):
    _, model, tokenizer = tiny
    served = served_probabilities(
        client.post("/predict", json={"texts": TEXTS}).json()["predictions"]
    )
    expected = reference_probabilities(model, tokenizer, TEXTS)
    torch.testing.assert_close(served, expected, rtol=0, atol=1e-5)


def test_answers_do_not_depend_on_the_other_texts_in_the_batch(client):
    alone = client.post("/predict", json={"texts": [TEXTS[4]]}).json()["predictions"][0]
    batch = client.post("/predict", json={"texts": [TEXTS[0], TEXTS[4]]}).json()["predictions"]
    assert batch[1]["label"] == alone["label"]
    for name in LABELS:
        assert batch[1]["probabilities"][name] == pytest.approx(
            alone["probabilities"][name], abs=1e-5
        )


def test_long_texts_are_truncated_to_the_checkpoints_max_length(client):
    long_text = " ".join(["stocks"] * 100)
    p = client.post("/predict", json={"texts": [long_text, "bank"]}).json()["predictions"]
    assert (p[0]["tokens"], p[0]["truncated"]) == (MAX_LENGTH, True)
    assert (p[1]["tokens"], p[1]["truncated"]) == (3, False)  # [CLS] bank [SEP]


def test_openapi_docs_are_served_with_the_limits(client):
    schema = client.get("/openapi.json").json()
    assert {"/predict", "/healthz", "/readyz"} <= set(schema["paths"])
    texts = schema["components"]["schemas"]["PredictRequest"]["properties"]["texts"]
    assert (texts["minItems"], texts["maxItems"]) == (1, 64)
    assert texts["items"]["maxLength"] == 2000
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


# -- bad input: 422 naming the field, the server unharmed -------------------------------------


@pytest.mark.parametrize(
    ("body", "loc", "error_type"),
    [
        ({"texts": []}, ["body", "texts"], "too_short"),
        ({"texts": ["bank"] * 65}, ["body", "texts"], "too_long"),
        ({"texts": ["x" * 2001]}, ["body", "texts", 0], "string_too_long"),
        ({"texts": [""]}, ["body", "texts", 0], "string_too_short"),
        ({"texts": ["ok", "   \n"]}, ["body", "texts", 1], "value_error"),
        ({"texts": [1]}, ["body", "texts", 0], "string_type"),
        ({"texts": [None]}, ["body", "texts", 0], "string_type"),
        ({"texts": [["nested"]]}, ["body", "texts", 0], "string_type"),
        ({"texts": "bank"}, ["body", "texts"], "list_type"),
        ({"texts": None}, ["body", "texts"], "list_type"),
        ({"text": ["bank"]}, ["body", "texts"], "missing"),
        ({"texts": ["bank"], "extra": 1}, ["body", "extra"], "extra_forbidden"),
        (["bank"], ["body"], "model_attributes_type"),
    ],
    ids=[
        "empty-list",
        "too-many",
        "too-long",
        "empty-string",
        "blank-string",
        "int",
        "null-item",
        "nested",
        "str-not-list",
        "null",
        "missing",
        "extra-field",
        "not-object",
    ],
)
def test_bad_input_is_a_422_naming_the_field(client, body, loc, error_type):
    response = client.post("/predict", json=body)
    assert response.status_code == 422
    errors = response.json()["detail"]
    assert {"loc": loc, "type": error_type} in [
        {"loc": e["loc"], "type": e["type"]} for e in errors
    ]
    assert all(e["msg"] and "input" not in e for e in errors)  # a message, no echo of the input
    assert client.post("/predict", json={"texts": ["bank"]}).status_code == 200


def test_malformed_json_is_a_422(client):
    response = client.post(
        "/predict", content=b'{"texts": [', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


def test_limits_are_configurable(tiny):
    app = create_app(tiny[0], device="cpu", limits=ServeLimits(max_texts=2, max_chars=10))
    with TestClient(app) as client:
        assert app.state.service.done.wait(60)
        assert client.post("/predict", json={"texts": ["bank"] * 3}).status_code == 422
        assert client.post("/predict", json={"texts": ["b" * 11]}).status_code == 422
        assert client.post("/predict", json={"texts": ["bank", "b" * 10]}).status_code == 200


def test_a_body_larger_than_any_valid_request_is_a_413(tiny):
    limits = ServeLimits(max_texts=2, max_chars=10)
    app = create_app(tiny[0], device="cpu", limits=limits)
    with TestClient(app) as client:
        assert app.state.service.done.wait(60)
        # The largest valid request, every character escaped as a surrogate pair, fits...
        emoji = "\U0001f600" * 10
        biggest = json.dumps({"texts": [emoji, emoji]}).encode()
        assert len(biggest) <= limits.max_body_bytes
        headers = {"content-type": "application/json"}
        assert client.post("/predict", content=biggest, headers=headers).status_code == 200
        # ...a body one byte over the limit is refused before it is parsed.
        huge = b" " * (limits.max_body_bytes + 1)
        response = client.post("/predict", content=huge, headers=headers)
        assert response.status_code == 413
        detail = response.json()["detail"]
        assert "over the" in detail and "2 texts of 10" in detail
        assert client.post("/predict", json={"texts": ["bank"]}).status_code == 200


@pytest.mark.parametrize("bad", [{"max_texts": 0}, {"max_chars": -1}, {"max_texts": True}])
def test_invalid_limits_are_user_errors(bad):
    with pytest.raises(UserError, match="positive integer"):
        ServeLimits(**bad)


# -- failures inside the model: 500 with a message, then business as usual --------------------


class FailOnText:
    """A predictor that delegates to the real one but fails for one trigger text."""

    def __init__(self, inner: Predictor, trigger: str) -> None:
        self.inner = inner
        self.trigger = trigger

    def predict(self, texts):
        if self.trigger in texts:
            raise RuntimeError("CUDA error: device-side assert triggered (injected)")
        return self.inner.predict(texts)


def test_a_model_failure_is_a_500_and_the_server_keeps_serving(client, app):
    real = app.state.service.predictor
    app.dependency_overrides[get_predictor] = lambda: FailOnText(real, "boom")
    try:
        failed = client.post("/predict", json={"texts": ["bank", "boom"]})
        assert failed.status_code == 500
        assert failed.json() == {
            "detail": "inference failed: RuntimeError: CUDA error: device-side assert "
            "triggered (injected)"
        }
        ok = client.post("/predict", json={"texts": ["bank"]})
        assert ok.status_code == 200 and len(ok.json()["predictions"]) == 1
    finally:
        app.dependency_overrides.clear()
    assert client.get("/readyz").status_code == 200


def test_a_load_failure_is_reported_on_readyz(tmp_path):
    ckpt, _, _ = build_tiny_checkpoint(tmp_path)
    app = create_app(ckpt, device="cpu")  # the preflight passes on the intact checkpoint...
    weights = ckpt / "checkpoint.pt"
    weights.write_bytes(weights.read_bytes()[:-10])  # ...then the file is cut short
    with TestClient(app) as client:
        assert app.state.service.done.wait(60)
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["detail"].startswith("model failed to load: CheckpointError:")
        assert "truncated" in ready.json()["detail"]
        assert client.get("/healthz").status_code == 200
        assert client.post("/predict", json={"texts": ["bank"]}).status_code == 503


# -- checkpoints and devices that cannot be served: one-line UserErrors ------------------------


def test_bad_checkpoints_fail_before_the_server_starts(tmp_path, tiny):
    with pytest.raises(CheckpointError, match="not found"):
        create_app(tmp_path / "nope")
    ckpt, _, _ = build_tiny_checkpoint(tmp_path / "notok", with_tokenizer=False)
    with pytest.raises(UserError, match=r"no tokenizer.*--tokenizer"):
        create_app(ckpt)
    with pytest.raises(UserError, match="unknown device"):
        create_app(tiny[0], device="tpu")


def test_a_tokenizer_can_be_supplied_for_a_checkpoint_saved_without_one(tmp_path, tiny):
    ckpt, model, tokenizer = build_tiny_checkpoint(tmp_path, with_tokenizer=False)
    app = create_app(ckpt, device="cpu", tokenizer=tmp_path / "vocab.txt")
    with TestClient(app) as client:
        assert app.state.service.done.wait(60)
        preds = client.post("/predict", json={"texts": TEXTS}).json()["predictions"]
    expected = reference_probabilities(model, tokenizer, TEXTS)
    torch.testing.assert_close(served_probabilities(preds), expected, rtol=0, atol=1e-5)


def test_resolve_device():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            resolve_device("cuda")


def test_cli_serve_reports_a_bad_checkpoint_in_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["serve", "--checkpoint", str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {tmp_path / 'missing'}: checkpoint not found"


def test_real_vocab_checkpoint_serves_the_models_predictions(tmp_path, tokenizer):
    ckpt, model, tok = build_tiny_checkpoint(tmp_path, tokenizer=tokenizer)
    texts = ["Oil prices hit a record as Gulf supplies tighten.", "Federer wins at Wimbledon."]
    app = create_app(ckpt, device="cpu")
    with TestClient(app) as client:
        assert app.state.service.done.wait(60)
        preds = client.post("/predict", json={"texts": texts}).json()["predictions"]
    assert preds[0]["tokens"] == len(tok(texts[0])["input_ids"])
    expected = reference_probabilities(model, tok, texts)
    torch.testing.assert_close(served_probabilities(preds), expected, rtol=0, atol=1e-5)


# -- micro-batching: concurrent requests share one forward pass --------------------------------


class Recording:
    """Delegates to the real predictor and records the texts of every call it receives."""

    def __init__(self, inner: Predictor, trigger: str | None = None) -> None:
        self.inner = inner
        self.trigger = trigger
        self.calls: list[list[str]] = []

    def predict(self, texts):
        self.calls.append(list(texts))
        if self.trigger in texts:
            raise RuntimeError("injected failure")
        return self.inner.predict(texts)


def _concurrent_posts(app, bodies, *, trigger=None):
    """Start the app's lifespan, send ``bodies`` at once; return (responses, predictor calls)."""

    async def drive():
        async with app.router.lifespan_context(app):
            assert await asyncio.to_thread(app.state.service.done.wait, 60)
            recording = Recording(app.state.service.predictor, trigger)
            app.dependency_overrides[get_predictor] = lambda: recording
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                responses = await asyncio.gather(
                    *(client.post("/predict", json=body) for body in bodies)
                )
                after = await client.post("/predict", json={"texts": ["bank"]})
            return responses, recording.calls, after

    return asyncio.run(drive())


def test_micro_batching_joins_concurrent_requests_into_one_forward_pass(tiny):
    _, model, tokenizer = tiny
    app = create_app(tiny[0], device="cpu", batch_window_s=0.5)
    bodies = [{"texts": TEXTS[:2]}, {"texts": [TEXTS[2]]}, {"texts": TEXTS[3:]}]
    responses, calls, _ = _concurrent_posts(app, bodies)
    # one forward pass for the three requests (the last call is the follow-up request)
    assert len(calls) == 2 and sorted(calls[0]) == sorted(TEXTS)
    for body, response in zip(bodies, responses, strict=True):
        assert response.status_code == 200
        preds = response.json()["predictions"]
        expected = reference_probabilities(model, tokenizer, body["texts"])
        torch.testing.assert_close(served_probabilities(preds), expected, rtol=0, atol=1e-5)


def test_micro_batches_never_exceed_max_texts(tiny):
    app = create_app(tiny[0], device="cpu", limits=ServeLimits(max_texts=3), batch_window_s=0.5)
    bodies = [{"texts": ["bank", "oil"]}, {"texts": ["nasa", "war"]}, {"texts": ["team"]}]
    responses, calls, _ = _concurrent_posts(app, bodies)
    assert all(r.status_code == 200 for r in responses)
    assert all(len(call) <= 3 for call in calls[:-1]) and sum(map(len, calls[:-1])) == 5
    assert [len(r.json()["predictions"]) for r in responses] == [2, 2, 1]


def test_a_failing_micro_batch_fails_its_requests_and_the_next_one_succeeds(tiny):
    app = create_app(tiny[0], device="cpu", batch_window_s=0.5)
    bodies = [{"texts": ["bank"]}, {"texts": ["boom"]}]
    responses, calls, after = _concurrent_posts(app, bodies, trigger="boom")
    assert calls[0] == ["bank", "boom"] or calls[0] == ["boom", "bank"]
    assert [r.status_code for r in responses] == [500, 500]
    assert responses[0].json() == {"detail": "inference failed: RuntimeError: injected failure"}
    assert after.status_code == 200


def test_batch_window_is_checked(tiny):
    with pytest.raises(UserError, match="batch window"):
        create_app(tiny[0], batch_window_s=-0.1)
