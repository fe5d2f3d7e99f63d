"""The inference service: a trained NewsClassifier behind a small HTTP API (FastAPI + uvicorn).

Start it on a checkpoint written by training, then query it::

    distrinews-bench serve --checkpoint runs/tiny --port 8000
    curl -s localhost:8000/predict -H 'content-type: application/json' \\
         -d '{"texts": ["Stocks rallied after the central bank held rates."]}'

Endpoints:
  * ``POST /predict`` -- ``{"texts": [...]}`` -> per text the label name, its index and the
    four class probabilities (softmax of the logits, in label order);
  * ``GET /healthz`` -- the process is alive (200 as soon as the server answers);
  * ``GET /readyz`` -- the model is loaded (503 until then; 200 with model facts after);
  * ``GET /docs`` and ``GET /openapi.json`` -- the generated API description.

How a request flows. pydantic checks the body against the limits (:class:`ServeLimits`): an
empty list, too many texts, an empty or over-long text, or a wrong type is a 422 naming the
field; a body larger than any valid request could be is a 413 before it is parsed. The texts of
one request are tokenized with the checkpoint's own tokenizer, truncated to the ``max_length``
the model was trained with, padded to the longest of them, and go through the model as ONE
batch: that spreads the fixed cost of a request (HTTP, JSON, a thread hop, kernel launches) over
all its texts, and on a GPU a batch costs little more than one text -- so clients should send
texts together. The forward pass runs in a worker thread, one batch at a time (PyTorch already
uses every core for one batch; two at once would only fight over them), so the event loop keeps
answering health checks while the model computes. A failure inside the model is a 500 with a
one-line ``{"detail": ...}`` and is logged with its traceback; the server keeps serving.
Optionally (``batch_window_s``), concurrent requests are joined into one forward pass as well
(:class:`MicroBatcher`).

The model is loaded once, in a background thread started by the app's lifespan (never at
import): ``/healthz`` answers at once, ``/readyz`` turns 200 when the weights are in. The
predictor lives in ``app.state.service`` and reaches the route through the FastAPI dependency
:func:`get_predictor`, so tests can swap in another predictor with ``app.dependency_overrides``.
"""

# No `from __future__ import annotations` here: FastAPI reads route signatures at runtime, and
# the request body type is a class local to create_app (its limits are per app).
import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import torch
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from .checkpoint import InferenceBundle, check_inference, load_for_inference, read_config
from .errors import UserError

log = logging.getLogger("distrinews.serve")

DEFAULT_MAX_TEXTS = 64
DEFAULT_MAX_CHARS = 2000


@dataclass(frozen=True, kw_only=True)
class ServeLimits:
    """What one ``POST /predict`` may ask for; anything beyond is a 422 before the model runs."""

    max_texts: int = DEFAULT_MAX_TEXTS
    """Most texts in one request (they become one batch, so this bounds its memory)."""
    max_chars: int = DEFAULT_MAX_CHARS
    """Most characters in one text. The model reads only the first ``max_length`` tokens, so a
    longer text buys nothing and only costs tokenization time."""

    @property
    def max_body_bytes(self) -> int:
        """Largest body a valid request can need: every character JSON-escaped as a UTF-16
        surrogate pair (12 bytes), plus quotes and commas, plus room for the envelope."""
        return self.max_texts * (12 * self.max_chars + 4) + 1024

    def __post_init__(self) -> None:
        for name in ("max_texts", "max_chars"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"serve limit {name} must be a positive integer, got {value!r}")


# --------------------------------------------------------------------------------------------
# The predictor: texts -> probabilities (torch only, no HTTP)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Prediction:
    """The model's answer for one text."""

    label: str
    """Most probable class name."""
    label_index: int
    """Its index in the label order (0..3)."""
    probabilities: dict[str, float]
    """Softmax of the logits, per class name, in label order."""
    tokens: int
    """Tokens the model read, with [CLS] and [SEP], after truncation."""
    truncated: bool
    """True when the text was cut to the model's max_length."""


