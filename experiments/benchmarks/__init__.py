"""Benchmark parts for ``python -m experiments.bench``.

Each module here exposes ``run(quick: bool) -> list[dict]``; register it in
``experiments.bench.PARTS`` with one line.
"""
