"""The shared training loop, in one process: learning, bf16 autocast, exact resume."""

from __future__ import annotations

import json

import pytest
import torch

from distrinews.checkpoint import CheckpointError, list_checkpoints
from distrinews.dataset import AGNewsDataset, LengthGroupedBatchSampler, synthetic_agnews
from distrinews.distributed import process_group
from distrinews.errors import UserError
from distrinews.model import NewsClassifier
from distrinews.runspec import RunSpec
from distrinews.train import BatchStream, FitSpec, StepTimer, Trainer, fit, make_scaler

CPU = torch.device("cpu")


def _run(**kw) -> RunSpec:
    base = dict(device="cpu", model="tiny", data="synthetic:320", per_device_batch=8,
                precision="fp32", lr=1e-3, max_length=64, seq_policy="dynamic")  # fmt: skip
    return RunSpec(**{**base, **kw})


def _fit(spec: FitSpec, out):
    with process_group(device="cpu", backend="gloo") as ctx:
        return fit(spec, ctx, out, log=lambda _m: None)


@pytest.mark.slow
def test_tiny_model_learns_real_agnews(tmp_path, agnews_csv, vocab_txt):
    run = _run(
        data=str(agnews_csv), tokenizer=str(vocab_txt), per_device_batch=64, lr=5e-3, max_length=128
    )
    result = _fit(FitSpec(run=run, epochs=1, eval_fraction=0.1), tmp_path)
    losses = [v for _, v in result.losses]
    assert len(losses) == (7600 - 760) // 64
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < first - 0.3, (first, last)  # starts near ln 4 = 1.386
    (epoch, accuracy), *_ = result.accuracies
    assert epoch == 0 and accuracy > 0.5  # chance is 0.25
    assert result.heldout_items == 760


def test_bf16_autocast_on_cpu():
    data = synthetic_agnews(64, seed=0)
    ds = AGNewsDataset.from_data(data, max_length=64)
    model = NewsClassifier.from_config("tiny", seed=0)
    seen = []
    model.hf.classifier.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    trainer = Trainer(
        model=model,
        optimizer=torch.optim.AdamW(model.parameters()),
        scaler=make_scaler("bf16", CPU),
        precision="bf16",
        device=CPU,
    )
    assert trainer.scaler is None  # bf16 needs no loss scaling
    stream = BatchStream(ds, LengthGroupedBatchSampler(ds.lengths, 16), pad_to=None, device=CPU)
    timer = StepTimer(CPU)
    losses = [float(trainer.step(stream, timer)) for _ in range(3)]
    assert seen == [torch.bfloat16] * 3  # matmuls really ran in bfloat16
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    assert all(1.0 < v < 2.0 for v in losses)
    assert len(timer.step_times_s()) == 3 and all(t > 0 for t in timer.step_times_s())
    trainer.check_finite()


def test_fp16_uses_a_grad_scaler_on_cpu():
    scaler = make_scaler("fp16", CPU)
    assert isinstance(scaler, torch.amp.GradScaler) and scaler.is_enabled()


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_resume_is_bit_exact_single_rank(tmp_path, precision):
    run = _run(precision=precision, data="synthetic:160")
    full = _fit(FitSpec(run=run, epochs=2, checkpoint_every=4), tmp_path / "a")
    # 144 training items / batch 8 = 18 steps per epoch
    assert [s for s, _ in full.losses] == list(range(1, 37))
    cut = _fit(FitSpec(run=run, epochs=2, checkpoint_every=4, stop_after_steps=22), tmp_path / "b")
    assert cut.stopped_early and cut.losses == full.losses[:22]
    # the run died after step 22; its newest checkpoint is step 20 (mid-epoch 1, after an
    # epoch boundary and an evaluation the resumed run must replay bit for bit)
    assert list_checkpoints(tmp_path / "b")[-1].name == "step-00000020"
    resumed = _fit(FitSpec(run=run, epochs=2, checkpoint_every=4), tmp_path / "b")
    assert resumed.resumed_from.endswith("step-00000020")
    assert resumed.losses == full.losses[20:]  # bit for bit, not approx
    assert resumed.accuracies == full.accuracies[1:]
    history = [json.loads(line) for line in (tmp_path / "b" / "history.jsonl").open()]
    assert [(h["step"], h["loss"]) for h in history] == list(full.losses)


def test_resume_refuses_another_model_shape_and_keeps_checkpoints(tmp_path):
    run = _run(data="synthetic:64")
    _fit(FitSpec(run=run, epochs=1), tmp_path)
    before = {p.name: (p / "checkpoint.pt").read_bytes() for p in list_checkpoints(tmp_path)}
    history = (tmp_path / "history.jsonl").read_text()
    other = FitSpec(run=RunSpec(**{**run.to_dict(), "model": "base"}), epochs=2)
    with pytest.raises(CheckpointError, match="another model shape"):
        _fit(other, tmp_path)
    after = {p.name: (p / "checkpoint.pt").read_bytes() for p in list_checkpoints(tmp_path)}
    assert after == before and (tmp_path / "history.jsonl").read_text() == history


def test_fitspec_validates_and_round_trips():
    spec = FitSpec(run=_run(), epochs=3, checkpoint_every=5, stop_after_steps=7)
    assert FitSpec.from_json(spec.to_json()) == spec
    with pytest.raises(UserError, match="epochs = 0"):
        FitSpec(run=_run(), epochs=0)
    with pytest.raises(UserError, match="eval_fraction"):
        FitSpec(run=_run(), eval_fraction=1.5)
    with pytest.raises(UserError, match="unknown key 'epoch'"):
        FitSpec.from_json(json.dumps({"run": _run().to_dict(), "epoch": 1}))


@pytest.mark.slow
def test_train_command_resumes_and_its_checkpoint_serves(tmp_path, agnews_csv, vocab_txt):
    from click.testing import CliRunner

    from distrinews.checkpoint import load_for_inference
    from harness.cli import cli

    args = ["train", "--data", "synthetic:256", "--tokenizer", str(vocab_txt), "--model", "tiny",
            "--batch-size", "16", "--out", str(tmp_path)]  # fmt: skip
    first = CliRunner().invoke(cli, [*args, "--epochs", "1"])
    assert first.exit_code == 0, first.output
    assert "epoch 0: held-out accuracy" in first.output
    # Before its first step, train says what it is doing: data, tokens, model size, ranks.
    before = first.output.split("step 1 ")[0]
    assert "data: loading synthetic:256" in before and "synthetic token ids" in before
    assert "model: tiny (" in before and "M parameters" in before and "on 1 cpu rank," in before
    second = CliRunner().invoke(cli, [*args, "--epochs", "2"])
    assert second.exit_code == 0, second.output
    assert "resumed from" in second.output and "epoch 1: held-out accuracy" in second.output
    assert "epoch 0:" not in second.output  # epoch 0 was not trained again
    # --help promises fit_result.json in --out, for one rank as for torchrun runs.
    result = json.loads((tmp_path / "fit_result.json").read_text())
    assert [epoch for epoch, _ in result["accuracies"]] == [1]
    assert result["losses"] and result["seconds"] > 0
    bundle = load_for_inference(tmp_path)
    assert bundle.meta["epoch"] == 2 and bundle.tokenizer is not None
    enc = bundle.tokenizer(["Oil prices climb"], return_tensors="pt")
    assert bundle.model(enc["input_ids"], enc["attention_mask"]).shape == (1, 4)
