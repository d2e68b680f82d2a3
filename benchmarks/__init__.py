"""Benchmarks run by ``./dev bench``: each module reports figures next to a baseline
measured in the same run (ratios, not absolute times: these machines are noisy)."""
