"""LLaVA JSON -> datasets conversion at mix665k scale: rows/s and peak memory, llava-hf vs the naive peer.

    python bench/llava_json_convert.py [--rows 665000]

Writes a synthetic LLaVA JSON file shaped like llava_v1_5_mix665k.json (1-4 turn pairs, ~10% text-only rows, image
paths under coco/train2017/...), then converts it in fresh subprocesses with
- llava-hf: `load_llava_dataset` (ijson stream -> Arrow, no image decoded), and
- peer: `json.load` of the whole file + `datasets.Dataset.from_list` (what one writes without a streaming reader).
Prints one JSON line: rows/s, memory above the post-import baseline (MiB) of each, and the ratios ours / peer.
"""

import argparse
import json
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import datasets
from llava_hf.data import load_llava_dataset

def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

# Imports (torch, transformers, datasets) are loaded in both modes before timing: only the conversion is measured.
mode, path, cache = sys.argv[1], sys.argv[2], sys.argv[3]
baseline = rss_mib()
start = time.perf_counter()
if mode == "ours":
    dataset, report = load_llava_dataset(path, image_root="/data", cache_dir=cache)
else:
    records = json.load(open(path))
    dataset = datasets.Dataset.from_list(records)
rows = len(dataset)
elapsed = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"rows": rows, "seconds": elapsed, "extra_rss_mib": peak - baseline}))
"""


def make_file(path: Path, rows: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    words = ["the", "a", "man", "woman", "dog", "cat", "bus", "red", "blue", "table", "street", "picture", "shows"]
    with path.open("w") as handle:
        handle.write("[")
        for index in range(rows):
            turns = []
            for turn in range(rng.randint(1, 4)):
                question = " ".join(rng.choices(words, k=rng.randint(5, 15))) + "?"
                if turn == 0:
                    question = "<image>\n" + question
                turns += [
                    {"from": "human", "value": question},
                    {"from": "gpt", "value": " ".join(rng.choices(words, k=rng.randint(5, 40))) + "."},
                ]
            record = {"id": f"{index:012d}", "image": f"coco/train2017/{index:012d}.jpg", "conversations": turns}
            if index % 10 == 9:  # text-only rows, as in mix665k's ShareGPT part
                record.pop("image")
                turns[0]["value"] = turns[0]["value"].replace("<image>\n", "")
            handle.write(("," if index else "") + "\n" + json.dumps(record))
        handle.write("\n]\n")


def run(mode: str, path: Path, cache: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(path), cache], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=665_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mix.json"
        start = time.perf_counter()
        make_file(path, args.rows)
        size_mib = path.stat().st_size / 2**20
        ours = run("ours", path, f"{tmp}/cache-ours")
        peer = run("peer", path, f"{tmp}/cache-peer")
    result = {
        "bench": "llava_json_convert",
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "rows": args.rows,
        "file_mib": round(size_mib, 1),
        "generate_s": round(time.perf_counter() - start, 1),
        "ours": {"rows_per_s": round(ours["rows"] / ours["seconds"]), "extra_rss_mib": round(ours["extra_rss_mib"])},
        "peer_json_load_from_list": {
            "rows_per_s": round(peer["rows"] / peer["seconds"]),
            "extra_rss_mib": round(peer["extra_rss_mib"]),
        },
    }
    result["speed_ratio"] = round(result["ours"]["rows_per_s"] / result["peer_json_load_from_list"]["rows_per_s"], 2)
    result["memory_ratio"] = round(
        result["ours"]["extra_rss_mib"] / result["peer_json_load_from_list"]["extra_rss_mib"], 2
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
