"""Benchmarks of script-ec2 against its targets: ``python -m bench.run`` (``make bench``).

Each ``bench/bench_*.py`` module exposes ``run(ctx: BenchContext) -> list[Figure]``; see
``bench/README.md`` for the contract and ``bench/common.py`` for the shared helpers.
"""
