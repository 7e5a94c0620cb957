"""LabelMatch: semi-supervised object detection on PyTorch Lightning, torchvision and Hydra."""

import os

# OpenMP threads that wait passively (sleep) at the end of each parallel region instead of
# spinning. A training process shares the CPU with its loader workers (4 by default) and, on a
# shared machine, with others; a spinning thread whose partner is descheduled burns its slice,
# which made 2-thread CPU training steps up to 10x slower (0.5 s -> 5 s per burn-in step, measured
# with benchmarks/speed.py on a loaded 2-core machine). libgomp reads the variable when torch is
# first imported, so this takes effect for `python -m labelmatch.run` (this package is imported
# before torch); `make` sets it for every target. An explicit OMP_WAIT_POLICY wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
