"""Time the byte check of images two splits share (labelmatch/data/shared_images.py) at COCO's
scale: 5000 val files against 118287 train files, sparse files of log-normal sizes around 160 kB
(a random 4 KiB head, zeros after, so that equal sizes are common and heads differ), as
`copied_files` sees them. Prints the seconds and how many digests it computed.

    python benchmarks/shared_images_scale.py --dir /scratch/shared-images   # ~1 GB of inodes
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labelmatch.data.shared_images import _digests, _file_sizes, copied_files  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, required=True, help="where the files are made")
    parser.add_argument("--val", type=int, default=5000)
    parser.add_argument("--train", type=int, default=118287)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    args.dir.mkdir(parents=True, exist_ok=True)
    count = args.val + args.train
    sizes = np.clip(rng.lognormal(np.log(160_000), 0.35, count), 5000, 700_000).astype(int)
    paths = [str(args.dir / f"{n:06d}.jpg") for n in range(count)]
    for path, size in zip(paths, sizes, strict=True):
        if not os.path.exists(path):
            with open(path, "wb") as file:
                file.write(rng.bytes(4096))
                file.truncate(int(size))
    size_of, digest = _file_sizes(), _digests()
    started = time.perf_counter()
    copies = copied_files(paths[: args.val], paths[args.val :], size_of, digest)
    seconds = time.perf_counter() - started
    print(
        f"val {args.val} x train {args.train}: {seconds:.1f} s, {len(copies)} copies, "
        f"{digest.cache_info().currsize} digests"
    )


if __name__ == "__main__":
    main()
