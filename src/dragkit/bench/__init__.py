"""The benchmark harness: datasets (DragBench, Drag100, run folders), the resumable runner, the independent
measures (``metrics``: MD, LPIPS, DIFT) and their evaluation, and the speed benchmark.

Kept empty on purpose: ``dragkit.bench.metrics`` must import without the pipelines the runner needs."""
