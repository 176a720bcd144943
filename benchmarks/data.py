"""Data validation throughput and peak memory: `mlxft data validate` against loading the same file with `datasets`.

Run:   .venv/bin/python benchmarks/data.py --rows 200000 --out /tmp/bench-data.json
Tiny:  .venv/bin/python benchmarks/data.py --rows 5000 --out /tmp/bench-data-tiny.json   (a few seconds)

One invocation writes a chat JSONL of mixed lengths (with a few duplicates and bad rows, as real
files have), then measures, each in its own process so peak memory (max RSS) is per tool:
  mlxft-validate             validate_data(...) with the tokenizer: every row parsed, normalised,
                             rendered with the chat template, tokenized, checked for duplicates
  mlxft-validate-no-tokens   the same without a tokenizer (formats, duplicates, leakage only)
  datasets-load              datasets.load_dataset("json") into a fresh cache: parsing to Arrow only
  datasets-load+tokenize     the same plus .map() rendering the chat template and tokenizing
The tokenizer is SmolLM2's (../shared/assets) when present, else the tiny test tokenizer.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSET_MODEL = ROOT.parent / "shared" / "assets" / "models" / "smollm2-135m-instruct-4bit"
WORDS = "the a model data train answer question small fast local memory token adapter chat user system apple silicon".split()


def write_data(path: Path, clean_path: Path, rows: int, seed: int = 0) -> None:
    """`path` has a bad row every 997 lines, as real files do; `clean_path` is the same without them
    (datasets.load_dataset stops at the first bad row, so it gets the clean copy)."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f, open(clean_path, "w", encoding="utf-8") as clean:
        for i in range(rows):
            if i % 997 == 3:
                f.write("{not json\n")
                continue
            q = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 60)))
            a = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 200)))
            line = json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}) + "\n"
            f.write(line)
            clean.write(line)


def tokenizer_folder(work: Path) -> Path:
    if ASSET_MODEL.is_dir():
        return ASSET_MODEL
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny import build_model

    return build_model(work / "tiny", "llama")


WORKER = r"""
import json, resource, sys, time
mode, path, tok_dir, cache = sys.argv[1:5]
import mlxft  # noqa: F401
t0 = time.perf_counter()
if mode.startswith("mlxft"):
    from mlxft.data.validate import validate_data
    tok = None
    if mode == "mlxft-validate":
        from mlx_lm.utils import load_tokenizer
        from pathlib import Path
        tok = load_tokenizer(Path(tok_dir))
    t0 = time.perf_counter()
    report = validate_data(path, tokenizer=tok, max_seq_length=512)
    rows = sum(s.rows for s in report.splits.values())
else:
    import datasets
    datasets.disable_progress_bars()
    ds = datasets.load_dataset("json", data_files=path, split="train", cache_dir=cache)
    if mode == "datasets-load+tokenize":
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(tok_dir)
        ds = ds.map(lambda b: {"ids": [tok.apply_chat_template(m, tokenize=True) for m in b["messages"]]}, batched=True)
    rows = len(ds)
seconds = time.perf_counter() - t0
print(json.dumps({"rows": rows, "seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(mode: str, data: Path, tok_dir: Path, work: Path) -> dict:
    cache = tempfile.mkdtemp(dir=work)
    out = subprocess.run([sys.executable, "-c", WORKER, mode, str(data), str(tok_dir), cache], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        return {"error": out.stderr[-2000:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--modes", default="mlxft-validate,mlxft-validate-no-tokens,datasets-load,datasets-load+tokenize")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mlxft-bench-data-"))
    data, clean = work / "chat.jsonl", work / "chat-clean.jsonl"
    write_data(data, clean, args.rows)
    tok_dir = tokenizer_folder(work)
    size_mb = data.stat().st_size / 1e6
    print(f"data: {args.rows} rows, {size_mb:.1f} MB ({data}); tokenizer: {tok_dir}")
    results = {}
    for mode in args.modes.split(","):
        t0 = time.perf_counter()
        r = measure(mode, data if mode.startswith("mlxft") else clean, tok_dir, work)
        r["process_s"] = time.perf_counter() - t0
        results[mode] = r
        if "error" in r:
            print(f"{mode:26s} failed:\n{r['error']}")
            continue
        print(f"{mode:26s} {r['rows'] / r['seconds']:>10,.0f} rows/s  {r['seconds']:7.1f} s  peak RSS {r['peak_rss_mb']:7.0f} MB")
    base = results.get("datasets-load", {})
    for mode, r in results.items():
        if mode != "datasets-load" and "seconds" in r and "seconds" in base:
            print(f"{mode} vs datasets-load: time x{r['seconds'] / base['seconds']:.2f}, peak memory x{r['peak_rss_mb'] / base['peak_rss_mb']:.2f}")
    payload = {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "rows": args.rows, "size_mb": size_mb, "tokenizer": str(tok_dir), "results": results, "cpus": os.cpu_count()}
    args.out.write_text(json.dumps(payload, indent=2))
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
