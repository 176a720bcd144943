"""Peak memory and pairs/s of mlxft DPO (reference precomputed, and live) against mlxft SFT LoRA, and mlx-lm-lora's DPO.

Run:  .venv/bin/python benchmarks/dpo.py --out /tmp/bench-dpo.json            (about 10 min on 2 idle CPU cores)
Try:  .venv/bin/python benchmarks/dpo.py --steps 2 --batch 2 --max-seq-length 128 --out /tmp/d.json  (smoke check, ~1 min)

SmolLM2-135M-Instruct (the 4-bit asset, dequantized to float32 on load as `mlxft train` does on the CPU), LoRA r8
alpha 16 on q/k/v/o of every block, batch 4, max_seq_length 512, compiled step, AdamW lr 1e-4 constant, clipping 1.0.
Pairs from alpaca_en_demo_chat/train.jsonl: prompt = the user turn, chosen = that row's reference answer, rejected =
the next row's reference answer (`--rejected other`, default) or the first third of its own answer
(`--rejected truncated`). The `sft` leg trains on the same rows' chosen side (prompt + chosen as a chat) at the same
batch; `sft-2x` trains on both sides as SFT rows at twice the batch: the 2B sequences one DPO step holds.
`mlx-lm-lora` runs mlx-lm-lora's DPO on the same pairs from its own venv (`--mlx-lm-lora-python`); its released
trainers stop on the CPU with a KeyError (see `mlx_lm_lora_worker`), so after recording that the leg runs again
through that one-key shim.

Each leg is its own process (so peaks do not mix), built through mlxft's own code: `JOBS[kind](recipe)` (the job
`mlxft train` builds), `job.prepare(run_dir)` (DPO precompute: the reference log-probs of every pair, timed and its
peak read separately), then the real `Trainer`: one warm-up step (trace, compile, optimizer state), then
`mx.reset_peak_memory()` and `--steps` timed steps; the peak is `mx.get_peak_memory()` over those steps, as
benchmarks/memory_plan.py reads it. The data are `(steps + 1) * batch` pairs, so the run is exactly one epoch and
every leg sees every pair once (batches are mlxft's length buckets: by pair length for DPO, by chosen length for SFT).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO.parent / "shared" / "assets"  # as tests/conftest.py finds them
SMOLLM = ASSETS / "models" / "smollm2-135m-instruct-4bit"
CHAT = ASSETS / "data" / "instructions" / "alpaca_en_demo_chat"
ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
LEGS = ["sft", "sft-2x", "dpo-precompute", "dpo-live", "mlx-lm-lora"]


# -- data ----------------------------------------------------------------------------------------


def build_pairs(n: int, rejected: str) -> list[dict]:
    """n preference pairs (TRL conversational layout) from the first single-turn rows of the alpaca demo chat set."""
    rows = []
    with open(CHAT / "train.jsonl") as f:
        for line in f:
            m = json.loads(line)["messages"]
            if len(m) == 2 and m[0]["role"] == "user" and m[1]["role"] == "assistant":
                rows.append((m[0]["content"], m[1]["content"]))
            if len(rows) > n:
                break
    pairs = []
    for i, (prompt, answer) in enumerate(rows[:n]):
        if rejected == "other":
            bad = rows[i + 1][1]
        else:
            words = answer.split()
            bad = " ".join(words[: max(1, len(words) // 3)])
        pairs.append({"prompt": [{"role": "user", "content": prompt}], "chosen": [{"role": "assistant", "content": answer}],
                      "rejected": [{"role": "assistant", "content": bad}]})
    return pairs


def write_data(work: Path, n: int, rejected: str) -> tuple[Path, Path]:
    pairs = build_pairs(n, rejected)
    pdir, sdir = work / "pairs", work / "sft"
    pdir.mkdir(parents=True, exist_ok=True)
    sdir.mkdir(parents=True, exist_ok=True)
    (pdir / "train.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    (sdir / "train.jsonl").write_text("".join(json.dumps({"messages": p["prompt"] + p["chosen"]}) + "\n" for p in pairs))
    both = work / "sft-2x"  # the 2B sequences a DPO step holds (chosen and rejected), as SFT rows
    both.mkdir(parents=True, exist_ok=True)
    (both / "train.jsonl").write_text("".join(json.dumps({"messages": p["prompt"] + p[side]}) + "\n" for p in pairs for side in ("chosen", "rejected")))
    return pdir, sdir


# -- one leg, in its own process -----------------------------------------------------------------


def recipe_for(leg: str, data: Path, run_dir: Path, args) -> dict:
    r = {
        "kind": "lm-dpo" if leg.startswith("dpo") else "lm-lora", "model": str(SMOLLM), "dtype": "float32", "output_dir": str(run_dir), "seed": 0,
        "data": {"path": str(data), "max_seq_length": args.max_seq_length},
        "lora": {"rank": 8, "alpha": 16, "dropout": 0.0, "targets": ATTENTION, "layers": "all"},
        "train": {"steps": args.steps + 1, "batch_size": args.batch, "learning_rate": 1e-4, "schedule": "constant", "compile": True,
                  "eval_every": None, "save_every": None, "log_every": 1},
    }
    if leg.startswith("dpo"):
        r["preference"] = {"beta": 0.1, "reference": "live" if leg == "dpo-live" else "precompute"}
    return r


def worker(leg: str, data: Path, args) -> dict:
    import mlxft  # noqa: F401  (before mlx.core: loads the fast BLAS)
    import mlx.core as mx

    from mlxft.recipe import recipe_from_dict
    from mlxft.train.loop import LoopHooks, Trainer
    from mlxft.train.run import JOBS

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        recipe = recipe_from_dict(recipe_for(leg, data, run_dir, args))
        mx.random.seed(recipe.seed)
        t = time.perf_counter()
        job = JOBS[recipe.kind](recipe)
        load_s = time.perf_counter() - t
        mx.reset_peak_memory()
        t = time.perf_counter()
        if hasattr(job, "prepare"):
            job.prepare(run_dir)
        prepare_s, prepare_peak = time.perf_counter() - t, mx.get_peak_memory()
        trainer = Trainer(job, recipe.train, seed=recipe.seed, run_dir=run_dir, hooks=LoopHooks())
        t = time.perf_counter()
        trainer.train_step()  # trace + compile + optimizer state
        warm_s = time.perf_counter() - t
        mx.reset_peak_memory()
        times, sizes, losses = [], [], []
        for _ in range(args.steps):
            t = time.perf_counter()
            loss, _, size, _ = trainer.train_step()
            times.append(time.perf_counter() - t)
            sizes.append(size)
            losses.append(loss)
        peak = mx.get_peak_memory()
    # SFT's size is trained tokens; DPO's is pairs. Every step of both holds `batch` rows of the same data.
    n_rows = args.batch * args.steps // (2 if leg == "sft-2x" else 1)  # sft-2x: two rows per pair
    return {"leg": leg, "load_s": load_s, "prepare_s": prepare_s, "prepare_peak_bytes": prepare_peak, "warmup_s": warm_s,
            "step_s": times, "sizes": sizes, "losses": losses, "peak_bytes": peak, "pairs_per_s": n_rows / sum(times)}


def run_leg(leg: str, data: Path, args) -> dict:
    batch = args.batch * (2 if leg == "sft-2x" else 1)
    cmd = [sys.executable, __file__, "--worker", leg, "--data", str(data), "--steps", str(args.steps), "--batch", str(batch),
           "--max-seq-length", str(args.max_seq_length)]
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        return {"leg": leg, "error": (out.stderr or out.stdout)[-3000:], "process_s": time.perf_counter() - t}
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - t
    return result


# -- mlx-lm-lora (optional, its own venv and CLI) --------------------------------------------------


def float32_model(work: Path, python: str) -> Path:
    """The asset dequantized to float32 with mlx-lm's converter (cached as benchmarks/train.py caches it)."""
    final = Path(os.environ.get("MLXFT_CACHE", Path.home() / ".cache" / "mlxft")) / "bench" / "smollm2-135m-instruct-f32"
    if not (final / "model.safetensors").is_file():
        tmp = work / "f32"
        subprocess.run([python, "-m", "mlx_lm", "convert", "--hf-path", str(SMOLLM), "--mlx-path", str(tmp), "-d", "--dtype", "float32"],
                       check=True, stdout=subprocess.DEVNULL)
        cfg = json.loads((tmp / "config.json").read_text())
        cfg["torch_dtype"] = "float32"  # the converter keeps the source's torch_dtype; say what the weights are
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
        final.parent.mkdir(parents=True, exist_ok=True)
        if not final.exists():
            tmp.rename(final)
    return final


