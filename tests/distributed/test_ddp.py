"""DDP for real: 2 gloo ranks in 2 spawned processes, file:// rendezvous in tmp_path.

After one step, both ranks hold the same gradients, equal to one process's gradients on the two
ranks' batches concatenated — for the default knobs and each DDP knob, within float tolerance
where a communication hook compresses. Many knob settings run inside one launch to keep the
process start-up cost (importing torch and transformers in each rank) paid once; the same launch
then checks that a 2-rank fine-tuning run resumes bit for bit.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from distrinews.dataset import AGNewsDataset, LengthGroupedBatchSampler, synthetic_agnews
from distrinews.distributed import process_group
from distrinews.errors import UserError
from distrinews.model import NewsClassifier, build_config
from distrinews.runspec import DDPKnobs, RunSpec
from distrinews.train import BatchStream, FitSpec, Trainer, fit, wrap_ddp
from tests.helpers_procs import made_once

pytestmark = pytest.mark.slow

WORLD = 2
BATCH = 8
MAX_LEN = 32
SEED = 3
#: name -> (DDP knobs, grad_accum)
CASES: dict[str, tuple[DDPKnobs, int]] = {
    "default": (DDPKnobs(), 1),
    "small_buckets": (DDPKnobs(bucket_cap_mb=0.01), 1),  # many buckets, several all-reduces
    "bucket_view": (DDPKnobs(gradient_as_bucket_view=True), 1),
    "static_graph": (DDPKnobs(static_graph=True), 1),
    "no_broadcast_buffers": (DDPKnobs(broadcast_buffers=False), 1),
    "fp16_hook": (DDPKnobs(comm_hook="fp16"), 1),
    "powersgd_hook": (DDPKnobs(comm_hook="powersgd", powersgd_rank=1), 1),
    "grad_accum": (DDPKnobs(), 2),
    "grad_accum_view_buckets": (DDPKnobs(gradient_as_bucket_view=True, bucket_cap_mb=0.05), 2),
    # The step probe (distrinews/timing.py) recording: DDP's all-reduce through its comm hook.
    "probed": (DDPKnobs(bucket_cap_mb=0.05), 2),
}


def _model() -> NewsClassifier:
    # No dropout: the ranks and the single-process reference must compute the same function.
    cfg = build_config("tiny")
    cfg.dropout = cfg.attention_dropout = cfg.seq_classif_dropout = 0.0
    return NewsClassifier.from_config(cfg, seed=SEED)


def _dataset() -> AGNewsDataset:
    return AGNewsDataset.from_data(synthetic_agnews(96, seed=SEED), max_length=MAX_LEN)


def _sampler(ds: AGNewsDataset, rank: int) -> LengthGroupedBatchSampler:
    return LengthGroupedBatchSampler(ds.lengths, BATCH, num_replicas=WORLD, rank=rank, seed=SEED)


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def _knob_worker(rank: int, init: str, out: str) -> None:
    cpu = torch.device("cpu")
    with process_group(
        device="cpu", backend="gloo", rank=rank, world_size=WORLD, init_method=init, timeout_s=60
    ):
        ds = _dataset()
        for name, (knobs, accum) in CASES.items():
            model = _model()
            trainer = Trainer(
                model=wrap_ddp(model, knobs, cpu),
                optimizer=torch.optim.AdamW(model.parameters(), lr=1e-3),
                scaler=None,
                precision="fp32",
                device=cpu,
                grad_accum=accum,
            )
            stream = BatchStream(ds, _sampler(ds, rank), pad_to=MAX_LEN, device=cpu)
            if name == "probed":
                trainer.probe.start()
                trainer.probe.step_start()  # a recorded step: every hook of the probe fires
            trainer.forward_backward(stream, trainer.probe if name == "probed" else None)
            saved = {"step1": _grads(model)}
            if name == "powersgd_hook":
                # PowerSGD all-reduces plainly for 2 steps, then sends low-rank factors.
                for _ in range(2):
                    trainer.optimizer_step()
                    trainer.forward_backward(stream)
                saved["step3"] = _grads(model)
            torch.save(saved, Path(out) / f"{name}-rank{rank}.pt")
            del trainer, model, stream
            gc.collect()


def _reference(accum: int) -> dict[str, torch.Tensor]:
    """One process, one backward over every micro-batch of every rank, concatenated."""
    ds = _dataset()
    steps = _sampler(ds, 0).steps()  # (step, rank, batch): identical on every rank
    idx = torch.cat([torch.as_tensor(steps[m, r]) for r in range(WORLD) for m in range(accum)])
    batch = ds.batch(idx.numpy(), pad_to=MAX_LEN)
    model = _model()
    F.cross_entropy(model(batch["input_ids"], batch["attention_mask"]), batch["labels"]).backward()
    return _grads(model)


def _spawn(fn, *args) -> None:
    mp.start_processes(fn, args=args, nprocs=WORLD, start_method="spawn", join=True)


def _both_worker(rank: int, init: str, out: str) -> None:
    """Every knob's gradients, then the resume run, in one pair of rank processes."""
    _knob_worker(rank, init, out)
    _resume_worker(rank, init + "-resume", out)


@pytest.fixture(scope="module")
def launched(tmp_path_factory) -> Path:
    """The one 2-rank launch of this module, shared by its tests on every xdist worker."""
    return made_once(
        tmp_path_factory,
        "ddp",
        lambda tmp: _spawn(_both_worker, f"file://{tmp / 'rendezvous'}", str(tmp)),
    )


