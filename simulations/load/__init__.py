"""The loopback load benchmark (``python -m oppu.simulations.load_test``), one job per module.

- ``supernode``: one user's real SuperNode in its own data dir; the harness the benchmark,
  the federation tests and the fault tests all start SuperNodes with.
- ``history``: the synthetic LaMP_2N histories those SuperNodes train on.
- ``tiny_base``: the tiny random-init base served to them, built once and cached.
- ``memory_budget``: how many clients fit in the memory available now (and calibration).
- ``concurrency``: the ``--max-clientapps`` cap Flower lacks.
- ``sampler``: RSS and CPU of the whole process tree while the test runs.
- ``round``: the one-step round and its driver.
- ``runner``: the whole test: coordinator, SuperNodes at once, one round, measurements.
- ``report`` and ``table``: the JSON report and its rich table.
- ``cli``: the command line.
"""
