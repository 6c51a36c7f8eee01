"""Benchmark: what the models fingerprint costs (issue 18).

A local models folder's fingerprint is the SHA-256 of its files' bytes
(:func:`zodi_core.model_source.folder_digest`), each file's hash remembered by its state (path,
size, mtime, ctime, inode) in this process and on disk. This writes one weights file of
``--gb`` GB (random bytes) in a models-like folder and times:

1. the first fingerprint (every byte read and hashed; the file was just written, so it is in
   the page cache: disk reads would add their own time on a cold cache), best of ``--repeat``;
2. the same fingerprint again in this process (what every further shard pays);
3. again after forgetting the in-process memo (what a new process pays: the disk cache answers);
4. again after rewriting the file in place (same size: the bytes are hashed again).

Run: ``python bench/hash_cost.py [--gb 1.5] [--repeat 3] [--dir /tmp]``. Prints one line per measurement and
a JSON summary; the figures are in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path


def _write(path: Path, size: int, seed: int) -> None:
    block = os.urandom(1 << 20) if seed else bytes(1 << 20)
    with open(path, "r+b" if path.exists() else "wb") as f:
        for i in range(size >> 20):
            f.write(block[:-8] + i.to_bytes(8, "big"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=1.5, help="size of the weights file (GB)")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where to write it")
    parser.add_argument("--repeat", type=int, default=3, help="first fingerprints (best is kept)")
    args = parser.parse_args()

    from zodi_core import model_source

    root = Path(tempfile.mkdtemp(prefix="zodi-hash-cost-", dir=args.dir))
    os.environ["XDG_CACHE_HOME"] = str(root / "xdg-cache")  # an empty hash cache of its own
    folder = root / "models" / "unet"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    weights = folder / "diffusion_pytorch_model.safetensors"
    size = int(args.gb * 1e9) >> 20 << 20
    _write(weights, size, seed=1)
    hashed: list[int] = []
    real = model_source.hash_file

    def counting(path: Path, *a, **kw) -> str:
        hashed.append(Path(path).stat().st_size)
        return real(path, *a, **kw)

    model_source.hash_file = counting  # count the bytes read

    def timed(label: str) -> dict:
        hashed.clear()
        t0 = time.perf_counter()
        digest = model_source.folder_digest(root / "models")
        seconds = time.perf_counter() - t0
        row = {"step": label, "seconds": round(seconds, 4), "bytes_hashed": sum(hashed),
               "digest": digest}  # fmt: skip
        print(f"{label:<34} {seconds:9.4f} s  {sum(hashed) / 1e9:6.2f} GB hashed")
        return row

    firsts = []
    for i in range(args.repeat):  # the first fingerprint again, each time with nothing remembered
        model_source._KNOWN.clear()
        os.environ["XDG_CACHE_HOME"] = str(root / f"xdg-cache-{i}")
        firsts.append(timed(f"first fingerprint ({i + 1}/{args.repeat})"))
    rows = [min(firsts, key=lambda r: r["seconds"])]
    rows.append(timed("again, same process"))
    model_source._KNOWN.clear()
    rows.append(timed("again, new process (disk cache)"))
    _write(weights, size, seed=2)  # the same size, other bytes, in place
    rows.append(timed("after replacing the weights"))
    shutil.rmtree(root)
    first = rows[0]
    summary = {
        "file_gb": round(size / 1e9, 3),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
        "throughput_gb_s": round(size / 1e9 / first["seconds"], 3),
        "first_seconds_all": [r["seconds"] for r in firsts],
        "load_average": os.getloadavg()[0],
        "rows": rows,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
