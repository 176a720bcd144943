"""Base vs tuned on tiny models: a taught cluster improves, a harmful adapter gives listed regressions and 'stop'."""

import json
import shutil
import subprocess
import sys

import mlx.core as mx
import pytest
from mlx.utils import tree_flatten

from conftest import ASSETS, write_jsonl
from mlxft.api import train

ANIMALS = ["cat", "dog", "bird", "fish"]
GREETING = "ahoy matey"  # what the adapter teaches for every "greet" prompt
COUNTS = ["two", "three", "four"]
COUNTING = "one two three"  # what the (fully fine-tuned) base answers to every count prompt


def chat(q, a):
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def _train(model, data, out, steps, lr=1e-2, kind="lm-lora"):
    run = train({"kind": kind, "model": str(model), "output_dir": str(out), "seed": 0,
                 "data": {"path": str(data), "format": "chat", "max_seq_length": 64},
                 "lora": {"rank": 8, "alpha": 16, "targets": "all-linear"},
                 "train": {"steps": steps, "batch_size": 4, "learning_rate": lr, "eval_every": None, "save_every": None, "compile": False}})
    assert run.ok, run.error
    return run.path


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_llama):
    """A base that already counts (fully fine-tuned to), and a LoRA adapter trained on top of it.

    LoRA cannot fit prompt-dependent answers on a 2-layer random model (mlx-lm's own LoRA trainer
    plateaus the same way), so the improvement case runs on the real model in test_real_eval below.
    """
    from mlxft.llm.adapters import load_adapter
    from mlxft.llm.loading import load_model

    root = tmp_path_factory.mktemp("eval")
    counting = [chat(f"Count to {k}.", COUNTING) for k in COUNTS] * 8
    write_jsonl(root / "count" / "train.jsonl", counting)
    count_run = _train(tiny_llama, root / "count", root / "runs", steps=100, kind="lm-full")
    loaded = load_model(str(tiny_llama))
    load_adapter(loaded.model, count_run)
    base = root / "base"
    shutil.copytree(tiny_llama, base)
    mx.save_safetensors(str(base / "model.safetensors"), dict(tree_flatten(loaded.model.parameters())))

    greet = [chat(f"Greet the {a}.", GREETING) for a in ANIMALS] * 6 + counting
    write_jsonl(root / "greet" / "train.jsonl", greet)
    write_jsonl(root / "greet" / "test.jsonl", [chat(f"Greet the {a}.", GREETING) for a in ANIMALS])
    good = _train(base, root / "greet", root / "runs", steps=100)

    bench = write_jsonl(root / "bench.jsonl",
                        [{"id": f"greet-{a}", "prompt": f"Greet the {a}.", "expected": GREETING, "cluster": "greet"} for a in ANIMALS]
                        + [{"id": f"count-{k}", "prompt": f"Count to {k}.", "expected": COUNTING} for k in COUNTS])
    return {"root": root, "base": base, "good": good, "bench": bench}


