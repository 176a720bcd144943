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

Accuracy per minute (--checkpoints K): every leg saves its adapter every K steps; afterwards each saved adapter is
scored on the --eval test texts and put at the training time it was saved (seconds since the loop started, from the
run's own step reports). The SFT adapters are scored by ranking the two label words (`mlxft eval --score labels`),
so an answer that is not a label cannot lose points the classifier would not; the final SFT adapter is also scored by
generation. The table then says when each classifier first reached the SFT baseline's final accuracy, against the
SFT leg's whole training time (the issue's goal: under half), and each leg's best accuracy.

Same wall time (--minutes M): every mlxft leg trains until its loop has run M minutes (measured from the loop's start, as
the run's step reports count it; a stop request after the first step past it, so the run saves its adapter as any stopped
run does), --steps being only a cap. This is the issue's "trained for the same wall time" comparison: a cheaper step
sees more reviews in the same time.
Full IMDB table: .venv/bin/python benchmarks/classify.py --train 5000 --eval 2000 --tokens 128 --steps 625 --minutes 10
                 --lr 3e-4 --legs score,verbalizer,sft,zero-shot --out /tmp/bench-classify-full.json

Leg `zero-shot` (optional): the verbalizer of the untrained model (one step at lr 1e-12), the base every classifier
should beat.

Serving speed (--predict N): after each classifier leg, `mlxft.classifier(RUN)` (what `mlxft predict` runs) labels N
test reviews cut to their first --predict-tokens tokens (short texts: a tweet, a ticket title), --predict-batch at a time;
texts per minute counts the labelling call only (the model load is timed apart), and the labels are checked to be ones
the classifier knows. Next to it, the floor the body's dense matmuls alone set on the same batches (each weight's
`x @ W.T` timed at the batch's padded rows): how far serving is from what BLAS allows on the machine.

Leg `mlx-lm` (optional, in --legs): mlx-lm's own `lora` trainer on the SFT form of the same texts (the float32
model benchmarks/train.py prepares, same LoRA, batch, steps, lr, prompt masked), its adapters scored like mlxft's SFT.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
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
             "eval_every": None, "save_every": args.checkpoints or None, "keep_checkpoints": 1000, "log_every": 1, "compile": True}
    lora = {"rank": 8, "alpha": 16, "targets": ["q_proj", "k_proj", "v_proj", "o_proj"], "layers": args.layers}
    common = {"model": model, "output_dir": str(out), "name": leg, "seed": 0, "lora": lora, "train": train}
    if leg == "zero-shot":  # the untrained model's verbalizer: LoRA's B starts at zero and one step at lr 1e-12 moves nothing
        common["train"] = {**train, "steps": 1, "learning_rate": 1e-12, "save_every": None}
        leg = "verbalizer"
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


def accuracy(leg: str, run_dir: Path, test: list[dict], model_path: str | None = None, by: str = "generate") -> float:
    return scores(leg, run_dir, test, model_path, by)["accuracy"]


def scores(leg: str, run_dir: Path, test: list[dict], model_path: str | None = None, by: str = "generate") -> dict:
    """Accuracy and macro-F1 on `test` of a classifier (its argmax) or an SFT adapter (by generation, or by ranking the
    label words), scored by mlxft's own classification report (`mlxft eval`'s): an answer naming no label counts as wrong."""
    from mlxft.eval.classification import classification_report

    truth = [r["label"] for r in test]
    pred = predictions(leg, run_dir, test, model_path, by)
    report = classification_report(truth, ["(no label)" if p is None else p for p in pred], labels=sorted(WORDS))
    return {"accuracy": report.accuracy, "macro_f1": report.macro.f1, "no_label": report.other,
            "per_class_f1": {k: v.f1 for k, v in report.per_class.items()}}