def mlx_lm_lora_worker(argv: list[str]) -> None:
    """`python -m mlx_lm_lora.train` unchanged but for one dictionary key: mlx-lm-lora 5.10.2's trainers call
    `mx.set_wired_limit(mx.device_info()["max_recommended_working_set_size"])` unconditionally, a key only Metal's
    device_info has, so on the CPU they stop with a KeyError before the first step. The shim supplies 0 (no wired limit)."""
    import mlx.core as mx

    info = mx.device_info

    def device_info():
        return {"max_recommended_working_set_size": 0, **info()}

    mx.device_info = device_info
    sys.argv = ["mlx_lm_lora.train", *argv]
    from mlx_lm_lora.train import main as lora_main

    lora_main()


def run_mlx_lm_lora(work: Path, pdir: Path, args) -> dict:
    """mlx-lm-lora's DPO through its documented CLI (`mlx_lm_lora.train -c cfg.yaml`), from its own venv; the error if not."""
    py = Path(args.mlx_lm_lora_python)
    if not py.is_file():
        return {"leg": "mlx-lm-lora", "error": f"{py} not found (python -m venv /tmp/mlxlora-venv; pip install mlx-lm-lora)"}
    t = time.perf_counter()
    try:
        model = float32_model(work, str(py))
    except subprocess.CalledProcessError as exc:
        return {"leg": "mlx-lm-lora", "error": f"mlx_lm convert failed: {exc}"}
    # Its DPO rows are flat strings: {"prompt", "chosen", "rejected"} (DPODataset renders the chat template).
    ddir = work / "mlx-lm-lora-data"
    ddir.mkdir(exist_ok=True)
    flat = [json.loads(l) for l in (pdir / "train.jsonl").read_text().splitlines()]
    flat = [{"prompt": r["prompt"][0]["content"], "chosen": r["chosen"][0]["content"], "rejected": r["rejected"][0]["content"]} for r in flat]
    text = "".join(json.dumps(r) + "\n" for r in flat)
    (ddir / "train.jsonl").write_text(text)
    (ddir / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in flat[: args.batch]))  # required by its loader
    cfg = {
        "model": str(model), "train": True, "data": str(ddir), "train_type": "lora", "train_mode": "dpo", "optimizer": "adam",
        "num_layers": -1, "batch_size": args.batch, "iters": args.steps + 1, "learning_rate": 1e-4, "steps_per_report": 1,
        "steps_per_eval": 10**6, "val_batches": 1, "save_every": 10**6, "max_seq_length": args.max_seq_length, "seed": 0,
        "adapter_path": str(work / "mlx-lm-lora-adapters"), "fuse": False, "beta": 0.1, "dpo_cpo_loss_type": "sigmoid",
        "lora_parameters": {"rank": 8, "dropout": 0.0, "scale": 2.0},
    }
    (work / "mlx-lm-lora.yaml").write_text(json.dumps(cfg))  # JSON is YAML
    cmd = [str(py), "-m", "mlx_lm_lora.train", "-c", str(work / "mlx-lm-lora.yaml")]
    if args.mlx_lm_lora_shim:
        cmd = [str(py), __file__, "--mlx-lm-lora-worker", "-c", str(work / "mlx-lm-lora.yaml")]
    env = dict(os.environ)
    blas = sorted(Path("/usr/lib").glob("*-linux-gnu/openblas-pthread/libblas.so.3"))
    if blas:  # as benchmarks/train.py gives mlx-lm the BLAS mlxft loads itself
        env["LD_PRELOAD"] = str(blas[0])
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=work, env=env)
    r = {"leg": "mlx-lm-lora" + (" (shim)" if args.mlx_lm_lora_shim else ""), "cmd": " ".join(cmd), "config": cfg, "rc": out.returncode, "process_s": time.perf_counter() - t}
    its, peaks = [], []
    for m in re.finditer(r"Iter (\d+): loss [^\n]*?it/s ([\d.]+), tok/s [\d.]+, peak_mem ([\d.]+)GB", out.stdout + out.stderr):
        its.append((int(m.group(1)), float(m.group(2))))
        peaks.append(float(m.group(3)))
    if out.returncode != 0 or len(its) < 2:
        r["error"] = (out.stderr or out.stdout)[-3000:]
        return r
    times = [1.0 / s for it, s in its if it > 1]  # after the warm-up step, as the mlxft legs
    r.update(step_s=times, pairs_per_s=args.batch * len(times) / sum(times), peak_bytes=peaks[-1] * 1e9, warmup_s=1.0 / its[0][1],
             prepare_s=0.0, prepare_peak_bytes=0, peak_note="mx.get_peak_memory() since its start (both models, loading included)")
    return r