class Predictor:
    """A loaded classifier that turns a list of texts into :class:`Prediction` objects.

    One call is one padded batch through the model. Calls are serialised by a lock: the
    tokenizer's truncation settings are mutable state of its Rust backend, and one batch at a
    time already keeps every core busy.
    """

    def __init__(self, bundle: InferenceBundle, *, tokenizer: Any = None) -> None:
        self.model = bundle.model.eval()
        self.tokenizer = tokenizer if tokenizer is not None else bundle.tokenizer
        if self.tokenizer is None:
            raise UserError(
                f"{bundle.meta.get('path', 'checkpoint')}: has no tokenizer (trained on synthetic "
                "data?); pass one explicitly (--tokenizer DIR or vocab.txt)"
            )
        self.max_length = bundle.max_length
        self.labels = bundle.labels
        self.meta = bundle.meta
        self.device = next(self.model.parameters()).device
        self._lock = threading.Lock()

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, *, device: str = "cpu", tokenizer: str | Path | None = None
    ) -> "Predictor":
        """Load a checkpoint (directory or training output directory) onto ``device``."""
        tok = None
        if tokenizer is not None:
            from .dataset import get_tokenizer

            tok = get_tokenizer(tokenizer)
        return cls(load_for_inference(path, map_location=device), tokenizer=tok)

    def encode(self, texts: Sequence[str]) -> Any:
        """The padded batch for ``texts``: truncated to max_length, padded to the longest."""
        return self.tokenizer(
            list(texts),
            truncation=True,
            max_length=self.max_length,
            padding=True,
            return_attention_mask=True,
            return_token_type_ids=False,
            return_tensors="pt",
        )

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        if not texts:
            return []
        with self._lock, torch.inference_mode():
            enc = self.encode(texts)
            mask = enc["attention_mask"]
            logits = self.model(enc["input_ids"].to(self.device), mask.to(self.device))
            # float32 softmax even under a half-precision model, then one device->host copy.
            probs = torch.softmax(logits.float(), dim=-1).cpu()
        lengths = mask.sum(dim=1).tolist()
        encodings = getattr(enc, "encodings", None)  # Rust-backed tokenizers record overflow
        out = []
        for i, row in enumerate(probs.tolist()):
            best = max(range(len(row)), key=row.__getitem__)
            out.append(
                Prediction(
                    label=self.labels[best],
                    label_index=best,
                    probabilities=dict(zip(self.labels, row, strict=True)),
                    tokens=int(lengths[i]),
                    truncated=bool(encodings[i].overflowing) if encodings else False,
                )
            )
        return out


# --------------------------------------------------------------------------------------------
# HTTP schema
# --------------------------------------------------------------------------------------------


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("text is empty or only whitespace")
    return text


def request_model(limits: ServeLimits) -> type[BaseModel]:
    """The ``POST /predict`` body schema with ``limits`` built in (they appear in /docs too)."""
    Text = Annotated[
        str,
        StringConstraints(min_length=1, max_length=limits.max_chars),
        AfterValidator(_not_blank),
    ]

    class PredictRequest(BaseModel):
        """Texts to classify; they are answered in the same order."""

        # strict: a number is not a text; forbid: a typo such as "text" is an error, not ignored.
        model_config = ConfigDict(extra="forbid", strict=True)

        texts: list[Text] = Field(
            min_length=1,
            max_length=limits.max_texts,
            description=f"1..{limits.max_texts} texts of 1..{limits.max_chars} characters",
            examples=[["Stocks rallied after the central bank held rates."]],
        )

    return PredictRequest


class PredictionOut(BaseModel):
    label: str = Field(description="Most probable class name")
    label_index: int = Field(description="Its index in the label order")
    probabilities: dict[str, float] = Field(description="Class probabilities, in label order")
    tokens: int = Field(description="Tokens read after truncation, with [CLS] and [SEP]")
    truncated: bool = Field(description="True when the text was cut to max_length tokens")


