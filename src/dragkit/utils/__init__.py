"""Helpers with no drag in them: atomic file IO and image loading (``io``), hub/loading messages (``hub``), the stage
profiler, drawing (``viz``) and the tiny random-weight models of the tests and benchmarks (``testing``)."""
