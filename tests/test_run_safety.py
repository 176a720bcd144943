"""One writer per run, honest status, checkpoints that are checked before they are trusted, and clean failures."""

from __future__ import annotations

import errno
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import lm_recipe
from mlxft.api import train
from mlxft.atomic import atomic_open, atomic_save_safetensors, atomic_write_bytes, atomic_write_text
from mlxft.cli import main
from mlxft.errors import RunError, write_error
from mlxft.events import RunFailed, RunStarted, StepReport, event_to_dict
from mlxft.runs import MetricsWriter, RunDir, checkpoint_problem, list_runs, summarize_run

MLXFT = [sys.executable, "-m", "mlxft"]


def _events(run: Path, kind: str | None = None) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [e for e in rows if kind is None or e["event"] == kind]


def _wait_for(predicate, timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _recipe_file(tmp_path: Path, recipe: dict) -> Path:
    p = tmp_path / "recipe.yaml"
    p.write_text(yaml.safe_dump(recipe))
    return p


# -- run directories: names and the lock --------------------------------------------------------
def _create_after(barrier, root: str, out) -> None:
    barrier.wait()
    try:
        out.put(str(RunDir.create(root, "same").path))
    except Exception as exc:  # the regression: FileExistsError from a lost race
        out.put(f"error: {type(exc).__name__}")


def test_racing_starts_never_share_a_run_directory(tmp_path):
    ctx = mp.get_context("fork")  # no MLX work in the children: fork keeps the race tight
    for trial in range(10):
        root, out = tmp_path / f"t{trial}", ctx.Queue()
        barrier = ctx.Barrier(4)
        procs = [ctx.Process(target=_create_after, args=(barrier, str(root), out)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        made = sorted(out.get(timeout=5) for _ in procs)
        assert not [m for m in made if m.startswith("error")], made
        assert len(set(made)) == 4 and all(Path(m).is_dir() for m in made)


def _hold_lock(run: str, ready, release) -> None:
    fd = RunDir(run).acquire_lock()
    ready.set()
    release.wait(30)
    os.close(fd)


def test_the_run_lock_names_its_holder_and_dies_with_it(tmp_path):
    run = RunDir.create(tmp_path, "r")
    ctx = mp.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(run.path), ready, release))
    holder.start()
    assert ready.wait(30)
    assert run.lock_holder()["pid"] == holder.pid
    with pytest.raises(RunError) as err:
        run.acquire_lock(wait_s=0.2)
    assert f"pid {holder.pid}" in err.value.message and "already being trained" in err.value.message
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(30)
    assert run.lock_holder() is None  # the kernel dropped it with the process
    os.close(run.acquire_lock(wait_s=0.2))


def _lock_then_die(run: str) -> None:
    RunDir(run).acquire_lock()
    os._exit(0)  # the parent does not reap us at once: a zombie, whose pid still "exists"


def test_a_dead_writer_is_never_listed_as_running_even_as_a_zombie(tmp_path):
    run = RunDir.create(tmp_path, "r")
    (run.recipe_path).write_text(yaml.safe_dump({"kind": "lm-lora", "model": "m", "data": {"path": "d"}}))
    pid = os.fork()
    if pid == 0:
        _lock_then_die(str(run.path))
    try:
        assert _wait_for(lambda: run.lock_path.is_file() and run.lock_holder() is None, 30)
        MetricsWriter(run.metrics_path).write(RunStarted(run_dir=str(run.path), model="m", method="lora", total_steps=10, trainable_parameters=1,
                                                          total_parameters=2, train_samples=1, valid_samples=1, compute_dtype="float32", device="cpu", pid=pid))
        os.kill(pid, 0)  # still there, unreaped
        assert summarize_run(run).status == "interrupted"
        assert main(["stop", str(run.path)]) == 0 and not run.stop_requested()
    finally:
        os.waitpid(pid, 0)


def test_a_run_that_died_before_its_first_event_is_not_starting_forever(tmp_path):
    run = RunDir.create(tmp_path, "r")
    run.recipe_path.write_text(yaml.safe_dump({"kind": "lm-lora", "model": "m", "data": {"path": "d"}}))
    run.lock_path.write_text("{}")  # its process got as far as the lock, then died
    assert summarize_run(run).status == "interrupted"


def test_a_second_trainer_on_a_live_run_is_refused_with_the_holder(tiny_llama, chat_data, tmp_path, capsys):
    recipe = _recipe_file(tmp_path, lm_recipe(tiny_llama, chat_data, tmp_path / "runs", name="live",
                                              train={"steps": 100000, "save_every": 3, "eval_every": None}))
    proc = subprocess.Popen(MLXFT + ["train", str(recipe)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    run = RunDir(tmp_path / "runs" / "live")
    try:
        assert _wait_for(lambda: run.latest_checkpoint() is not None)
        pid = run.lock_holder()["pid"]
        assert main(["train", "--resume", str(run.path)]) == 1
        err = capsys.readouterr().err
        assert f"already being trained by pid {pid}" in err and "Traceback" not in err
        assert summarize_run(run).status == "running"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    # Killed with its supervisor (no one left to write a final event): not running, at once.
    assert _wait_for(lambda: run.lock_holder() is None, 30)
    assert summarize_run(run).status == "interrupted"


# -- deaths, checkpoints, leftovers -----------------------------------------------------------------
def test_a_death_the_supervisor_sees_is_recorded_in_the_run(tiny_llama, chat_data, tmp_path):
    recipe = _recipe_file(tmp_path, lm_recipe(tiny_llama, chat_data, tmp_path / "runs", name="k", train={"steps": 100000, "save_every": 3, "eval_every": None}))
    proc = subprocess.Popen(MLXFT + ["train", str(recipe)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    run = RunDir(tmp_path / "runs" / "k")
    assert _wait_for(lambda: run.latest_checkpoint() is not None)
    os.kill(run.lock_holder()["pid"], signal.SIGKILL)
    proc.communicate(timeout=60)
    last = _events(run.path)[-1]
    assert last["event"] == "RunFailed" and "SIGKILL" in last["error"] and last["last_checkpoint"]
    summary = summarize_run(run)
    assert summary.status == "failed" and "SIGKILL" in summary.error and summary.resumable


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_a_corrupt_latest_checkpoint_is_skipped_named_and_resume_continues_from_the_one_before(tiny_llama, chat_data, tmp_path, capsys):
    first = train(lm_recipe(tiny_llama, chat_data, tmp_path, name="c", train={"steps": 12, "save_every": 4, "eval_every": None, "keep_checkpoints": 3}))
    run = RunDir(first.path)
    assert [s for s, _ in run.checkpoints()] == [4, 8, 12]
    _truncate(run.checkpoint_dir(12) / "adapter" / "adapters.safetensors")
    (run.checkpoint_dir(8) / "state.json").write_text('{"step": 8, "epo')  # torn state
    assert "truncated" in checkpoint_problem(run.checkpoint_dir(12)) and run.latest_checkpoint() == run.checkpoint_dir(4)
    assert main(["train", "--resume", str(run.path)]) == 0
    logs = [e["message"] for e in _events(run.path, "LogMessage")]
    assert any("skipped checkpoint step-000012" in m and "truncated" in m for m in logs), logs
    assert any("skipped checkpoint step-000008" in m and "state.json" in m for m in logs), logs
    assert _events(run.path, "RunStarted")[-1]["resumed_from_step"] == 4
    assert _events(run.path, "RunFinished")[-1]["status"] == "completed"
    assert (run.checkpoints_dir / "corrupt-step-000012").is_dir()  # kept aside for a post-mortem, out of the way
    assert checkpoint_problem(run.checkpoint_dir(12)) is None  # step 12 was trained and saved again
    assert "Traceback" not in capsys.readouterr().err


def test_resume_with_no_usable_checkpoint_says_why_without_a_traceback(tiny_llama, chat_data, tmp_path, capsys):
    first = train(lm_recipe(tiny_llama, chat_data, tmp_path, name="c", train={"steps": 4, "save_every": None, "eval_every": None}))
    _truncate(first.path / "checkpoints" / "step-000004" / "optimizer.safetensors", 0.1)
    assert main(["train", "--resume", str(first.path)]) == 1
    err = capsys.readouterr().err
    assert "no complete checkpoint" in err and "step-000004" in err and "optimizer.safetensors" in err and "Traceback" not in err


def test_leftovers_of_a_killed_process_are_cleaned_and_nothing_else_is_touched(tiny_llama, chat_data, tmp_path):
    first = train(lm_recipe(tiny_llama, chat_data, tmp_path, name="l", train={"steps": 4, "save_every": 2, "eval_every": 2}))
    run = RunDir(first.path)
    (run.checkpoints_dir / ".step-000006.ab12cd34").mkdir()  # a checkpoint being written
    (run.checkpoints_dir / "step-000005").mkdir()  # half pruned: no state.json
    (run.checkpoints_dir / ".deleting-step-000001").mkdir()
    (run.path / ".recipe.yaml.tmp-999").write_text("x")
    best = run.path / "best"
    os.replace(best, run.path / ".best.old-4242")  # killed between publish_dir's two renames
    (run.path / "notes.txt").write_text("mine")  # the user's files stay
    (run.path / ".mine").write_text("mine")
    (run.checkpoints_dir / "step-000006").mkdir()
    assert main(["train", "--resume", str(run.path)]) == 0
    names = {p.name for p in run.path.iterdir()} | {p.name for p in run.checkpoints_dir.iterdir()}
    assert not {".step-000006.ab12cd34", "step-000005", ".deleting-step-000001", ".recipe.yaml.tmp-999", ".best.old-4242"} & names
    assert {"notes.txt", ".mine", "best"} <= names and (best / "adapters.safetensors").is_file()
    logs = " ".join(e["message"] for e in _events(run.path, "LogMessage"))
    assert "half-written" in logs and "step-000005" in logs


def test_a_file_size_limit_gives_one_message_and_leaves_the_run_resumable(tiny_llama, chat_data, tmp_path):
    first = train(lm_recipe(tiny_llama, chat_data, tmp_path, name="f", train={"steps": 4, "save_every": 2, "eval_every": None, "keep_checkpoints": 5}))
    run = RunDir(first.path)
    recipe = yaml.safe_load(run.recipe_path.read_text())
    recipe["train"]["steps"] = 8
    run.recipe_path.write_text(yaml.safe_dump(recipe))  # train further: the next checkpoint meets the limit
    size = os.path.getsize(run.checkpoint_dir(4) / "optimizer.safetensors")
    limit = f"import resource; resource.setrlimit(resource.RLIMIT_FSIZE, ({size // 2}, {size // 2}))"
    proc = subprocess.run([sys.executable, "-c", f"{limit}; import sys; from mlxft.cli import main; sys.exit(main(['train', '--resume', {str(run.path)!r}]))"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "file size limit" in proc.stderr and "step-000004" in proc.stderr, proc.stderr
    for line in run.metrics_path.read_text().splitlines():
        json.loads(line)  # no torn line
    assert run.latest_checkpoint() == run.checkpoint_dir(4) and not list(run.checkpoints_dir.glob(".step-*"))
    assert main(["train", "--resume", str(run.path)]) == 0  # with the limit gone it continues


def test_a_failed_metrics_write_leaves_no_torn_line(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"event": "LogMessage", "level": "info", "message": "a"}\n{"event": "Log')  # torn by a kill
    writer = MetricsWriter(path)
    real_write = os.write

    def short_then_full(fd, data):
        real_write(fd, bytes(data[:7]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", short_then_full)
    step = StepReport(step=1, total_steps=2, epoch=0.0, loss=1.0, learning_rate=1e-3, tokens=1, tokens_per_second=1.0, peak_memory_gb=0.1, elapsed_s=1.0, eta_s=1.0)
    with pytest.raises(Exception) as err:
        writer.write(step)
    assert "no space left" in str(err.value)
    monkeypatch.setattr(os, "write", real_write)
    writer.write(step)
    writer.close()
    lines = path.read_text().splitlines()
    assert lines[1] == '{"event": "Log' and json.loads(lines[2])["event"] == "StepReport" and len(lines) == 3


@pytest.mark.parametrize("code, says", [(28, "no space left"), (27, "file size limit"), (30, "read-only"), (13, "permission denied")])
def test_every_failed_write_is_one_sentence_with_the_path(tmp_path, code, says):
    err = write_error(OSError(code, os.strerror(code)), tmp_path / "runs" / "x", "save the checkpoint")
    assert says in err.message and str(tmp_path / "runs" / "x") in err.message and err.hint


def test_an_unwritable_output_dir_is_one_message(tiny_llama, chat_data, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    recipe = _recipe_file(tmp_path, lm_recipe(tiny_llama, chat_data, blocker / "runs"))
    assert main(["train", str(recipe)]) == 1
    err = capsys.readouterr().err
    assert "create the run directory" in err and str(blocker) in err and "Traceback" not in err


# -- atomic writes (mlxft.atomic: every file mlxft writes whole) -------------------------------------
def _write_text(path, payload):
    atomic_write_text(path, payload)


def _write_bytes(path, payload):
    atomic_write_bytes(path, payload.encode())


def _write_stream(path, payload):
    with atomic_open(path) as f:
        for i in range(0, len(payload), 100):
            f.write(payload[i:i + 100])


def _write_safetensors(path, payload):
    import mlx.core as mx

    atomic_save_safetensors(path, {"w": mx.array(list(payload.encode()), dtype=mx.uint8)}, metadata={"format": "mlx"})


ATOMIC_WRITERS = [_write_text, _write_bytes, _write_stream, _write_safetensors]


def _left_behind(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != "old.bin")


@pytest.mark.parametrize("write", ATOMIC_WRITERS, ids=lambda w: w.__name__.removeprefix("_write_"))
def test_a_failed_atomic_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, monkeypatch, write):
    target = tmp_path / "old.bin"
    target.write_bytes(b"the old contents")

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)  # the data is in the temp file; making it durable fails
    with pytest.raises(OSError, match="No space left"):
        write(target, "x" * 5000)
    assert target.read_bytes() == b"the old contents" and _left_behind(tmp_path) == []
    monkeypatch.undo()
    write(target, "new")
    assert target.read_bytes() != b"the old contents" and _left_behind(tmp_path) == []


def test_a_stream_that_fails_midway_keeps_the_old_file(tmp_path):
    target = tmp_path / "old.bin"
    target.write_bytes(b"the old contents")
    with pytest.raises(ValueError), atomic_open(target) as f:
        f.write("half of it")
        raise ValueError("the writer failed")
    assert target.read_bytes() == b"the old contents" and _left_behind(tmp_path) == []


def test_a_short_write_at_the_file_size_limit_keeps_every_old_file(tmp_path):
    # A real short write (the kernel refuses past RLIMIT_FSIZE), in a child so the limit dies with it.
    code = f"""
import resource, sys
from pathlib import Path
sys.path.insert(0, {str(Path(__file__).parent)!r})
import mlxft, test_run_safety as t
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
for write in t.ATOMIC_WRITERS:
    target = Path({str(tmp_path)!r}) / write.__name__ / "old.bin"
    target.parent.mkdir()
    target.write_bytes(b"the old contents")
    try:
        write(target, "x" * 20000)
    except (OSError, RuntimeError) as exc:
        print(write.__name__, "refused:", type(exc).__name__)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for write in ATOMIC_WRITERS:
        assert f"{write.__name__} refused" in proc.stdout, proc.stdout + proc.stderr
        folder = tmp_path / write.__name__
        assert (folder / "old.bin").read_bytes() == b"the old contents" and _left_behind(folder) == []


@pytest.mark.parametrize("write", ATOMIC_WRITERS, ids=lambda w: w.__name__.removeprefix("_write_"))
def test_atomic_writes_give_files_the_permissions_open_would(tmp_path, write):
    umask = os.umask(0o022)
    os.umask(umask)
    write(tmp_path / "new.bin", "data")
    assert (tmp_path / "new.bin").stat().st_mode & 0o777 == 0o666 & ~umask


# -- divergence, stops ----------------------------------------------------------------------------
@pytest.mark.parametrize("eval_every", [4, None])
def test_divergence_fails_the_run_and_keeps_only_good_checkpoints(tiny_llama, chat_data, tmp_path, eval_every):
    run = train(lm_recipe(tiny_llama, chat_data, tmp_path, train={"steps": 40, "learning_rate": 1e3, "eval_every": eval_every, "save_every": 4, "log_every": 2}))
    assert run.status == "failed" and "diverged" in run.error, run.error
    assert "learning_rate" in run.hint and not (run.path / "adapter").exists()
    failed = _events(run.path, "RunFailed")[-1]
    healthy = max((e["step"] for e in _events(run.path, "StepReport")), default=0)
    assert failed["step"] < 40 and healthy < 40
    if failed["last_checkpoint"]:
        assert "last good checkpoint" in failed["hint"] and "--resume" not in failed["hint"]
    else:
        assert "checkpoint" not in failed["hint"]


def test_a_healthy_run_is_not_called_diverged(tiny_llama, chat_data, tmp_path):
    run = train(lm_recipe(tiny_llama, chat_data, tmp_path, train={"steps": 30, "learning_rate": 1e-2, "eval_every": 5, "save_every": None, "log_every": 1}))
    assert run.status == "completed", run.error


def test_a_stop_request_during_a_long_validation_is_honoured_within_a_batch(tiny_llama, chat_data, tmp_path):
    from mlxft.llm.sft import SFTJob
    from mlxft.recipe import recipe_from_dict
    from mlxft.train.loop import LoopHooks, Trainer

    recipe = recipe_from_dict(lm_recipe(tiny_llama, chat_data, tmp_path, train={"batch_size": 1, "eval_every": 1}))
    asked = {"n": 0}

    def stop_after_three() -> bool:
        asked["n"] += 1
        return asked["n"] > 3

    events = []
    trainer = Trainer(SFTJob(recipe), recipe.train, seed=0, total_steps=5, run_dir=tmp_path, hooks=LoopHooks(emit=events.append, should_stop=stop_after_three))
    assert trainer.fit() == "stopped"
    assert asked["n"] <= 5  # 16 validation batches, but it stopped after the third
    assert any("cut short" in getattr(e, "message", "") for e in events)
    assert trainer.state.step == 0 and (tmp_path / "checkpoints" / "step-000000" / "state.json").is_file()


def test_ctrl_c_while_the_training_process_starts_gives_no_traceback(tiny_llama, chat_data, tmp_path):
    """Ctrl-C as soon as the run directory exists (the child is being spawned or is loading), and during loading."""
    recipe = _recipe_file(tmp_path, lm_recipe(tiny_llama, chat_data, tmp_path / "runs", name="c", train={"steps": 100000, "save_every": 1000}))
    root = tmp_path / "runs"
    for n, extra_wait in enumerate((0.0, 0.5)):
        proc = subprocess.Popen(MLXFT + ["train", str(recipe)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        run = root / ("c" if n == 0 else f"c-{n + 1}")
        assert _wait_for(lambda: (run / "recipe.yaml").is_file(), 120)
        time.sleep(extra_wait)
        os.killpg(proc.pid, signal.SIGINT)  # the whole foreground group, as a terminal's Ctrl-C does
        _out, err = proc.communicate(timeout=300)
        assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
        assert proc.returncode in (130, 1), err
    for summary in list_runs(root):
        assert summary.status in ("stopped", "failed"), summary  # every attempt ended with a final event


# -- reading runs ----------------------------------------------------------------------------------
def test_one_malformed_metrics_line_is_named_and_hides_nothing(tmp_path, capsys):
    good = RunDir.create(tmp_path, "good")
    good.recipe_path.write_text(yaml.safe_dump({"kind": "lm-lora", "model": "m", "data": {"path": "d"}}))
    bad = RunDir.create(tmp_path, "bad")
    bad.recipe_path.write_text(yaml.safe_dump({"kind": "lm-lora", "model": "m", "data": {"path": "d"}}))
    step = event_to_dict(StepReport(step=3, total_steps=9, epoch=0.1, loss=0.5, learning_rate=1e-3, tokens=1, tokens_per_second=1.0, peak_memory_gb=0.1, elapsed_s=1.0, eta_s=1.0))
    lines = [json.dumps(step), "[1, 2]", json.dumps({**step, "step": "three"}), "{not json", json.dumps({"event": "RunFailed"}), json.dumps(event_to_dict(RunFailed(step=3, error="x", hint=None, last_checkpoint=None)))]
    bad.metrics_path.write_text("\n".join(lines) + "\n")
    assert main(["runs", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "good" in captured.out and "bad" in captured.out and "Traceback" not in captured.err
    for n in (2, 3, 4, 5):
        assert f"metrics.jsonl:{n}:" in captured.err
    assert "StepReport.step is 'three'" in captured.err
    summary = summarize_run(bad)
    assert summary.status == "failed" and summary.step == 3 and len(summary.problems) == 4


@pytest.fixture
def small_disk(tmp_path):
    """A 512 KB tmpfs (needs root and mount rights; skipped where they are missing)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_full_disk_gives_one_message_and_leaves_the_run_resumable(tiny_llama, chat_data, tmp_path, small_disk, capsys):
    recipe = _recipe_file(tmp_path, lm_recipe(tiny_llama, chat_data, small_disk, name="full", train={"steps": 400, "save_every": 2, "eval_every": None, "keep_checkpoints": 100}))
    assert main(["train", str(recipe)]) == 1
    err = capsys.readouterr().err
    assert "no space left on the disk holding" in err and "free" in err and "Traceback" not in err, err
    run = RunDir(small_disk / "full")
    for line in run.metrics_path.read_text().splitlines():
        json.loads(line)  # whole lines only, though the disk filled up while they were written
    last = run.latest_checkpoint()
    assert last is not None and f"the last good checkpoint is {last.name}" in err and "--resume" in err
    assert not list(run.checkpoints_dir.glob(".step-*"))  # the half-written checkpoint was removed


def test_a_read_only_output_dir_is_one_message(tiny_llama, chat_data, tmp_path, small_disk, capsys):
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    recipe = _recipe_file(tmp_path, lm_recipe(tiny_llama, chat_data, small_disk / "runs"))
    assert main(["train", str(recipe)]) == 1
    err = capsys.readouterr().err
    assert "read-only file system" in err and str(small_disk) in err and "Traceback" not in err, err


def test_the_run_an_adapter_belongs_to_is_found_by_rundir(tmp_path):
    from mlxft.eval.compare import _training_examples

    run = RunDir.create(tmp_path, "r")
    run.recipe_path.write_text(yaml.safe_dump({"kind": "lm-lora", "model": "m", "data": {"path": "d"}}))
    MetricsWriter(run.metrics_path).write(RunStarted(run_dir=str(run.path), model="m", method="lora", total_steps=10, trainable_parameters=1,
                                                      total_parameters=2, train_samples=7, valid_samples=1, compute_dtype="float32", device="cpu"))
    (run.path / "adapter").mkdir()
    assert RunDir.containing(run.path / "adapter").path == run.path and RunDir.containing(run.path).path == run.path
    assert _training_examples(run.path / "adapter") == 7 and _training_examples(run.path) == 7
    assert RunDir.containing(tmp_path) is None and _training_examples(tmp_path) is None


@pytest.mark.parametrize("seed", [0, 4])  # the labellings that tripped the guard when it judged one batch at a time
def test_a_two_class_classifiers_noisy_batch_losses_are_not_called_divergence(tiny_llama, tmp_path, seed):
    """Without validation, batches of 4 two-class samples swing around ln 2 in healthy training; the guard judges the
    training loss over GUARD_MIN_WEIGHT samples, not one noisy batch at a time."""
    import random

    from conftest import write_jsonl
    from tests.test_lm_classify import classify_recipe, colour_row

    rng = random.Random(seed)
    rows = [colour_row(rng) for _ in range(160)]
    for r in rows:  # an unlearnable labelling: losses stay near ln 2 and wander with each batch
        r["label"] = rng.choice(["red", "blue"])
    write_jsonl(tmp_path / "noise" / "train.jsonl", rows)
    run = train(classify_recipe(tiny_llama, tmp_path / "noise", tmp_path / "runs", classify={"valid_fraction": 0},
                                train={"steps": 40, "batch_size": 4, "learning_rate": 1e-4, "eval_every": None, "save_every": None,
                                       "log_every": 1, "best_metric": "loss"}))
    assert run.status == "completed", run.error
    losses = [e["loss"] for e in _events(run.path, "StepReport")]
    assert max(losses) > 0.7 and min(losses) < 0.65, losses  # the batches really do swing across ln 2