class PredictResponse(BaseModel):
    predictions: list[PredictionOut]


class ReadyOut(BaseModel):
    status: str
    checkpoint: str
    device: str
    max_length: int
    labels: list[str]
    parameters: int
    load_time_s: float
    max_texts: int
    max_chars: int
    batch_window_s: float


# --------------------------------------------------------------------------------------------
# Micro-batching: one forward pass for the texts of requests that arrive together
# --------------------------------------------------------------------------------------------


class _Batch:
    """Requests joined so far: their texts, each with the future its answers go to."""

    def __init__(self) -> None:
        self.parts: list[tuple[list[str], asyncio.Future]] = []
        self.size = 0
        self.full = asyncio.Event()

    def add(self, texts: list[str]) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self.parts.append((texts, future))
        self.size += len(texts)
        return future


class MicroBatcher:
    """Joins the texts of concurrent requests into one forward pass (dynamic batching).

    The first request to arrive opens a batch; others arriving within ``window_s`` join it, up
    to ``max_texts`` texts in all. The batch then runs as one ``predictor.predict`` call in the
    inference thread and each request gets its own slice of the answers. The price is up to
    ``window_s`` of extra latency; the gain, under concurrency, is one forward pass (and one
    thread hop) instead of many. A failing batch fails every request in it (each gets the 500).

    The batch runs in a task of its own, so a request that goes away (client disconnect, its
    task cancelled) never strands the others in its batch. All requests of a batch use the
    predictor of the one that opened it (an app has one predictor).
    """

    def __init__(self, *, window_s: float, max_texts: int, limiter: Any) -> None:
        self.window_s = window_s
        self.max_texts = max_texts
        self._limiter = limiter
        self._open: _Batch | None = None
        self._tasks: set[asyncio.Task] = set()  # strong references: the loop keeps only weak ones

    async def predict(self, predictor: Predictor, texts: list[str]) -> list[Prediction]:
        batch = self._open
        if batch is None or batch.size + len(texts) > self.max_texts:
            if batch is not None:
                batch.full.set()  # it cannot take these texts: let it run now
            batch = self._open = _Batch()
            task = asyncio.get_running_loop().create_task(self._run(batch, predictor))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        future = batch.add(texts)
        if batch.size >= self.max_texts:
            batch.full.set()
        return await future

    async def _run(self, batch: _Batch, predictor: Predictor) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(batch.full.wait(), self.window_s)
        if self._open is batch:
            self._open = None  # closed: later requests open the next batch
        texts = [text for part, _ in batch.parts for text in part]
        try:
            preds = await _run_in_thread(predictor.predict, texts, self._limiter)
        except Exception as exc:  # handed to every waiting request, which answers 500
            for _, future in batch.parts:
                if not future.done():
                    future.set_exception(exc)
            return
        start = 0
        for part, future in batch.parts:
            if not future.done():  # a cancelled request no longer wants its answers
                future.set_result(preds[start : start + len(part)])
            start += len(part)


async def _run_in_thread(func: Callable, arg: Any, limiter: Any) -> Any:
    # anyio is starlette's own async layer; imported here because it is not on the workload's
    # list of top-level imports (tests/unit/test_packaging.py).
    import anyio

    return await anyio.to_thread.run_sync(func, arg, limiter=limiter)


# --------------------------------------------------------------------------------------------
# The app
# --------------------------------------------------------------------------------------------


