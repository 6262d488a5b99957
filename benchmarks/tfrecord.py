"""Images/s of the TFRecord input pipeline alone, and its peak memory as the set grows, printed as JSON.

Usage: python benchmarks/tfrecord.py [--images 20000] [--size 224] [--shard-size 1000] [--shuffle-shards 4]

Writes ``--images`` random images as shards with the subset stage's writer into a temporary folder,
then, in a fresh process for half the set and for all of it, streams one epoch through
``dataset.batches`` exactly as a training stage would (shuffled by groups of shards, then with and
without the augmentation) and reports images/s and the process's peak resident memory. Memory that
stays flat from half the set to all of it is the point: one group of shards is held at a time.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline import machine, repo_env


def write_set(directory: Path, images: int, size: int, shard_size: int) -> list[str]:
    import numpy as np

    from inat_classifier.data.records import shard_name, write_shard

    rng, names, shards = np.random.default_rng(0), [], -(-images // shard_size)
    for k in range(shards):
        count = min(shard_size, images - k * shard_size)
        pixels = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
        labels = rng.integers(0, 4, count)
        names.append(shard_name("train", k, shards, k * shard_size, labels, pixels))
        write_shard(str(directory / names[-1]), k * shard_size, labels, pixels)
    return [str(directory / name) for name in names]


def stream(files: list[str], images: int, args: argparse.Namespace) -> dict:
    """One epoch, in this process: images/s with and without augmentation, and peak memory."""
    import numpy as np

    from inat_classifier.train.dataset import Split, batches
    from inat_classifier.params import parse_params
    from inat_classifier.data.records import Records

    params = parse_params({"data": {"image_size": args.size, "format": "tfrecord", "shard_size": args.shard_size,
                                    "shuffle_shards": args.shuffle_shards}})
    records = Records(files, images, args.shard_size, args.size)
    split = Split("train", None, np.zeros(images, np.int32), [], [], records)
    baseline_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"images": images, "shards": len(files), "peak_rss_mb_before_streaming": round(baseline_mb)}
    for augment in (False, True):
        data = batches(split, params.data, params.seed, shuffle=True, augment=params.augment if augment else None)
        data.set_epoch(1)
        start, seen = time.perf_counter(), 0
        for _, labels in data.dataset:
            seen += len(labels)
        assert seen == images, (seen, images)
        out["augmented" if augment else "plain"] = round(seen / (time.perf_counter() - start), 1)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--shuffle-shards", type=int, default=4)
    parser.add_argument("--stream", nargs=2, metavar=("FILES_JSON", "IMAGES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stream:  # the child process
        print("RESULT " + json.dumps(stream(json.loads(args.stream[0]), int(args.stream[1]), args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        files = write_set(Path(tmp), args.images, args.size, args.shard_size)
        written = time.perf_counter() - start
        runs = []
        for images in (args.images // 2, args.images):
            shards = files[: -(-images // args.shard_size)]
            command = [sys.executable, __file__, "--stream", json.dumps(shards), str(images), "--size", str(args.size),
                       "--shard-size", str(args.shard_size), "--shuffle-shards", str(args.shuffle_shards)]
            done = subprocess.run(command, env=repo_env(), capture_output=True, text=True)
            if done.returncode:
                sys.exit(done.stderr[-3000:])
            runs.append(json.loads(done.stdout.split("RESULT ", 1)[1]))
        gigabytes = sum(Path(name).stat().st_size for name in files) / 1e9
    result = {
        "benchmark": "TFRecord input pipeline alone (shuffled by groups of shards, one epoch)",
        "machine": machine(),
        "settings": {"image_size": args.size, "shard_size": args.shard_size, "shuffle_shards": args.shuffle_shards,
                     "records_gb": round(gigabytes, 2), "write_seconds": round(written, 1)},
        "images_per_second": {str(run["images"]): {"plain": run["plain"], "augmented": run["augmented"]} for run in runs},
        "peak_rss_mb": {str(run["images"]): run["peak_rss_mb"] for run in runs},
        "peak_rss_growth_half_to_full": round(runs[1]["peak_rss_mb"] / runs[0]["peak_rss_mb"], 3),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