def predictions(leg: str, run_dir: Path, test: list[dict], model_path: str | None = None, by: str = "generate") -> list[str | None]:
    """Each test text's predicted label (None: an SFT answer that names no label)."""
    import mlxft

    if leg not in ("sft", "mlx-lm"):
        return [p["label"] for p in mlxft.classifier(run_dir)([r["text"] for r in test], batch_size=8)]
    from mlxft.eval.compare import generate_answers
    from mlxft.llm.generate import render_prompt

    model_path = model_path or json.loads((run_dir / "model.json").read_text())["model_path"]
    model, tok = mlxft.load(model_path, adapter=run_dir)
    texts = [render_prompt(tok, prompt=TEMPLATE.format(text=r["text"])) for r in test]
    if by == "labels":
        from mlxft.eval.label_scoring import score_labels

        words = list(WORDS.values())  # as trained: the assistant's answer is " positive" / " negative", space included
        keys = {w: k for k, w in WORDS.items()}
        ranked = score_labels(model, tok, texts, [words] * len(texts), model_type=getattr(model, "model_type", ""), batch_size=8)
        return [keys[next(iter(r))] for r in ranked]
    answers = generate_answers(model, tok, texts, max_tokens=4, batch_size=8)

    def label(answer: str) -> str | None:
        found = [(answer.lower().find(w.strip()), k) for k, w in WORDS.items() if w.strip() in answer.lower()]
        return min(found)[1] if found else None

    return [label(a) for a in answers]


def predict_speed(run_dir: Path, texts: list[str], batch: int) -> dict:
    """Texts per minute of mlxft.classifier(run) over `texts` (the load timed apart), every answer one of its labels."""
    import mlxft

    t0 = time.perf_counter()
    clf = mlxft.classifier(run_dir)
    load_s = time.perf_counter() - t0
    clf(texts[:batch], batch_size=batch)  # the first batch pays MLX's kernel set-up once, as a served model would only once
    t1 = time.perf_counter()
    answers = clf(texts, batch_size=batch)
    seconds = time.perf_counter() - t1
    known = set(clf.labels)
    if len(answers) != len(texts) or any(a["label"] not in known for a in answers):
        raise SystemExit(f"{run_dir}: the classifier returned {len(answers)} answers for {len(texts)} texts, or a label it does not know")
    floor = matmul_floor(clf, texts, batch)
    return {"texts": len(texts), "seconds": seconds, "texts_per_minute": 60 * len(texts) / max(seconds, 1e-9), "load_s": load_s, "batch": batch,
            "matmul_floor_s": floor, "matmul_bound_texts_per_minute": 60 * len(texts) / floor if floor else None}


def matmul_floor(clf, texts: list[str], batch: int) -> float | None:
    """Seconds the body's Linear layers alone take over these texts at this batch (each batch padded to its longest
    prompt, as predict does): every dense weight's `x @ W.T` timed on random rows of its shape. No elementwise work, no
    attention, no LoRA: what the BLAS floor of predict is on this machine. None for a quantized body."""
    import mlx.core as mx
    import mlx.nn as nn

    layers = getattr(getattr(clf.model, "model", None), "layers", None)
    if layers is None:
        return None
    modules = [m for layer in layers for _, m in layer.named_modules()]
    weights = [m.weight for m in modules if type(m) is nn.Linear]
    if not weights or any(type(m) is nn.QuantizedLinear for m in modules):
        return None
    shapes: dict[tuple[int, int], int] = {}
    for w in weights:
        shapes[tuple(w.shape)] = shapes.get(tuple(w.shape), 0) + 1
    prompts, _ = clf.encoder.encode(clf.rows(texts))
    lengths = sorted(len(p) for p in prompts)
    rows = [len(lengths[i: i + batch]) * max(lengths[i: i + batch]) for i in range(0, len(lengths), batch)]
    total = 0.0
    for n in sorted(set(rows)):
        per_batch = 0.0
        for (out_dim, in_dim), count in shapes.items():
            x, w = mx.random.normal((n, in_dim)), mx.random.normal((out_dim, in_dim))
            mx.eval(x, w, x @ w.T)
            times = []
            for _ in range(5):
                t = time.perf_counter()
                mx.eval(x @ w.T)
                times.append(time.perf_counter() - t)
            per_batch += sorted(times)[2] * count
        total += per_batch * rows.count(n)
    return total