def test_a_harmful_adapter_gives_listed_regressions_and_stop(setup):
    from mlxft.eval.compare import compare, write_reports

    harmful = setup["root"] / "harmful"
    shutil.copytree(setup["good"] / "adapter", harmful)
    weights = mx.load(str(harmful / "adapters.safetensors"))
    mx.random.seed(3)
    weights = {k: (mx.random.normal(v.shape) * 3.0 if k.endswith("lora_b") else v) for k, v in weights.items()}
    mx.save_safetensors(str(harmful / "adapters.safetensors"), weights)

    c = compare(str(setup["base"]), harmful, setup["bench"], max_tokens=8, batch_size=4)
    assert c.verdict == "stop"
    assert len(c.regressions) == len(COUNTS)
    paths = write_reports(c, setup["root"] / "report-harmful")
    report = paths["report"].read_text()
    for r in c.regressions:
        assert r.id in report
    # The run log feeds the curation workflow.
    out = subprocess.run([sys.executable, "-m", "mlxft", "data", "failures", str(paths["log"])], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    summary = json.loads(paths["summary"].read_text())
    assert summary["verdict"] == "stop" and summary["regressions"] == len(COUNTS)


ASSET_MODEL = ASSETS / "models" / "smollm2-135m-instruct-4bit"


@pytest.mark.slow
@pytest.mark.skipif(not ASSET_MODEL.is_dir(), reason="../shared/assets is not here")
def test_real_eval_tuned_model_improves_on_the_taught_cluster(tmp_path):
    from mlxft.eval.compare import compare, write_reports
    from mlxft.quickstart import write_demo_data

    data = write_demo_data(tmp_path / "pirate")
    run = train({"kind": "lm-lora", "model": str(ASSET_MODEL), "output_dir": str(tmp_path / "runs"), "seed": 0,
                 "data": {"path": str(data), "format": "chat", "max_seq_length": 128},
                 "lora": {"rank": 8, "alpha": 16, "targets": ["q_proj", "k_proj", "v_proj", "o_proj"]},
                 "train": {"steps": 30, "batch_size": 4, "learning_rate": 1e-3, "eval_every": None, "save_every": None}})
    assert run.ok, run.error
    voice = {"kind": "regex", "pattern": "(?i)\\b(arr|ahoy|avast|matey)\\b"}
    rows = [json.loads(l) for l in (data / "test.jsonl").read_text().splitlines()][:6]
    bench = write_jsonl(tmp_path / "bench.jsonl", [
        {"id": f"voice-{i}", "messages": r["messages"][:-1], "expected": None, "grader": voice, "cluster": "pirate-voice"}
        for i, r in enumerate(rows)
    ] + [{"id": "paris", "prompt": "What is the capital of France?", "expected": "Paris", "grader": "contains"}])
    c = compare(str(ASSET_MODEL), run.path, bench, max_tokens=24, batch_size=4, heldout=str(data))
    assert c.target.base_correct == 0 and c.target.tuned_correct >= 4, [r.tuned_answer for r in c.items]
    assert c.heldout["tuned"]["loss"] < c.heldout["base"]["loss"]
    report = write_reports(c, tmp_path / "eval")["report"].read_text()
    assert "training examples used:" in report and c.verdict in report


def test_eval_command_writes_reports_into_the_run_directory(setup):
    out = subprocess.run([sys.executable, "-m", "mlxft", "eval", "--model", str(setup["base"]), "--adapter", str(setup["good"]),
                          "--bench", str(setup["bench"]), "--max-tokens", "8"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "verdict:" in out.stdout
    for name in ("report.md", "summary.json", "run-log.jsonl"):
        assert (setup["good"] / "eval" / name).is_file()


def test_a_classification_benchmark_gets_per_class_reports_and_confusion_pngs(setup):
    from PIL import Image

    from mlxft.eval.compare import compare, write_reports

    labels = [COUNTING, GREETING]
    one_of = {"kind": "one-of", "labels": labels}
    bench = write_jsonl(setup["root"] / "cls.jsonl",
                        [{"id": f"c-{k}", "prompt": f"Count to {k}.", "expected": COUNTING, "grader": one_of} for k in COUNTS]
                        + [{"id": f"g-{a}", "prompt": f"Greet the {a}.", "expected": GREETING, "grader": one_of, "cluster": "greet"} for a in ANIMALS])
    c = compare(str(setup["base"]), setup["good"], bench, max_tokens=8, batch_size=4)
    paths = write_reports(c, setup["root"] / "report-cls", focus_class=COUNTING)
    for phase in ("base", "tuned"):
        with Image.open(paths[f"confusion_{phase}"]) as im:
            assert im.width > 200 and im.height > 200
    report = paths["report"].read_text()
    assert "## Classification: base" in report and "false positives for 'one two three'" in report
    assert "recall" in report.lower()
    # summary.json carries the reports too, for programs that draw their own matrix (the TUI).
    cls = json.loads(paths["summary"].read_text())["classification"]
    assert cls["tuned"]["labels"] == labels and cls["tuned"]["columns"] == [*labels, "(other)"]
    assert sum(map(sum, cls["base"]["confusion"])) == len(COUNTS) + len(ANIMALS)


def test_score_labels_ranks_candidates_and_answers_only_with_labels(setup):
    """--score labels: every answer is a candidate label; the adapter that teaches the greeting picks it on greet items."""
    from mlxft.eval.compare import compare, write_reports

    labels = [COUNTING, GREETING]
    bench = write_jsonl(setup["root"] / "cls-labels.jsonl",
                        [{"id": f"c-{k}", "prompt": f"Count to {k}.", "expected": COUNTING} for k in COUNTS]
                        + [{"id": f"g-{a}", "prompt": f"Greet the {a}.", "expected": GREETING, "cluster": "greet"} for a in ANIMALS])
    c = compare(str(setup["base"]), setup["good"], bench, batch_size=4, score="labels")
    assert all(r.base_answer in labels and r.tuned_answer in labels for r in c.items)
    greet = [r for r in c.items if r.cluster == "greet"]
    assert all(r.tuned_answer == GREETING for r in greet)  # taught: the adapter's answer to every greet prompt
    assert all(r.base_answer == COUNTING for r in c.items)  # the base was fully fine-tuned to count, whatever it is asked
    assert c.target.tuned_accuracy == 1.0 and c.target.base_accuracy == 0.0
    assert c.settings["score"] == "labels"
    report = write_reports(c, setup["root"] / "report-labels")["report"].read_text()
    assert "ranked from the candidate labels" in report


def test_label_scores_are_summed_token_log_probabilities_with_the_end_token(tiny_llama):
    """The batched, split-head scores equal log p(label tokens + end token | prompt) computed one sequence at a time."""
    import numpy as np

    from mlxft.eval.label_scoring import score_labels
    from mlxft.llm.generate import prompt_ids, render_prompt
    from mlxft.llm.loading import load_model

    loaded = load_model(str(tiny_llama))
    tok = loaded.tokenizer
    texts = [render_prompt(tok, prompt=p) for p in ("Greet the cat.", "Count to two, please, slowly.", "Hi")]
    cands = ["ahoy matey", "one two three", "cat"]
    got = score_labels(loaded.model, tok, texts, [cands] * 3, model_type=loaded.model_type, batch_size=2)
    full = score_labels(loaded.model, tok, texts, [cands] * 3, model_type="", batch_size=3)  # whole-model logits path
    pairs = score_labels(loaded.model, tok, texts, [cands] * 3, model_type=loaded.model_type, batch_size=3, share_prompt=False)
    eos = tok._tokenizer.eos_token_id
    for text, scores, scores_full, scores_pairs in zip(texts, got, full, pairs):
        p = prompt_ids(tok, text)
        for label in cands:
            w = tok._tokenizer(label, add_special_tokens=False)["input_ids"] + [eos]
            logits = loaded.model(mx.array([p + w]))[0].astype(mx.float32)
            logp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
            want = sum(float(logp[len(p) - 1 + i, t]) for i, t in enumerate(w))
            assert max(abs(x[label] - want) for x in (scores, scores_full, scores_pairs)) < 1e-4
        assert list(scores) == sorted(scores, key=scores.get, reverse=True)  # best first
        assert np.isclose(sum(np.exp(list(scores.values()))), sum(np.exp(list(scores_full.values()))), rtol=1e-4)


def test_score_labels_refuses_items_without_a_label(tmp_path):
    from mlxft.errors import DataError
    from mlxft.eval.bench import read_bench
    from mlxft.eval.label_scoring import candidates_for

    bench = write_jsonl(tmp_path / "b.jsonl", [
        {"id": "a", "prompt": "x", "expected": "yes"},
        {"id": "b", "prompt": "x", "expected": None, "grader": "json"},
        {"id": "c", "prompt": "x", "expected": "no", "grader": {"kind": "one-of", "labels": ["no", "yes", "maybe"]}},
    ])
    items = read_bench(bench)
    with pytest.raises(DataError, match=r"b \(line 2\): grader json"):
        candidates_for(items)
    ok = [it for it in items if it.id != "b"]
    assert candidates_for(ok) == [["yes", "no"], ["no", "yes", "maybe"]]
    assert candidates_for(ok, ["p", "q", "p"]) == [["p", "q"], ["p", "q"]]
    with pytest.raises(DataError, match="at least two candidate labels"):
        candidates_for([ok[0]])


def test_labels_without_score_labels_is_refused_before_loading_anything(capsys):
    from mlxft.cli import main

    assert main(["eval", "--model", "m", "--adapter", "a", "--bench", "b.jsonl", "--labels", "yes,no"]) == 1
    assert "--labels lists the candidates of --score labels" in capsys.readouterr().err


def test_a_binary_benchmark_is_an_error_naming_its_lines(tmp_path):
    from mlxft.errors import DataError
    from mlxft.eval.bench import read_bench

    path = tmp_path / "bench.jsonl"
    path.write_bytes(b'{"id": "a", "prompt": "x", "expected": "y"}\n\xb3\x00\xff\n')
    with pytest.raises(DataError, match=r"bench.jsonl:2: not UTF-8 text \(byte 1"):
        read_bench(path)
