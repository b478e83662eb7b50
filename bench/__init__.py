"""Benchmarks: the pipeline's overhead against the raw broker and the models themselves.

Run everything with `make bench` (bench/run_all.py); each module also runs on its own
(`python -m bench.<name> --help`). Bench-only code lives here and nowhere else: nothing in
shared/, gateway/ or services/ can switch a production process into a bench mode.
"""
