"""Tollgate's benchmark harness: ``make bench`` (full run, writes ``bench/RESULTS.md``) and
``make bench-smoke`` (seconds). See ``bench/README.md``."""
