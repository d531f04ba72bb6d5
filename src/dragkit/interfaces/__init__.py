"""The interfaces people use: the command line (``cli``), the offline demo (``demo``) and the web app (``app``). They
sit on top of the pipelines and the benchmark harness, and nothing imports them."""
