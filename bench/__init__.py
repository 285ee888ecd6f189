"""Benchmarks for billing_pipeline: one module per benchmark, run as `python -m bench.<name>`.

Not tests: nothing here is collected by pytest. See bench/README.md for what each measures.
"""
