"""Training: loss falls, resume equals an uninterrupted run (also after SIGKILL), stops and crashes are reported."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlx.core as mx
import pytest

from conftest import lm_recipe, wait_for_checkpoint
from mlxft.api import train
from mlxft.errors import RunError
from mlxft.recipe import recipe_from_dict
from mlxft.runs import RunDir

MLXFT = [sys.executable, "-m", "mlxft"]


def _step_losses(run_dir: Path) -> dict[int, float]:
    """The last reported loss of every step (a resumed run re-reports the steps after its checkpoint)."""
    out = {}
    for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        e = json.loads(line)
        if e["event"] == "StepReport":
            out[e["step"]] = e["loss"]
    return out


def _events(run_dir: Path, kind: str) -> list[dict]:
    return [e for e in map(json.loads, (Path(run_dir) / "metrics.jsonl").read_text().splitlines()) if e["event"] == kind]


def test_training_lowers_validation_loss_and_writes_an_adapter(tiny_llama, chat_data, tmp_path):
    run = train(lm_recipe(tiny_llama, chat_data, tmp_path, train={"steps": 24, "eval_every": 12, "compile": True}))
    assert run.ok, run.error
    evals = _events(run.path, "EvalReport")
    assert evals[0]["step"] == 0 and evals[-1]["step"] == 24
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.5
    assert (run.adapter_path / "adapters.safetensors").is_file() and (run.adapter_path / "adapter_config.json").is_file()
    assert (run.path / "recipe.yaml").is_file()


@pytest.mark.parametrize("kind", ["lm-dora", "lm-full", "lm-qlora"])
def test_every_method_trains_and_lowers_the_loss(tiny_llama, chat_data, tmp_path, kind):
    lr = 3e-3 if kind == "lm-full" else 1e-2
    recipe = lm_recipe(tiny_llama, chat_data, tmp_path, kind=kind, train={"steps": 12, "learning_rate": lr, "save_every": None})
    if kind == "lm-qlora":
        recipe["quantize"] = {"bits": 8, "group_size": 32}
    run = train(recipe)
    assert run.ok, run.error
    evals = _events(run.path, "EvalReport")
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]


def test_gradient_accumulation_and_checkpointing_train(tiny_qwen, chat_data, tmp_path):
    run = train(lm_recipe(tiny_qwen, chat_data, tmp_path, train={"steps": 6, "batch_size": 2, "grad_accumulation": 2, "grad_checkpoint": True, "eval_every": 6, "save_every": None}))
    assert run.ok, run.error
    evals = _events(run.path, "EvalReport")
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]


def test_resumed_run_matches_an_uninterrupted_one(tiny_llama, chat_data, tmp_path):
    full = train(lm_recipe(tiny_llama, chat_data, tmp_path / "a", train={"steps": 12, "save_every": 6}, lora={"dropout": 0.1}))
    assert full.ok, full.error
    expected = _step_losses(full.path)

    # The same run, cut at its step-6 checkpoint (as if it had died there), then resumed.
    cut = train(lm_recipe(tiny_llama, chat_data, tmp_path / "b", train={"steps": 12, "save_every": 6}, lora={"dropout": 0.1}))
    run = RunDir(cut.path)
    for step, folder in run.checkpoints():
        if step > 6:
            import shutil

            shutil.rmtree(folder)
    from mlxft.train.process import resume_run

    resumed = resume_run(cut.path)
    assert resumed.ok, resumed.error
    got = _step_losses(cut.path)
    assert sorted(got) == sorted(expected)
    for step in expected:
        assert got[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-7), f"step {step}"


def _start_cli(args, cwd) -> subprocess.Popen:
    return subprocess.Popen(MLXFT + args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for(predicate, timeout=120.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _write_recipe(tmp_path, recipe) -> Path:
    import yaml

    p = tmp_path / "recipe.yaml"
    p.write_text(yaml.safe_dump(recipe))
    return p


def test_run_killed_with_sigkill_resumes_to_the_same_losses(tiny_llama, chat_data, tmp_path):
    steps = 300
    sections = dict(train={"steps": steps, "save_every": 20, "eval_every": None, "log_every": 1, "keep_checkpoints": 3})
    reference = train(lm_recipe(tiny_llama, chat_data, tmp_path / "ref", **sections))
    assert reference.ok, reference.error
    expected = _step_losses(reference.path)

    recipe = _write_recipe(tmp_path, lm_recipe(tiny_llama, chat_data, tmp_path / "killed", **sections))
    proc = _start_cli(["train", str(recipe)], tmp_path)
    root = tmp_path / "killed"
    assert wait_for_checkpoint(root, 20) is not None
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its training child, mid-training
    proc.wait()
    run_dir = next(root.iterdir())
    assert not _events(run_dir, "RunFinished"), "the run must have been killed before it finished"

    out = subprocess.run(MLXFT + ["train", "--resume", str(run_dir)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    got = _step_losses(run_dir)
    assert sorted(got) == list(range(1, steps + 1))
    for step in expected:
        assert got[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-7), f"step {step}"


def test_ctrl_c_stops_saves_and_says_how_to_resume(tiny_llama, chat_data, tmp_path):
    recipe = _write_recipe(tmp_path, lm_recipe(tiny_llama, chat_data, tmp_path / "runs", train={"steps": 100000, "save_every": None, "eval_every": None}))
    proc = _start_cli(["train", str(recipe)], tmp_path)
    root = tmp_path / "runs"
    assert _wait_for(lambda: any(_events(d, "StepReport") for d in root.glob("*") if (d / "metrics.jsonl").is_file()))
    os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C: the whole group gets it
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "mlxft train --resume" in err
    run = RunDir(next(root.iterdir()))
    assert run.latest_checkpoint() is not None
    assert _events(run.path, "RunFinished")[-1]["status"] == "stopped"


def test_a_dead_training_process_is_reported_with_its_last_checkpoint(tiny_llama, chat_data, tmp_path):
    recipe = _write_recipe(tmp_path, lm_recipe(tiny_llama, chat_data, tmp_path / "runs", train={"steps": 100000, "save_every": 5, "eval_every": None}))
    proc = _start_cli(["train", str(recipe)], tmp_path)
    root = tmp_path / "runs"
    assert _wait_for(lambda: any(root.glob("*/checkpoints/step-*/state.json")))
    started = _events(next(root.iterdir()), "RunStarted")[0]
    os.kill(started["pid"], signal.SIGKILL)  # only the child, as the kernel's OOM killer would
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "SIGKILL" in err and "out of memory" in err and "last complete checkpoint:" in err and "--resume" in err


def test_nan_loss_stops_with_a_clear_message(tiny_llama, chat_data, tmp_path):
    from mlxft.llm.sft import SFTJob
    from mlxft.train.loop import LoopHooks, Trainer

    recipe = recipe_from_dict(lm_recipe(tiny_llama, chat_data, tmp_path))
    job = SFTJob(recipe)
    norm = job.model.model.norm
    norm.weight = norm.weight * float("nan")
    trainer = Trainer(job, recipe.train, seed=0, total_steps=3, run_dir=tmp_path, hooks=LoopHooks())
    with pytest.raises(RunError) as err:
        trainer.train_step()
    assert "nan" in err.value.message and "step 1" in err.value.message and "learning_rate" in err.value.hint


def test_loss_on_selected_rows_equals_loss_on_full_logits(tiny_model, chat_data):
    from mlxft.data.batches import collate
    from mlxft.data.encode import SampleEncoder, encode_records
    from mlxft.data.sources import read_split
    from mlxft.llm.loading import load_model
    from mlxft.recipe import DataSection
    from mlxft.llm.objective import make_loss, split_forward

    loaded = load_model(str(tiny_model))
    assert split_forward(loaded.model, loaded.model_type) is not None
    samples, _ = encode_records(read_split(chat_data, "valid")[:4], SampleEncoder(loaded.tokenizer, DataSection(path="x")), "chat", 128, "truncate")
    b = collate(samples)
    args = (mx.array(b.inputs), mx.array(b.targets), mx.array(b.positions), mx.array(b.weights))
    fast, n1 = make_loss(loaded.model, loaded.model_type)(loaded.model, *args)
    slow, n2 = make_loss(loaded.model, loaded.model_type, split=False)(loaded.model, *args)
    assert n1.item() == n2.item() == b.trained_tokens
    assert fast.item() == pytest.approx(slow.item(), rel=1e-5)


def test_early_stopping_and_keep_best_follow_the_validation_loss(tiny_llama, chat_data, tmp_path):
    from mlxft.llm.sft import SFTJob
    from mlxft.train.loop import LoopHooks, Trainer

    recipe = recipe_from_dict(lm_recipe(tiny_llama, chat_data, tmp_path, train={"steps": 50, "eval_every": 2, "early_stopping_patience": 2, "save_every": None}))
    job = SFTJob(recipe)
    events, saved = [], []
    job.save = lambda folder: saved.append((Path(folder).name, trainer.state.step))
    trainer = Trainer(job, recipe.train, seed=0, total_steps=50, run_dir=tmp_path, hooks=LoopHooks(emit=events.append))
    scripted = iter([5.0, 4.0, 3.0, 3.5, 3.2, 2.0])  # best at step 4, then two evaluations without improvement
    trainer.evaluate = lambda max_batches=None: ({"loss": next(scripted)}, 10)
    status = trainer.fit()
    assert status == "early-stopped"
    assert trainer.state.step == 8 and trainer.state.best_step == 4 and trainer.state.best_val_loss == 3.0
    assert ("best", 2) in saved and ("best", 4) in saved and not any(name == "best" and step > 4 for name, step in saved)


def test_qlora_trains_on_an_already_quantized_checkpoint(tiny_llama, chat_data, tmp_path):
    from mlx_lm.convert import convert

    quantized = tmp_path / "tiny-4bit"
    convert(hf_path=str(tiny_llama), mlx_path=str(quantized), quantize=True, q_group_size=32, q_bits=4)
    run = train(lm_recipe(quantized, chat_data, tmp_path / "runs", kind="lm-qlora", train={"steps": 12, "save_every": None}))
    assert run.ok, run.error
    messages = [e["message"] for e in _events(run.path, "LogMessage")]
    assert not any("dequantized" in m for m in messages), "QLoRA keeps the quantized base"
    evals = _events(run.path, "EvalReport")
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]


def test_a_saved_datasets_folder_trains_like_jsonl(tiny_llama, chat_data, tmp_path):
    from datasets import Dataset, DatasetDict

    rows = {split: [json.loads(l) for l in (chat_data / f"{split}.jsonl").read_text().splitlines()] for split in ("train", "valid")}
    DatasetDict({"train": Dataset.from_list(rows["train"]), "validation": Dataset.from_list(rows["valid"])}).save_to_disk(str(tmp_path / "ds"))
    run = train(lm_recipe(tiny_llama, tmp_path / "ds", tmp_path / "runs", train={"steps": 4, "save_every": None, "eval_every": 4}))
    assert run.ok, run.error
    started = _events(run.path, "RunStarted")[0]
    assert started["train_samples"] == len(rows["train"]) and started["valid_samples"] == len(rows["valid"])


def test_an_alpaca_json_array_trains_directly(tiny_llama, tmp_path):
    rows = [{"instruction": f"Name color {i}.", "input": "" if i % 2 else "briefly", "output": ["red", "green", "blue"][i % 3]} for i in range(12)]
    data = tmp_path / "alpaca.json"
    data.write_text(json.dumps(rows))
    run = train(lm_recipe(tiny_llama, data, tmp_path / "runs", data={"format": "auto"}, train={"steps": 3, "eval_every": None, "save_every": None}))
    assert run.ok, run.error
    assert _events(run.path, "RunStarted")[0]["train_samples"] == 12