@pytest.fixture(scope="module")
def knob_grads(launched):
    return {
        name: [torch.load(launched / f"{name}-rank{r}.pt") for r in range(WORLD)] for name in CASES
    }


# Tolerances: fp32 all-reduce only reorders a sum; fp16 keeps ~11 significant bits.
# (The bf16 hook needs NCCL: tests/gpu covers it; on gloo it is a clear UserError, below.)
TOL = {"fp16_hook": (2e-3, 2e-3)}


def _mismatch(name: str, grads: list[dict]) -> str | None:
    """Why one knob setting's gradients are wrong, or None."""
    rank0, rank1 = (r["step1"] for r in grads)
    ref = _reference(CASES[name][1])
    rtol, rel_atol = TOL.get(name, (1e-5, 1e-6))
    for key, want in ref.items():
        # identical across ranks: the optimizers stay in lockstep
        if not torch.equal(rank0[key], rank1[key]):
            return f"{key}: rank 0 and rank 1 differ"
        # + fp16's subnormal spacing (2^-24): tiny gradients lose relative precision there
        floor = 2.0**-23 if name == "fp16_hook" else 1e-9
        atol = rel_atol * float(want.abs().max()) + floor
        try:
            torch.testing.assert_close(rank0[key], want, rtol=rtol, atol=atol, msg=key)
        except AssertionError as exc:
            return str(exc).splitlines()[0]
    return None


def test_ddp_gradients_match_single_process_for_every_knob(knob_grads):
    # One test, not one per knob: fewer tests to read the one launch (tests/helpers_procs.py
    # made_once keeps it to one launch however pytest-xdist spreads them).
    wrong = {name: why for name in CASES if (why := _mismatch(name, knob_grads[name]))}
    assert not wrong, wrong


def test_bf16_hook_on_cpu_is_a_clear_error():
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    with pytest.raises(UserError, match="comm_hook = 'bf16' needs CUDA"):
        wrap_ddp(_model(), DDPKnobs(comm_hook="bf16"), torch.device("cpu"))


def test_static_graph_with_accumulation_is_a_clear_error():
    # PyTorch's static-graph DDP breaks under no_sync(); refuse it rather than hang or lie.
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    model = _model()
    ddp = wrap_ddp(model, DDPKnobs(static_graph=True), torch.device("cpu"))
    with pytest.raises(UserError, match="static_graph = true with grad_accum > 1"):
        Trainer(model=ddp, optimizer=torch.optim.AdamW(model.parameters()), scaler=None,
                precision="fp32", device=torch.device("cpu"), grad_accum=2)  # fmt: skip


def test_powersgd_sends_low_rank_gradients_after_its_start(knob_grads):
    rank0, rank1 = (r["step3"] for r in knob_grads["powersgd_hook"])
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    # A compressed matrix gradient is the rank-1 product P Q^T the ranks exchanged.
    ffn = "hf.distilbert.transformer.layer.0.ffn.lin1.weight"
    assert rank0[ffn].shape == (64, 32)
    assert int(torch.linalg.matrix_rank(rank0[ffn])) == 1
    assert rank0[ffn].abs().sum() > 0


# --------------------------------------------------------------------------------------------
# Exact resume with 2 ranks
# --------------------------------------------------------------------------------------------


def _resume_worker(rank: int, init: str, out: str) -> None:
    run = RunSpec(device="cpu", nproc_per_node=WORLD, model="tiny", data="synthetic:160",
                  per_device_batch=8, precision="fp32", lr=1e-3, max_length=64,
                  seq_policy="dynamic", seed=1)  # fmt: skip
    root = Path(out)
    quiet = lambda _m: None  # noqa: E731
    with process_group(
        device="cpu", backend="gloo", rank=rank, world_size=WORLD, init_method=init, timeout_s=60
    ) as ctx:
        full = fit(FitSpec(run=run, epochs=2, checkpoint_every=3), ctx, root / "a", log=quiet)
        cut = FitSpec(run=run, epochs=2, checkpoint_every=3, stop_after_steps=7)
        fit(cut, ctx, root / "b", log=quiet)
        resumed = fit(FitSpec(run=run, epochs=2, checkpoint_every=3), ctx, root / "b", log=quiet)
    results = {"full": full.losses, "resumed": resumed.losses, "from": resumed.resumed_from,
               "acc_full": full.accuracies, "acc_resumed": resumed.accuracies}  # fmt: skip
    (root / f"result-rank{rank}.json").write_text(json.dumps(results))


def test_two_rank_resume_is_bit_exact(launched):
    tmp_path = launched
    for rank in range(WORLD):
        res = json.loads((tmp_path / f"result-rank{rank}.json").read_text())
        full = [tuple(x) for x in res["full"]]
        # 144 training items / (2 ranks x 8) = 9 steps per epoch
        assert [s for s, _ in full] == list(range(1, 19))
        # Killed at 7; the last checkpoint is mid-epoch 1 (step 6), so the resumed run
        # replays the rest of epoch 1, its evaluation and the epoch boundary.
        assert res["from"].endswith("step-00000006")
        assert [tuple(x) for x in res["resumed"]] == full[6:]  # bit for bit
        assert res["acc_resumed"] == res["acc_full"]
    hist_a = (tmp_path / "a" / "history.jsonl").read_text()
    assert (tmp_path / "b" / "history.jsonl").read_text() == hist_a
