"""harness: the benchmark machinery around the distrinews workload.

It expands sweep files into run specs, launches one torchrun per point, samples GPU telemetry,
stores results, analyses scaling and renders reports. It imports ``distrinews``; ``distrinews``
never imports it.
"""
