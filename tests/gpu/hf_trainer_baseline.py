"""Baseline: Hugging Face ``Trainer`` on the same model, data, precision and batch as the worker.

This is what a user would otherwise write: ``Trainer`` with ``bf16=True``, a map-style dataset
and a padding collator (``DataCollatorWithPadding``-equivalent: pad to the longest in the batch,
or to a fixed length). It measures samples/s over the same kind of window as the worker:
``--warmup`` optimizer steps discarded, then ``--steps`` steps between two
``torch.cuda.synchronize()`` calls (made in a callback at the window's edges only)::

    python tests/gpu/hf_trainer_baseline.py --seq-policy fixed --batch 256 --out hf-fixed.json

Only needs torch, transformers and accelerate (no ``datasets``): it runs on a bare GPU node.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seq-policy", choices=["fixed", "dynamic"], default="fixed")
    parser.add_argument("--batch", type=int, default=256, help="per-device batch")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--precision", choices=["bf16", "fp16", "fp32"], default="bf16")
    parser.add_argument("--data", default="synthetic", help="a load_agnews source")
    parser.add_argument("--model", default="base", help="random-init shape (tiny: CPU smoke test)")
    parser.add_argument("--tokenizer", default="distilbert-base-uncased")
    parser.add_argument("--out", type=Path, default=None, help="write the result JSON here")
    args = parser.parse_args(argv)

    import torch
    from transformers import (
        DistilBertForSequenceClassification,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from distrinews.dataset import AGNewsDataset, collate, get_tokenizer, load_agnews
    from distrinews.model import build_config

    news = load_agnews(args.data, seed=0)
    tok = None if news.synthetic else get_tokenizer(args.tokenizer)
    dataset = AGNewsDataset.from_data(news, tok, max_length=args.max_length)
    pad_to = args.max_length if args.seq_policy == "fixed" else None

    class Items(torch.utils.data.Dataset):
        """Plain per-item dicts: what a user's tokenized dataset hands the Trainer."""

        def __len__(self) -> int:
            return len(dataset)

        def __getitem__(self, i: int) -> dict:
            return dataset[i]

    def collator(items: list[dict]) -> dict:
        return collate(items, pad_to=pad_to, pad_to_multiple_of=8)

    model = DistilBertForSequenceClassification._from_config(
        build_config(args.model), attn_implementation="sdpa"
    )
    times: dict[str, float] = {}
    cuda = torch.cuda.is_available()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    class Window(TrainerCallback):
        # Synchronize only at the window's two edges, as the worker does.
        def on_step_end(self, targs, state, control, **kw):
            if state.global_step == args.warmup:
                sync()
                times["start"] = time.perf_counter()
            elif state.global_step == args.warmup + args.steps:
                sync()
                times["end"] = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=args.batch,
            max_steps=args.warmup + args.steps,
            learning_rate=5e-5,
            bf16=args.precision == "bf16",
            fp16=args.precision == "fp16",
            report_to="none",
            save_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
            dataloader_num_workers=2 if cuda else 0,
            dataloader_pin_memory=cuda,
            seed=0,
        )
        trainer = Trainer(
            model=model,
            args=targs,
            train_dataset=Items(),
            data_collator=collator,
            callbacks=[Window()],
        )
        trainer.train()
    seconds = times["end"] - times["start"]
    samples = args.steps * args.batch
    # Real tokens of an average batch (the sampler is random, so use the data's mean length).
    mean_len = float(dataset.lengths.clip(max=args.max_length).mean())
    result = {
        "baseline": "transformers.Trainer",
        "seq_policy": args.seq_policy,
        "precision": args.precision,
        "per_device_batch": args.batch,
        "measured_steps": args.steps,
        "measured_time_s": seconds,
        "samples_per_s": samples / seconds,
        "real_tokens_per_s": samples * mean_len / seconds,
        "mem_peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "gpu_name": torch.cuda.get_device_name() if cuda else None,
        "optim": str(targs.optim),
    }
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