def checkpoint_curve(leg: str, run_dir: Path, test: list[dict], batch: int) -> list[dict]:
    """(step, training seconds at that step, accuracy) of each checkpoint an mlxft run saved, in step order."""
    steps = {e["step"]: e["elapsed_s"] for e in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if e["event"] == "StepReport"}
    curve = []
    for folder in sorted((run_dir / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1])):
        step = int(folder.name.split("-")[1])
        curve.append({"step": step, "train_s": steps.get(step), "accuracy": accuracy(leg, folder, test, json.loads((run_dir / "model.json").read_text())["model_path"], by="labels")})
        print(f"  {leg} step {step}: {curve[-1]['accuracy']:.3f} at {curve[-1]['train_s']:.0f} s", flush=True)
    return curve


def run_mlx_lm_leg(work: Path, args, test: list[dict]) -> dict:
    """mlx-lm's own trainer on the SFT form, through benchmarks/train.py's worker; its saved adapters scored by labels."""
    import os

    sys.path.insert(0, str(REPO / "benchmarks"))
    import train as bench_train

    env = {**os.environ, "LD_PRELOAD": bench_train.OPENBLAS} if Path(bench_train.OPENBLAS).is_file() else dict(os.environ)
    targs = argparse.Namespace(model=None, tiny=args.tiny)
    model, _ = bench_train.prepare_model(targs, env)
    data = work / "mlx-lm-data"
    data.mkdir(exist_ok=True)
    (data / "train.jsonl").write_text((work / "sft" / "train.jsonl").read_text())
    (data / "valid.jsonl").write_text("".join((work / "sft" / "train.jsonl").read_text().splitlines(True)[:8]))
    out = work / "mlx-lm-adapters"
    cfg = {"model": str(model), "train": True, "fine_tune_type": "lora", "optimizer": "adam", "data": str(data), "seed": 0,
           "num_layers": args.layers, "batch_size": args.batch, "iters": args.steps, "val_batches": 1, "learning_rate": args.lr,
           "steps_per_report": 1, "steps_per_eval": args.steps + 1, "adapter_path": str(out), "save_every": args.checkpoints or args.steps,
           "max_seq_length": 1024, "grad_checkpoint": False, "mask_prompt": True,
           "lora_parameters": {"rank": 8, "dropout": 0.0, "scale": 2.0, "keys": [f"self_attn.{t}" for t in ("q_proj", "k_proj", "v_proj", "o_proj")]}}
    import yaml

    (work / "mlx-lm.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    events = work / "mlx-lm-reports.jsonl"
    t0 = time.perf_counter()
    ran = bench_train._run_logged([sys.executable, str(REPO / "benchmarks" / "train.py"), "--mlx-lm-worker", str(work / "mlx-lm.yaml"), str(events)],
                                  env, work / "mlx-lm.log")
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    start, reports = lines[0]["loop_start"], [r for r in lines[1:] if "iteration" in r]
    at = {r["iteration"]: r["t"] - start for r in reports}
    result = {"wall_s": time.perf_counter() - t0, "process_wall_s": ran["process_wall_s"], "steps": reports[-1]["iteration"],
              "seconds_after_step_1": at[reports[-1]["iteration"]] - at[reports[0]["iteration"]],
              "sequences_per_s": (reports[-1]["iteration"] - reports[0]["iteration"]) * args.batch / max(at[reports[-1]["iteration"]] - at[reports[0]["iteration"]], 1e-9),
              "peak_memory_gb": max(r["peak_memory"] for r in reports), "first_loss": reports[0]["train_loss"], "last_loss": reports[-1]["train_loss"]}
    if args.eval:
        curve = []
        adapter_cfg = json.loads((out / "adapter_config.json").read_text())
        for path in sorted(out.glob("*_adapters.safetensors")):
            step = int(path.name.split("_")[0])
            folder = work / "mlx-lm-checkpoints" / f"step-{step}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "adapter_config.json").write_text(json.dumps(adapter_cfg))
            shutil.copy(path, folder / "adapters.safetensors")
            curve.append({"step": step, "train_s": at.get(step), "accuracy": accuracy("mlx-lm", folder, test, str(model), by="labels")})
            print(f"  mlx-lm step {step}: {curve[-1]['accuracy']:.3f} at {curve[-1]['train_s']:.0f} s", flush=True)
        result["curve"] = curve
        result["accuracy_by_labels"] = accuracy("mlx-lm", out, test, str(model), by="labels")
        result["accuracy"] = accuracy("mlx-lm", out, test, str(model))
        result["eval_texts"] = len(test)
    return result


def time_budget(minutes: float | None):
    """An on_event callback that asks the run to stop once its training loop has run `minutes` (None: no budget)."""
    state = {}

    def on_event(event) -> None:
        from mlxft.events import RunStarted, StepReport
        from mlxft.runs import RunDir

        if isinstance(event, RunStarted):
            state["run"] = RunDir(event.run_dir)
        elif minutes and isinstance(event, StepReport) and event.elapsed_s >= minutes * 60 and not state.get("asked"):
            state["run"].request_stop()
            state["asked"] = True

    return on_event


def goal_table(legs: dict) -> dict:
    """When each classifier first reached the SFT leg's final (label-ranked) accuracy, against the SFT leg's training time."""
    sft = legs.get("sft")
    if not sft or "curve" not in sft or not sft["curve"]:
        return {}
    target, sft_s = sft["curve"][-1]["accuracy"], sft["curve"][-1]["train_s"]
    out = {"sft_final_accuracy_by_labels": target, "sft_train_s": sft_s}
    for leg in ("score", "verbalizer"):
        if leg in legs and legs[leg].get("curve"):
            reached = next((c for c in legs[leg]["curve"] if c["accuracy"] >= target), None)
            best = max(c["accuracy"] for c in legs[leg]["curve"])
            out[leg] = {"reached_sft_accuracy_at_s": reached["train_s"] if reached else None,
                        "share_of_sft_time": reached["train_s"] / sft_s if reached and sft_s else None,
                        "best_accuracy": best, "beats_sft_best": best > max(c["accuracy"] for c in sft["curve"])}
    return out


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
    p.add_argument("--minutes", type=float, help="train each mlxft leg for this many minutes of its loop (same wall time; --steps is the cap)")
    p.add_argument("--predict", type=int, default=0, help="after each classifier leg, time mlxft.classifier on this many short test texts")
    p.add_argument("--predict-tokens", type=int, default=24, help="each --predict text's first N tokens")
    p.add_argument("--predict-batch", type=int, default=16)
    p.add_argument("--checkpoints", type=int, default=0, help="save every K steps and score every save (accuracy per minute; needs --eval)")
    args = p.parse_args()
    if args.predict < 0 or args.predict_tokens < 1 or args.predict_batch < 1:
        p.error("--predict takes 0 or more texts, --predict-tokens and --predict-batch 1 or more")

    sys.path.insert(0, str(REPO / "tests"))
    from mlxft.api import train  # mlxft first: it preloads BLAS before mlx.core

    work = Path(tempfile.mkdtemp(prefix="bench-classify-"))
    if args.tiny or not (MODEL.is_dir() and IMDB.is_dir()):
        from tiny import build_model

        model, rows, test = str(build_model(work / "tiny", "llama")), synthetic(args.train, 0), synthetic(max(args.eval, 1), 1)
        short = [r["text"] for r in synthetic(args.predict, 2)]
        args.layers = min(args.layers, 2)
    else:
        from mlxft.llm.loading import load_tokenizer

        model, tok = str(MODEL), load_tokenizer(str(MODEL))
        rows, test = reviews("imdb_train_5000.csv", args.train, 0, args.tokens, tok), reviews("imdb_test_2000.csv", max(args.eval, 1), 1, args.tokens, tok)
        short = [r["text"] for r in reviews("imdb_test_2000.csv", args.predict, 2, args.predict_tokens, tok)] if args.predict else []
    write_jsonl(work / "cls" / "train.jsonl", rows)
    write_jsonl(work / "sft" / "train.jsonl", [{"prompt": TEMPLATE.format(text=r["text"]), "completion": WORDS[r["label"]]} for r in rows])
    results = {"model": model, "train_texts": len(rows), "settings": vars(args), "legs": {}}
    for leg in args.legs.split(","):
        if leg == "mlx-lm":
            result = run_mlx_lm_leg(work, args, test)
            results["legs"][leg] = result
            print(f"{leg:<11} {result['sequences_per_s']:6.2f} seq/s  peak {result['peak_memory_gb']:.2f} GB  loss {result['first_loss']:.3f} -> {result['last_loss']:.3f}"
                  + (f"  accuracy {result['accuracy']:.3f} (labels {result['accuracy_by_labels']:.3f}) on {len(test)}" if args.eval else ""), flush=True)
            continue
        t0 = time.perf_counter()
        run = train(recipe(leg, model, work, work / "runs", args), on_event=time_budget(args.minutes))
        if not run.ok:
            print(f"{leg}: failed: {run.error}", file=sys.stderr)
            return 1
        result = {"wall_s": time.perf_counter() - t0, **throughput(run.path, args.batch)}
        if args.eval:
            t1 = time.perf_counter()
            result.update(scores(leg, run.path, test))
            result["eval_s"] = time.perf_counter() - t1
            result["eval_texts"] = len(test)
            if leg == "sft":
                labelled = scores(leg, run.path, test, by="labels")
                result["accuracy_by_labels"], result["macro_f1_by_labels"] = labelled["accuracy"], labelled["macro_f1"]
            if args.checkpoints:
                result["curve"] = checkpoint_curve(leg, run.path, test, args.batch)
        if args.predict and leg != "sft":
            result["predict"] = predict_speed(run.path, short, args.predict_batch)
            print(f"{leg:<11} predict: {result['predict']['texts_per_minute']:.0f} texts/min ({len(short)} texts of <= {args.predict_tokens} tokens, "
                  f"batch {args.predict_batch}; load {result['predict']['load_s']:.1f} s)"
                  + (f"; the body's matmuls alone bound it at {result['predict']['matmul_bound_texts_per_minute']:.0f}" if result["predict"]["matmul_floor_s"] else ""), flush=True)
        results["legs"][leg] = result
        print(f"{leg:<11} {result['sequences_per_s']:6.2f} seq/s  peak {result['peak_memory_gb']:.2f} GB  loss {result['first_loss']:.3f} -> {result['last_loss']:.3f}"
              + (f"  accuracy {result['accuracy']:.3f} macro-F1 {result['macro_f1']:.3f} on {len(test)}" if args.eval else ""), flush=True)
    results["goal"] = goal_table(results["legs"])
    for leg, g in results["goal"].items():
        if isinstance(g, dict):
            when = f"{g['reached_sft_accuracy_at_s']:.0f} s ({g['share_of_sft_time']:.0%} of SFT's {results['goal']['sft_train_s']:.0f} s)" if g["reached_sft_accuracy_at_s"] is not None else "never"
            print(f"{leg}: reached SFT's final accuracy {results['goal']['sft_final_accuracy_by_labels']:.3f} at {when}; best {g['best_accuracy']:.3f}"
                  f" ({'beats' if g['beats_sft_best'] else 'does not beat'} SFT's best)")
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
