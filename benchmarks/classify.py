"""Text classification: sequences/s, peak memory and accuracy of lm-classify (score head, verbalizer) against an SFT LoRA
(lm-lora, the label word as the answer) on the same model, texts, batch size and steps.

Run:   .venv/bin/python benchmarks/classify.py --out /tmp/bench-classify.json
Tiny:  .venv/bin/python benchmarks/classify.py --tiny --out /tmp/bench-classify-tiny.json   (random 2-layer llama, ~1 min)
Try:   .venv/bin/python benchmarks/classify.py --train 64 --steps 8 --eval 0 --legs score,sft --out /tmp/b.json

Data: IMDB reviews from ../shared/assets/data/imdb (balanced, seeded), each cut to its first --tokens tokens so that
no leg truncates anything and every batch has one shape: the classifier's prompt is "Review: {text}\\nSentiment:", the SFT row is the same prompt
as the user turn and " positive" / " negative" as the assistant's answer (the chat template adds its own tokens).
Every leg trains LoRA rank 8 on q/k/v/o of the last --layers blocks, batch --batch, --steps steps, lr --lr, compiled,
no evaluation during training. Sequences/s is measured from the run's own step reports between step 1 (which pays
for compilation) and the last step. With --eval N, each leg is then scored on N test reviews: the classifiers by
their argmax, the SFT adapter by greedy generation (4 tokens) read for the label word; both on the same texts.
Run it on an otherwise idle machine: on 2 cores, one other busy process halves the numbers.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO.parent / "shared" / "assets"
MODEL = ASSETS / "models" / "smollm2-135m-instruct-4bit"
IMDB = ASSETS / "data" / "imdb"
TEMPLATE = "Review: {text}\nSentiment:"
WORDS = {"0": " negative", "1": " positive"}


def reviews(name: str, n: int, seed: int, tokens: int, tokenizer) -> list[dict]:
    """n balanced reviews, each cut to its first `tokens` tokens (one batch shape: the step's cost, not recompilation, is measured)."""
    hf = getattr(tokenizer, "_tokenizer", tokenizer)
    rows = list(csv.DictReader(open(IMDB / name, encoding="utf-8")))
    random.Random(seed).shuffle(rows)
    picked = [r for r in rows if r["label"] == "1"][: n // 2] + [r for r in rows if r["label"] == "0"][: n - n // 2]
    random.Random(seed + 1).shuffle(picked)
    cut = [hf.decode(hf(" ".join(r["text"].replace("<br />", " ").split()), add_special_tokens=False)["input_ids"][:tokens]) for r in picked]
    return [{"text": t, "label": r["label"]} for t, r in zip(cut, picked)]


def synthetic(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    filler = ["cat", "dog", "the", "a", "quick", "lazy", "fish", "bird"]
    out = []
    for _ in range(n):
        label = rng.choice(["0", "1"])
        words = rng.sample(filler, 5) + [{"0": "red", "1": "blue"}[label]]
        rng.shuffle(words)
        out.append({"text": " ".join(words), "label": label})
    return out


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def recipe(leg: str, model: str, data: Path, out: Path, args) -> dict:
    train = {"steps": args.steps, "batch_size": args.batch, "learning_rate": args.lr, "warmup_steps": 0, "schedule": "constant",
             "eval_every": None, "save_every": None, "log_every": 1, "compile": True}
    lora = {"rank": 8, "alpha": 16, "targets": ["q_proj", "k_proj", "v_proj", "o_proj"], "layers": args.layers}
    common = {"model": model, "output_dir": str(out), "name": leg, "seed": 0, "lora": lora, "train": train}
    if leg == "sft":
        return {**common, "kind": "lm-lora", "data": {"path": str(data / "sft"), "format": "completion", "max_seq_length": 1024}}
    return {**common, "kind": "lm-classify", "data": {"path": str(data / "cls"), "max_seq_length": 1024},
            "classify": {"head": leg, "prompt_template": TEMPLATE, "verbalizer": WORDS, "valid_fraction": 0}}


def throughput(run_dir: Path, batch: int) -> dict:
    steps = [e for e in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if e["event"] == "StepReport"]
    first, last = steps[0], steps[-1]
    seconds = last["elapsed_s"] - first["elapsed_s"]
    return {"steps": last["step"], "seconds_after_step_1": seconds, "sequences_per_s": (last["step"] - first["step"]) * batch / max(seconds, 1e-9),
            "peak_memory_gb": max(e["peak_memory_gb"] for e in steps), "first_loss": first["loss"], "last_loss": last["loss"]}


def accuracy(leg: str, run_dir: Path, test: list[dict]) -> float:
    import mlxft

    truth = [r["label"] for r in test]
    if leg != "sft":
        pred = [p["label"] for p in mlxft.classifier(run_dir)([r["text"] for r in test], batch_size=8)]
        return sum(p == t for p, t in zip(pred, truth)) / len(test)
    from mlxft.eval.compare import generate_answers
    from mlxft.llm.generate import render_prompt

    model, tok = mlxft.load(json.loads((run_dir / "model.json").read_text())["model_path"], adapter=run_dir)
    answers = generate_answers(model, tok, [render_prompt(tok, prompt=TEMPLATE.format(text=r["text"])) for r in test], max_tokens=4, batch_size=8)

    def label(answer: str) -> str | None:
        found = [(answer.lower().find(w.strip()), k) for k, w in WORDS.items() if w.strip() in answer.lower()]
        return min(found)[1] if found else None

    return sum(label(a) == t for a, t in zip(answers, truth)) / len(test)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--tiny", action="store_true", help="a random 2-layer llama and synthetic texts (a smoke check)")
    p.add_argument("--legs", default="score,verbalizer,sft")
    p.add_argument("--train", type=int, default=96, help="training texts")
    p.add_argument("--eval", type=int, default=0, help="test texts each leg is scored on afterwards (0: none)")
    p.add_argument("--tokens", type=int, default=96, help="each review's first N tokens")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    args = p.parse_args()

    sys.path.insert(0, str(REPO / "tests"))
    from mlxft.api import train  # mlxft first: it preloads BLAS before mlx.core

    work = Path(tempfile.mkdtemp(prefix="bench-classify-"))
    if args.tiny or not (MODEL.is_dir() and IMDB.is_dir()):
        from tiny import build_model

        model, rows, test = str(build_model(work / "tiny", "llama")), synthetic(args.train, 0), synthetic(max(args.eval, 1), 1)
        args.layers = min(args.layers, 2)
    else:
        from mlxft.llm.loading import load_tokenizer

        model, tok = str(MODEL), load_tokenizer(str(MODEL))
        rows, test = reviews("imdb_train_5000.csv", args.train, 0, args.tokens, tok), reviews("imdb_test_2000.csv", max(args.eval, 1), 1, args.tokens, tok)
    write_jsonl(work / "cls" / "train.jsonl", rows)
    write_jsonl(work / "sft" / "train.jsonl", [{"prompt": TEMPLATE.format(text=r["text"]), "completion": WORDS[r["label"]]} for r in rows])
    results = {"model": model, "train_texts": len(rows), "settings": vars(args), "legs": {}}
    for leg in args.legs.split(","):
        t0 = time.perf_counter()
        run = train(recipe(leg, model, work, work / "runs", args))
        if not run.ok:
            print(f"{leg}: failed: {run.error}", file=sys.stderr)
            return 1
        result = {"wall_s": time.perf_counter() - t0, **throughput(run.path, args.batch)}
        if args.eval:
            result["accuracy"] = accuracy(leg, run.path, test)
            result["eval_texts"] = len(test)
        results["legs"][leg] = result
        print(f"{leg:<11} {result['sequences_per_s']:6.2f} seq/s  peak {result['peak_memory_gb']:.2f} GB  loss {result['first_loss']:.3f} -> {result['last_loss']:.3f}"
              + (f"  accuracy {result['accuracy']:.3f} on {len(test)}" if args.eval else ""), flush=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
