"""`mlxft runs` and `mlxft stop`: what the TUI's run list and Stop button do, headless."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from mlxft.cli import main
from mlxft.events import RunFinished, RunStarted, StepReport, event_to_dict
from mlxft.runs import RunDir, summarize_run
from tests.conftest import lm_recipe

REPO = Path(__file__).resolve().parents[1]


def fake_run(root: Path, name: str, events: list) -> Path:
    run = root / name
    run.mkdir(parents=True)
    (run / "recipe.yaml").write_text(yaml.safe_dump({"kind": "lm-lora", "model": "m", "data": {"path": "d"}}))
    (run / "metrics.jsonl").write_text("".join(json.dumps(event_to_dict(e)) + "\n" for e in events))
    return run


def started(pid: int) -> RunStarted:
    return RunStarted(run_dir="x", model="tiny", method="lora", total_steps=10, trainable_parameters=1, total_parameters=2,
                      train_samples=1, valid_samples=1, compute_dtype="float32", device="cpu", pid=pid)


def test_runs_lists_status_step_and_losses(tmp_path, capsys):
    step = StepReport(step=10, total_steps=10, epoch=1.0, loss=0.5, learning_rate=1e-4, tokens=1, tokens_per_second=1.0, peak_memory_gb=1.0, elapsed_s=1.0, eta_s=0.0)
    fake_run(tmp_path, "a", [started(os.getpid()), step, RunFinished(step=10, status="completed", adapter_path="x", best_val_loss=0.75, final_train_loss=0.5, seconds=1.0)])
    fake_run(tmp_path, "b", [started(2**22 + 777)])  # its process is gone: interrupted
    assert main(["runs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    line_a = next(l for l in out.splitlines() if l.startswith("a "))
    assert "completed" in line_a and "10/10" in line_a and "0.500" in line_a and "0.750" in line_a
    assert "interrupted" in next(l for l in out.splitlines() if l.startswith("b "))
    assert main(["runs", str(tmp_path), "--json"]) == 0
    data = {r["path"].rsplit("/", 1)[-1]: r for r in json.loads(capsys.readouterr().out)}
    assert data["a"]["best_val_loss"] == 0.75 and data["b"]["status"] == "interrupted"


def test_stop_writes_a_request_only_for_a_running_run(tmp_path, capsys):
    live = fake_run(tmp_path, "live", [started(os.getpid())])
    done = fake_run(tmp_path, "done", [started(os.getpid()), RunFinished(step=1, status="completed", adapter_path="x", best_val_loss=None, final_train_loss=None, seconds=1.0)])
    assert main(["stop", str(live)]) == 0
    assert RunDir(live).stop_requested()
    assert main(["stop", str(done)]) == 0
    assert "not running" in capsys.readouterr().out and not RunDir(done).stop_requested()
    assert main(["stop", str(tmp_path)]) == 1  # not a run directory: an error naming it


def test_mlxft_stop_ends_a_run_started_in_another_terminal(tmp_path, tiny_llama, chat_data):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(lm_recipe(tiny_llama, chat_data, tmp_path / "runs", name="other", train={"steps": 2000, "eval_every": 1000, "save_every": 1000})))
    proc = subprocess.Popen([sys.executable, "-m", "mlxft", "train", str(recipe)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    run = tmp_path / "runs" / "other"
    try:
        deadline = time.monotonic() + 180
        while summarize_run(RunDir(run)).step < 2 if run.exists() else True:
            assert proc.poll() is None and time.monotonic() < deadline, "the run did not reach step 2"
            time.sleep(0.2)
        assert subprocess.run([sys.executable, "-m", "mlxft", "stop", str(run)], cwd=REPO).returncode == 0
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out.decode()
    summary = summarize_run(RunDir(run))
    assert summary.status == "stopped" and 2 <= summary.step < 2000
    assert RunDir(run).latest_checkpoint() is not None  # resumable
    assert not RunDir(run).stop_requested()  # the request was honoured and cleared


def test_plain_mlxft_prints_help_when_not_at_a_terminal():
    out = subprocess.run([sys.executable, "-m", "mlxft"], cwd=REPO, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert out.returncode == 0 and "usage: mlxft" in out.stdout and "tui" in out.stdout


def test_plain_mlxft_opens_the_tui_at_a_terminal(tmp_path):
    """On a terminal, `mlxft` alone opens the app (on Models); ctrl+q quits it cleanly."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "mlxft"], cwd=tmp_path, stdin=slave, stdout=slave, stderr=slave,
                            env={**os.environ, "TERM": "xterm-256color"}, start_new_session=True)
    os.close(slave)
    seen = b""

    def drain(until, seconds: float) -> bool:
        """Read the app's output (a full pty would block it) until `until()` holds."""
        nonlocal seen
        deadline = time.monotonic() + seconds
        while not until() and time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                try:
                    seen += os.read(master, 65536)
                except OSError:  # the app closed the terminal: nothing more to read, just wait
                    time.sleep(0.2)
        return until()

    try:
        assert drain(lambda: b"Models" in seen and b"models" in seen, 90), seen[-500:]  # nav bar and the table's count
        os.write(master, b"\x11")  # ctrl+q
        assert drain(lambda: proc.poll() is not None, 60), "the app did not quit on ctrl+q"
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
