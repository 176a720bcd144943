"""Data-parallel training (`--ranks N`, MLX's ring backend on loopback): the same run as one process, and safe to kill."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import lm_recipe, wait_for_checkpoint
from mlxft.api import train
from mlxft.distributed import World
from mlxft.errors import RunError
from mlxft.recipe import recipe_from_dict
from mlxft.runs import RunDir
from mlxft.train.process import RANKS_ENV, auto_ranks, check_ranks

MLXFT = [sys.executable, "-m", "mlxft"]


def _events(run_dir: Path, kind: str) -> list[dict]:
    return [e for e in map(json.loads, (Path(run_dir) / "metrics.jsonl").read_text().splitlines()) if e["event"] == kind]


def _curve(run_dir: Path) -> tuple[dict[int, float], dict[int, float]]:
    steps = {e["step"]: e["loss"] for e in _events(run_dir, "StepReport")}
    evals = {e["step"]: e["val_loss"] for e in _events(run_dir, "EvalReport")}
    return steps, evals


def test_a_rank_takes_every_nth_sample_of_the_global_batch():
    assert World(rank=1, size=2).shard([5, 6, 7, 8, 9]) == [6, 8]
    assert World(rank=0, size=2).shard([5, 6, 7, 8, 9]) == [5, 7, 9]
    assert World().shard([3, 1]) == [3, 1]


@pytest.mark.parametrize("batching", ["bucket", "pack"])
def test_two_ranks_train_the_same_curve_as_one_process(tiny_llama, chat_data, tmp_path, batching):
    sections = dict(data={"batching": batching}, train={"steps": 8, "batch_size": 5, "eval_every": 4, "save_every": None, "compile": True})
    one = train(lm_recipe(tiny_llama, chat_data, tmp_path / "one", **sections))
    two = train(lm_recipe(tiny_llama, chat_data, tmp_path / "two", **sections), ranks=2)
    assert one.ok, one.error
    assert two.ok, two.error
    (s1, e1), (s2, e2) = _curve(one.path), _curve(two.path)
    assert sorted(s2) == list(range(1, 9)) and sorted(e2) == [0, 4, 8]
    for step in s1:
        assert s2[step] == pytest.approx(s1[step], rel=1e-4), f"step {step}"
    for step in e1:
        assert e2[step] == pytest.approx(e1[step], rel=1e-4), f"eval at {step}"
    started = _events(two.path, "RunStarted")[0]
    assert started["train_samples"] == 64
    logs = [e["message"] for e in _events(two.path, "LogMessage")]
    assert any("data-parallel over 2 ranks" in m for m in logs)
    # rank 0 alone wrote the run: one RunStarted, one RunFinished, one adapter
    assert len(_events(two.path, "RunStarted")) == 1 and len(_events(two.path, "RunFinished")) == 1
    assert (two.adapter_path / "adapters.safetensors").is_file()


def test_a_killed_rank_stops_the_others_and_the_run_resumes_on_one_rank(tiny_llama, chat_data, tmp_path):
    import yaml

    steps = 120  # seconds of training on two ranks, so the kill lands mid-run on a slow or busy machine too
    sections = dict(train={"steps": steps, "batch_size": 4, "save_every": 5, "eval_every": None, "log_every": 1, "keep_checkpoints": 2})
    reference = train(lm_recipe(tiny_llama, chat_data, tmp_path / "ref", **sections))
    assert reference.ok, reference.error
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(lm_recipe(tiny_llama, chat_data, tmp_path / "runs", **sections)))
    proc = subprocess.Popen(MLXFT + ["train", str(recipe), "--ranks", "2"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    root = tmp_path / "runs"
    seen = wait_for_checkpoint(root, 5)
    out = subprocess.run(["pgrep", "-f", "-g", str(proc.pid), "multiprocessing.spawn"], capture_output=True, text=True).stdout.split()
    children = sorted(int(p) for p in out)
    if seen is None or len(children) < 2:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"two rank processes mid-run expected (checkpoint seen: {seen}, rank processes: {children}): {proc.communicate()[1][-2000:]}")
    rank0 = _events(next(root.iterdir()), "RunStarted")[0]["pid"] if _events(next(root.iterdir()), "RunStarted") else None
    victim = next(p for p in children if p != rank0)
    os.kill(victim, signal.SIGKILL)  # one rank dies, as a crash or the OOM killer would do it
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "rank 1 of 2" in err and "SIGKILL" in err and "--resume" in err
    run = RunDir(next(root.iterdir()))
    assert run.latest_checkpoint() is not None
    time.sleep(0.5)
    left = subprocess.run(["pgrep", "-f", "-g", str(proc.pid), "multiprocessing.spawn"], capture_output=True, text=True).stdout.split()
    assert not left, "no rank is left running"

    done = subprocess.run(MLXFT + ["train", "--resume", str(run.path), "--ranks", "1"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    got, expected = _curve(run.path)[0], _curve(reference.path)[0]
    assert sorted(got) == list(range(1, steps + 1))
    for step in expected:
        assert got[step] == pytest.approx(expected[step], rel=1e-4), f"step {step}"


def test_a_stop_request_stops_every_rank_at_the_same_step(tiny_llama, chat_data, tmp_path):
    import yaml

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(lm_recipe(tiny_llama, chat_data, tmp_path / "runs", train={"steps": 100000, "save_every": None, "eval_every": None})))
    proc = subprocess.Popen(MLXFT + ["train", str(recipe), "--ranks", "2"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    root = tmp_path / "runs"
    t0 = time.time()
    while time.time() - t0 < 180 and not any((d / "metrics.jsonl").is_file() and _events(d, "StepReport") for d in root.glob("*")):
        time.sleep(0.05)
    run_dir = next(root.iterdir())
    stop = subprocess.run(MLXFT + ["stop", str(run_dir)], capture_output=True, text=True, timeout=60)
    assert stop.returncode == 0, stop.stderr
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert _events(run_dir, "RunFinished")[-1]["status"] == "stopped"
    assert RunDir(run_dir).latest_checkpoint() is not None


def test_ranks_are_refused_where_they_cannot_work(tmp_path):
    base = {"model": "m", "data": {"path": str(tmp_path)}}
    with pytest.raises(RunError) as err:
        check_ranks(recipe_from_dict({**base, "kind": "lm-dpo"}), 2)
    assert "lm-dpo" in err.value.message and "drop --ranks" in err.value.hint
    with pytest.raises(RunError) as err:
        check_ranks(recipe_from_dict({**base, "kind": "lm-lora", "train": {"batch_size": 2}}), 4)
    assert "batch_size" in err.value.hint
    check_ranks(recipe_from_dict({**base, "kind": "lm-lora", "train": {"batch_size": 4}}), 4)


def test_a_one_process_run_killed_mid_way_resumes_on_two_ranks(tiny_llama, chat_data, tmp_path):
    from conftest import train_and_sigkill_at

    steps = 30
    sections = dict(train={"steps": steps, "batch_size": 4, "save_every": 5, "eval_every": None, "log_every": 1, "keep_checkpoints": 2})
    reference = train(lm_recipe(tiny_llama, chat_data, tmp_path / "ref", **sections))
    assert reference.ok, reference.error
    run_dir = train_and_sigkill_at(lm_recipe(tiny_llama, chat_data, tmp_path / "runs", **sections), tmp_path / "runs", 5, tmp_path)
    done = subprocess.run(MLXFT + ["train", "--resume", str(run_dir), "--ranks", "2"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    got, expected = _curve(run_dir)[0], _curve(reference.path)[0]
    assert sorted(got) == list(range(1, steps + 1))
    for step in expected:
        assert got[step] == pytest.approx(expected[step], rel=1e-4), f"step {step}"


def test_mlx_launch_starts_the_same_run_as_one_process(tiny_llama, chat_data, tmp_path):
    """What two Macs do (`mlx.launch --hostfile hosts.json -- mlxft train RECIPE`), on loopback: rank 0 writes the run."""
    import shutil

    import yaml

    launch = shutil.which("mlx.launch", path=str(Path(sys.executable).parent))
    if launch is None:
        pytest.skip("mlx.launch is not installed beside this Python")
    sections = dict(train={"steps": 6, "batch_size": 4, "eval_every": 3, "save_every": None})
    one = train(lm_recipe(tiny_llama, chat_data, tmp_path / "one", **sections))
    assert one.ok, one.error
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(lm_recipe(tiny_llama, chat_data, tmp_path / "launched", **sections)))
    out = subprocess.run([launch, "-n", "2", "--backend", "ring", "--", sys.executable, "-m", "mlxft", "train", str(recipe)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    runs = list((tmp_path / "launched").iterdir())
    assert len(runs) == 1, "rank 1 wrote no run of its own"
    (s1, e1), (s2, e2) = _curve(one.path), _curve(runs[0])
    assert any("data-parallel over 2 ranks" in e["message"] for e in _events(runs[0], "LogMessage"))
    assert s2 == pytest.approx(s1, rel=1e-4) and e2 == pytest.approx(e1, rel=1e-4)


def test_the_launch_environment_names_the_backend(monkeypatch, tmp_path):
    from mlxft import distributed as D

    for k in ("MLX_RANK", "MLX_HOSTFILE", "MLX_JACCL_COORDINATOR", "MLX_IBV_DEVICES"):
        monkeypatch.delenv(k, raising=False)
    assert D.launch_backend() is None and D.launched_rank() is None and D.launched_size() == 1
    hosts = tmp_path / "hosts.json"
    hosts.write_text(json.dumps([["10.0.0.1:5000"], ["10.0.0.2:5000"], ["10.0.0.3:5000"]]))
    monkeypatch.setenv("MLX_RANK", "2")
    monkeypatch.setenv("MLX_HOSTFILE", str(hosts))
    assert D.launch_backend() == "ring" and D.launched_rank() == 2 and D.launched_size() == 3
    devices = tmp_path / "devices.json"
    devices.write_text(json.dumps([[None, "rdma_en3"], ["rdma_en3", None]]))
    monkeypatch.delenv("MLX_HOSTFILE")
    monkeypatch.setenv("MLX_JACCL_COORDINATOR", "10.0.0.1:5000")
    monkeypatch.setenv("MLX_IBV_DEVICES", str(devices))
    assert D.launch_backend() == "jaccl" and D.launched_size() == 2


# -- the default: 2 ranks on MLX's CPU backend when they help and fit ------------------------------------------------


def test_without_ranks_a_cpu_trains_on_two_ranks_when_the_kind_batch_cores_and_memory_allow(tiny_llama, chat_data, tmp_path, monkeypatch):
    import mlxft.backend
    from mlxft.llm.catalogue import config_at_hand
    from mlxft.llm.memory import plan_memory

    monkeypatch.delenv(RANKS_ENV)
    monkeypatch.delenv("MLXFT_MEMORY_GB", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    recipe = lambda **s: recipe_from_dict(lm_recipe(tiny_llama, chat_data, tmp_path / "runs", **s))  # noqa: E731
    ranks, why = auto_ranks(recipe(train={"batch_size": 4}))
    assert ranks == 2 and "2 data-parallel ranks" in why
    assert auto_ranks(recipe(train={"batch_size": 1})) == (1, "one process: train.batch_size 1 does not split over 2 ranks")
    dpo = recipe_from_dict(lm_recipe(tiny_llama, chat_data, tmp_path / "runs", kind="lm-dpo", data={"format": "preference"}))
    assert auto_ranks(dpo) == (1, "one process: lm-dpo trains in one")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert auto_ranks(recipe(train={"batch_size": 4})) == (1, "one process: 1 CPU core(s)")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    # memory: room for one process but not for two copies of the model
    r = recipe(train={"batch_size": 4})
    config = config_at_hand(r.model)
    one, two = plan_memory(r, config, available=10**12).estimate.total, plan_memory(r, config, available=10**12, ranks=2).total
    monkeypatch.setenv("MLXFT_MEMORY_GB", str((one + two) / 2 / 0.8 / 1e9))
    ranks, why = auto_ranks(r)
    assert ranks == 1 and "2 ranks would need" in why
    monkeypatch.delenv("MLXFT_MEMORY_GB")
    monkeypatch.setattr(mlxft.backend, "default_device_is_gpu", lambda: True)
    assert auto_ranks(r) == (1, "one process: the GPU does the work")
    monkeypatch.setenv(RANKS_ENV, "3")
    assert auto_ranks(r)[0] == 3
    monkeypatch.setenv(RANKS_ENV, "two")
    with pytest.raises(RunError, match="MLXFT_RANKS='two'"):
        auto_ranks(r)


def test_mlxft_train_without_ranks_runs_two_ranks_on_this_cpu_and_says_so(tiny_llama, chat_data, tmp_path):
    import yaml

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(lm_recipe(tiny_llama, chat_data, tmp_path / "runs", train={"steps": 4, "batch_size": 4, "save_every": None})))
    env = {k: v for k, v in os.environ.items() if k != RANKS_ENV}
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU core: the default is one process")
    out = subprocess.run(MLXFT + ["train", str(recipe)], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "ranks: 2 data-parallel ranks on this CPU" in out.stderr
    run_dir = Path(out.stdout.strip().splitlines()[-1]).parent
    assert any("data-parallel over 2 ranks" in e["message"] for e in _events(run_dir, "LogMessage"))
    assert max(e["step"] for e in _events(run_dir, "StepReport")) == 4