class ServiceState:
    """What the app knows about its model: loading, loaded (with a predictor) or failed."""

    def __init__(self) -> None:
        self.predictor: Predictor | None = None
        self.error: str | None = None
        self.load_time_s: float | None = None
        #: Set when loading has finished, either way (tests and callers can wait on it).
        self.done = threading.Event()

    def load(self, loader: Callable[[], Predictor]) -> None:
        """Run ``loader`` (in the calling thread) and record its predictor or its failure."""
        start = time.perf_counter()
        try:
            self.predictor = loader()
        except Exception as exc:  # any load failure: report it on /readyz instead of dying
            log.exception("model failed to load")
            self.error = f"{type(exc).__name__}: {_first_line(exc)}"
        else:
            self.load_time_s = time.perf_counter() - start
            log.info("model ready in %.1f s on %s", self.load_time_s, self.predictor.device)
        finally:
            self.done.set()


class BodyLimit:
    """ASGI middleware: a request body over ``max_body`` bytes is a 413, however it is sent.

    pydantic sees the body only after it was read and parsed whole. A declared size
    (Content-Length) over the most a valid request can need is refused before any of it is
    read; a chunked body (no Content-Length) is counted as it arrives and cut at the same
    limit -- otherwise a client could stream gigabytes into memory.
    """

    def __init__(self, app: Any, *, max_body: int, limits: ServeLimits) -> None:
        self.app, self.max_body = app, max_body
        self.detail = (
            f"request body over the {max_body}-byte limit "
            f"(at most {limits.max_texts} texts of {limits.max_chars} characters)"
        )

    async def __call__(self, scope: Any, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or ()).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body:
            response = JSONResponse(
                status_code=413, content={"detail": f"{int(declared)} bytes: {self.detail}"}
            )
            return await response(scope, receive, send)
        received = 0

        async def counted() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    # FastAPI re-raises an HTTPException met while reading the body, and its
                    # exception handler answers it: 413 with this detail, like the above.
                    raise HTTPException(status_code=413, detail=f"chunked body: {self.detail}")
            return message

        return await self.app(scope, counted, send)


def get_predictor(request: Request) -> Predictor:
    """FastAPI dependency: the loaded predictor, or 503 while there is none."""
    service: ServiceState = request.app.state.service
    if service.predictor is None:
        detail = f"model failed to load: {service.error}" if service.error else "model loading"
        raise HTTPException(status_code=503, detail=detail)
    return service.predictor


def preflight(checkpoint: str | Path, *, tokenizer: str | Path | None = None) -> Path:
    """Check a checkpoint is usable for serving without loading the model; return its folder.

    Catches the common mistakes (wrong path, truncated file, no tokenizer) up front, as a
    :class:`UserError`, so ``serve`` fails with one line instead of a server that never gets
    ready.
    """
    ckpt = check_inference(checkpoint)  # config, weights' keys and shapes, tokenizer folder
    config = read_config(ckpt)
    if tokenizer is None and not config.get("tokenizer", {}).get("saved"):
        raise UserError(
            f"{ckpt}: holds no tokenizer (trained on synthetic data?); pass --tokenizer "
            "(a tokenizer directory or a vocab.txt)"
        )
    if tokenizer is not None and not Path(tokenizer).exists():
        raise UserError(f"{tokenizer}: tokenizer not found")
    return ckpt