# -- the run -------------------------------------------------------------------------------------


def main(argv: list[str]) -> None:
    if argv[:1] == ["--mlx-lm-lora-worker"]:
        mlx_lm_lora_worker(argv[1:])
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10, help="timed steps after the warm-up step")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--max-seq-length", type=int, default=512)
    p.add_argument("--rejected", choices=["other", "truncated"], default="other")
    p.add_argument("--legs", default=",".join(LEGS))
    p.add_argument("--mlx-lm-lora-python", default="/tmp/mlxlora-venv/bin/python")
    p.add_argument("--mlx-lm-lora-shim", action="store_true", help="run it through mlx_lm_lora_worker (the CPU KeyError patched)")
    p.add_argument("--out", type=Path)
    p.add_argument("--worker")
    p.add_argument("--data", type=Path)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.data, args)))
        return
    if not SMOLLM.is_dir():
        sys.exit(f"{SMOLLM} is not here: this benchmark needs ../shared/assets")
    work = Path(tempfile.mkdtemp(prefix="bench-dpo-"))
    pdir, sdir = write_data(work, (args.steps + 1) * args.batch, args.rejected)
    results = []
    for leg in [l for l in args.legs.split(",") if l != "mlx-lm-lora"]:
        r = run_leg(leg, {"sft": sdir, "sft-2x": work / "sft-2x"}.get(leg, pdir), args)
        results.append(r)
        print(json.dumps({k: v for k, v in r.items() if k not in ("step_s", "sizes", "losses")}), flush=True)
    if "mlx-lm-lora" in args.legs.split(","):
        r = run_mlx_lm_lora(work, pdir, args)
        results.append(r)
        if "error" in r and "max_recommended_working_set_size" in r["error"] and not args.mlx_lm_lora_shim:
            print(json.dumps({"leg": r["leg"], "rc": r["rc"], "error": r["error"][-400:]}), flush=True)
            args.mlx_lm_lora_shim = True  # record the error as released, then measure it with the one key supplied
            r = run_mlx_lm_lora(work, pdir, args)
            results.append(r)
        print(json.dumps({k: v for k, v in r.items() if k not in ("step_s", "config")})[-3000:], flush=True)
    ok = {r["leg"]: r for r in results if "peak_bytes" in r}
    print(f"\n| leg | peak GB | vs SFT | pairs/s | vs SFT | reference precompute s (peak GB) | warm-up step s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    sft = ok.get("sft")
    for leg, r in ok.items():
        mem = f"{r['peak_bytes'] / sft['peak_bytes']:.2f}x" if sft else ""
        speed = f"{r['pairs_per_s'] / sft['pairs_per_s']:.2f}x" if sft else ""
        pre = f"{r['prepare_s']:.1f} ({r['prepare_peak_bytes'] / 1e9:.2f})" if leg == "dpo-precompute" else ""
        print(f"| {leg} | {r['peak_bytes'] / 1e9:.2f} | {mem} | {r['pairs_per_s']:.3f} | {speed} | {pre} | {r['warmup_s']:.1f} |")
    for r in results:
        if "error" in r:
            print(f"\n{r['leg']} did not run: {r['error'][-1500:]}")
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": f"{platform.machine()} {os.cpu_count()} cores",
            "load": os.getloadavg(), "args": {k: str(v) for k, v in vars(args).items()}, "work": str(work)}
    if args.out:
        args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
