"""distrinews: DistilBERT fine-tuning on AG News under PyTorch DDP, and the numbers that explain it.

The package is the *workload*: one training run and everything it needs. It imports only torch,
transformers and numpy at module level so that it runs on a bare GPU node; the benchmark
machinery lives in the separate ``harness`` package, which depends on this one, never the reverse.
"""

__version__ = "0.1.0"