def resolve_device(device: str) -> str:
    """``auto`` -> cuda when available, else cpu; an unavailable cuda is a UserError."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device!r} requested but CUDA is not available; use cpu")
    if not (device == "cpu" or device.startswith("cuda")):
        raise UserError(f"unknown device {device!r}; allowed: auto, cpu, cuda, cuda:N")
    return device


def create_app(
    checkpoint: str | Path,
    *,
    device: str = "auto",
    tokenizer: str | Path | None = None,
    limits: ServeLimits | None = None,
    batch_window_s: float = 0.0,
) -> FastAPI:
    """The inference service for ``checkpoint`` (a checkpoint or training output directory).

    ``batch_window_s`` > 0 turns on micro-batching (:class:`MicroBatcher`): requests arriving
    within that many seconds of each other share one forward pass. Cheap checks (path,
    checksum, tokenizer, device) run here and raise :class:`UserError`; the model itself loads
    in the app's lifespan.
    """
    import anyio  # see _run_in_thread

    if not 0.0 <= batch_window_s <= 1.0:
        raise UserError(f"batch window must be 0..1 s (0 = off), got {batch_window_s}")
    limits = limits or ServeLimits()
    ckpt = preflight(checkpoint, tokenizer=tokenizer)
    device = resolve_device(device)
    PredictRequest = request_model(limits)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = app.state.service = ServiceState()
        # One inference at a time; waiting requests queue here as cheap coroutines rather than
        # as parked threads in the shared thread pool.
        app.state.inference_limiter = anyio.CapacityLimiter(1)
        app.state.batcher = None
        if batch_window_s > 0:
            app.state.batcher = MicroBatcher(
                window_s=batch_window_s,
                max_texts=limits.max_texts,
                limiter=app.state.inference_limiter,
            )
        # A plain daemon thread: the server answers /healthz (and 503 on /readyz) meanwhile.
        loader = functools.partial(
            Predictor.from_checkpoint, ckpt, device=device, tokenizer=tokenizer
        )
        threading.Thread(
            target=service.load, args=(loader,), name="model-loader", daemon=True
        ).start()
        yield

    app = FastAPI(
        title="distrinews classifier",
        summary="AG News topic classification (World, Sports, Business, Sci/Tech)",
        version="1",
        lifespan=lifespan,
    )
    # Requests that arrive before the lifespan ran (or without one) see "not ready", not a 500.
    app.state.service = ServiceState()
    app.state.batcher = None

    app.add_middleware(BodyLimit, max_body=limits.max_body_bytes, limits=limits)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the server process answers."""
        return {"status": "ok"}

    @app.get("/readyz", response_model=ReadyOut, responses={503: {"description": "Not ready"}})
    async def readyz(request: Request) -> Any:
        """Readiness: 200 once the model is loaded, 503 (with the reason) until then."""
        service: ServiceState = request.app.state.service
        predictor = get_predictor(request)
        return ReadyOut(
            status="ready",
            checkpoint=str(predictor.meta.get("path", ckpt)),
            device=str(predictor.device),
            max_length=predictor.max_length,
            labels=list(predictor.labels),
            parameters=predictor.model.num_parameters(),
            load_time_s=service.load_time_s or 0.0,
            max_texts=limits.max_texts,
            max_chars=limits.max_chars,
            batch_window_s=batch_window_s,
        )

    @app.post(
        "/predict",
        response_model=PredictResponse,
        responses={
            422: {"description": "Invalid input (limits, types, empty texts)"},
            500: {"description": "Inference failed"},
            503: {"description": "Model not loaded yet"},
        },
    )
    async def predict(
        body: PredictRequest,  # type: ignore[valid-type]
        request: Request,
        predictor: Annotated[Predictor, Depends(get_predictor)],
    ) -> Any:
        """Classify texts: one padded batch through the model, answers in input order."""
        texts = body.texts
        batcher: MicroBatcher | None = request.app.state.batcher
        try:
            if batcher is None:
                limiter = request.app.state.inference_limiter
                preds = await _run_in_thread(predictor.predict, texts, limiter)
            else:
                preds = await batcher.predict(predictor, texts)
        except Exception as exc:  # a model failure answers 500 and the server keeps serving
            log.exception("inference failed on a batch of %d texts", len(texts))
            raise HTTPException(
                status_code=500,
                detail=f"inference failed: {type(exc).__name__}: {_first_line(exc)}",
            ) from exc
        return {"predictions": [p.__dict__ for p in preds]}

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default 422 echoes every offending input back (up to 64 x 2,000 characters);
        # where the error is (loc), what it is (type) and why (msg) say enough.
        errors = [{k: e[k] for k in ("type", "loc", "msg") if k in e} for e in exc.errors()]
        return JSONResponse(status_code=422, content={"detail": errors})

    return app


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__
