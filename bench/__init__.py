"""Benchmark harness: poolwarden against gunicorn, uvicorn and granian under wrk.

Kept free of imports so that ``bench.apps`` can be loaded by every server under test
without pulling in the harness (or psutil) into the measured processes.
"""
