"""What naming a generator by its content costs: the first hash of a model folder and a cached lookup.

Writes a folder with a ``config.json`` and ``--gib`` GiB of random weights in ``--files`` safetensors
shards, then times :func:`bias_ray.models.identity.folder_digest` twice: the first call reads every
byte (SHA-256), the second finds the digest in the cache (``$BIAS_RAY_CACHE``, here a temporary
folder) by each file's size and mtime. Prints GiB/s and the seconds a 15 GB (8B bf16) model would take.

    PYTHONPATH=. python bench/model_identity.py [--gib 2] [--files 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=float, default=2.0)
    ap.add_argument("--files", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["BIAS_RAY_CACHE"] = str(Path(tmp) / "cache")
        from bias_ray.models.identity import folder_digest

        model = Path(tmp) / "model"
        model.mkdir()
        (model / "config.json").write_text('{"model_type": "llama"}')
        per_file, block = int(args.gib * (1 << 30) / args.files), os.urandom(1 << 24)
        for i in range(args.files):
            with open(model / f"model-{i:05d}-of-{args.files:05d}.safetensors", "wb") as f:
                for _ in range(per_file // len(block)):
                    f.write(block)
        size = sum(p.stat().st_size for p in model.iterdir()) / (1 << 30)
        os.system("sync")
        clock = time.perf_counter()
        first = folder_digest(model)
        hashed_s = time.perf_counter() - clock
        clock = time.perf_counter()
        again = folder_digest(model)
        cached_s = time.perf_counter() - clock
        assert first == again
        print(f"{size:.2f} GiB in {args.files} file(s): first digest {hashed_s:.2f} s ({size / hashed_s:.2f} GiB/s, "
              f"page cache warm), cached lookup {cached_s * 1000:.1f} ms; a 15 GB model: "
              f"~{15e9 / (1 << 30) / (size / hashed_s):.0f} s at this rate")


if __name__ == "__main__":
    main()
