"""lm-classify on tiny real llamas: last-token pooling, the score head and its saved labels, verbalizer scores against full
logits, class weights, learning a separable labelling, exact resume after SIGKILL, predict / eval, and bad label data."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from PIL import Image

import mlxft
from conftest import assert_resumes_like, train_and_sigkill_at, write_jsonl
from mlxft.api import train
from mlxft.errors import DataError, MlxftError, RecipeError
from mlxft.llm.classify import CLASSIFIER_CONFIG, LMClassifyJob, PromptEncoder, batch_arrays, last_token_index, pool_last, weighted_cross_entropy
from mlxft.recipe import recipe_from_dict

MLXFT = [sys.executable, "-m", "mlxft"]
FILLER = ["cat", "dog", "bird", "fish", "the", "a", "quick", "lazy"]


def colour_row(rng: random.Random, label_as=str) -> dict:
    """A text of filler words and one colour; the colour is the label (a separable labelling)."""
    colour = rng.choice(["red", "blue"])
    words = rng.sample(FILLER, 3) + [colour]
    rng.shuffle(words)
    return {"text": " ".join(words), "label": label_as(colour) if label_as is str else {"red": 0, "blue": 1}[colour]}


@pytest.fixture(scope="module")
def colours(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("colours")
    rng = random.Random(0)
    for split, n in (("train", 96), ("valid", 32), ("test", 24)):
        write_jsonl(folder / f"{split}.jsonl", [colour_row(rng) for _ in range(n)])
    return folder


def classify_recipe(model: Path, data: Path, out: Path, **sections) -> dict:
    recipe = {
        "kind": "lm-classify", "model": str(model), "output_dir": str(out), "seed": 0,
        "data": {"path": str(data), "max_seq_length": 64},
        "classify": {"head": "score", "prompt_template": "Text: {text}\nColour:"},
        "lora": {"rank": 4, "alpha": 8, "targets": "all-linear"},
        "train": {"steps": 30, "batch_size": 8, "learning_rate": 1e-2, "eval_every": 15, "save_every": 15, "log_every": 1,
                  "compile": False, "best_metric": "accuracy"},
    }
    for key, value in sections.items():
        recipe[key] = {**recipe.get(key, {}), **value} if isinstance(value, dict) else value
    return recipe


def events(run_dir: Path, kind: str) -> list[dict]:
    return [e for e in map(json.loads, (Path(run_dir) / "metrics.jsonl").read_text().splitlines()) if e["event"] == kind]


def job_for(tiny_llama, data, tmp_path, **sections) -> LMClassifyJob:
    return LMClassifyJob(recipe_from_dict(classify_recipe(tiny_llama, data, tmp_path, **sections)))


# -- pooling and the score head ---------------------------------------------------------------------


def test_the_last_real_token_is_found_with_left_and_right_padding():
    right = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    left = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    assert last_token_index(right).tolist() == [2, 4, 0]
    assert last_token_index(left).tolist() == [4, 4, 4]
    assert last_token_index(np.zeros((1, 3))).tolist() == [-1]
    h = mx.arange(3 * 5 * 2).reshape(3, 5, 2).astype(mx.float32)
    pooled = pool_last(h, mx.array(last_token_index(right)))
    assert np.array_equal(np.array(pooled), np.array(h)[np.arange(3), [2, 4, 0]])


def test_a_right_padded_batch_gives_each_text_the_logits_it_gets_alone(tiny_llama, colours, tmp_path):
    job = job_for(tiny_llama, colours, tmp_path)
    job.model.eval()
    samples = sorted(job.valid, key=len)[::7][:4]
    assert len({len(s) for s in samples}) > 1  # the batch really pads
    batch = batch_arrays([s.ids for s in samples], [s.label for s in samples], job.pad_id, None)
    together = np.array(job.logits(job.model, *batch))
    alone = np.concatenate([np.array(job.logits(job.model, mx.array(s.ids[None]), mx.array([len(s) - 1]), mx.array([s.label]))) for s in samples])
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-5)
    # The score head on the final hidden state (after the final norm) of the last real token: what transformers' pooling gives.
    h = job.model.model(mx.array(samples[0].ids[None]))[0, -1]
    np.testing.assert_allclose(alone[0], np.array(job.model.score(h)), rtol=1e-4, atol=1e-5)


def test_the_score_head_has_a_row_per_label_and_integer_labels_round_trip(tiny_llama, tmp_path):
    rng = random.Random(1)
    data = tmp_path / "ints"
    for split, n in (("train", 48), ("valid", 16)):
        write_jsonl(data / f"{split}.jsonl", [colour_row(rng, label_as=int) for _ in range(n)])
    run = train(classify_recipe(tiny_llama, data, tmp_path / "runs", train={"steps": 4, "eval_every": 4, "save_every": None}))
    assert run.ok, run.error
    cfg = json.loads((run.adapter_path / CLASSIFIER_CONFIG).read_text())
    assert cfg["id2label"] == {"0": "0", "1": "1"} and cfg["label2id"] == {"0": 0, "1": 1} and cfg["label_type"] == "int"
    assert cfg["head"] == "score" and cfg["export"]["modules_to_save"] == ["score"] and cfg["export"]["peft_task_type"] == "SEQ_CLS"
    score = mx.load(str(run.adapter_path / "score.safetensors"))
    assert list(score) == ["score.weight"] and score["score.weight"].shape == (2, cfg["hidden_size"])
    adapter = mx.load(str(run.adapter_path / "adapters.safetensors"))
    assert adapter and not any(k.startswith("score") for k in adapter)  # mlx-lm's adapter file holds the body only
    clf = mlxft.classifier(run.path)
    assert clf.labels == ["0", "1"]
    assert {cfg["label2id"][r["label"]] for r in clf(["red cat dog", "blue fish a"])} <= {0, 1}


def test_a_score_head_started_from_the_label_words_chooses_as_the_zero_shot_verbalizer_does(tiny_llama, colours, tmp_path):
    words = {"red": " dog", "blue": " fish"}  # one token each
    score = job_for(tiny_llama, colours, tmp_path, classify={"head": "score", "verbalizer": words})
    verbalizer = job_for(tiny_llama, colours, tmp_path, classify={"head": "verbalizer", "verbalizer": words})
    samples = verbalizer.valid[:5]
    batch = batch_arrays([s.ids for s in samples], [s.label for s in samples], 0, None)
    for job in (score, verbalizer):
        job.model.eval()
    np.testing.assert_allclose(np.array(score.logits(score.model, *batch)), np.array(verbalizer.logits(verbalizer.model, *batch)), rtol=1e-4, atol=1e-4)
    drawn = job_for(tiny_llama, colours, tmp_path, classify={"score_init": "random"})
    assert float(np.array(drawn.model.score.weight).std()) == pytest.approx(0.02, rel=0.2)


# -- the verbalizer -----------------------------------------------------------------------------------


@pytest.mark.parametrize("words", [{"red": " dog", "blue": " fish"}, {"red": " red cat", "blue": " the lazy dog"}], ids=["one-token", "multi-token"])
def test_verbalizer_scores_equal_summed_token_log_probs_from_full_logits(tiny_llama, colours, tmp_path, words):
    job = job_for(tiny_llama, colours, tmp_path, classify={"head": "verbalizer", "verbalizer": words})
    assert (max(len(w) for w in job.word_ids) > 1) == (words["red"] == " red cat")
    job.model.eval()
    samples = job.valid[:3]
    batch = batch_arrays([s.ids for s in samples], [s.label for s in samples], job.pad_id, job.word_ids)
    got = np.array(job.logits(job.model, *batch, normalized=True))
    for b, s in enumerate(samples):
        for c, w in enumerate(job.word_ids):
            seq = np.concatenate([s.ids, w])
            logp = np.array(nn.log_softmax(job.model(mx.array(seq[None]))[0].astype(mx.float32), axis=-1))
            expected = sum(logp[len(s) - 1 + j, t] for j, t in enumerate(w))
            assert got[b, c] == pytest.approx(expected, rel=1e-4, abs=1e-4)
    # Training uses the label columns only when every word is one token: the same cross-entropy over labels.
    labels = mx.array([s.label for s in samples])
    cheap = weighted_cross_entropy(job.logits(job.model, *batch), labels)
    assert cheap.item() == pytest.approx(weighted_cross_entropy(mx.array(got), labels).item(), rel=1e-5)


def test_verbalizer_words_that_tokenize_the_same_are_refused(tiny_llama, colours, tmp_path):
    with pytest.raises(DataError, match="same tokens"):
        job_for(tiny_llama, colours, tmp_path, classify={"head": "verbalizer", "verbalizer": {"red": " cat", "blue": " cat"}})


# -- class weights and label smoothing ----------------------------------------------------------------


def test_class_weights_change_the_loss_as_stated():
    logits = mx.array([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = mx.array([0, 1, 1])
    p = np.exp(np.array(logits)) / np.exp(np.array(logits)).sum(1, keepdims=True)
    ce = -np.log(p[np.arange(3), [0, 1, 1]])
    assert weighted_cross_entropy(logits, labels).item() == pytest.approx(ce.mean(), rel=1e-6)
    w = np.array([3.0, 1.0])  # a label-0 text counts three times
    assert weighted_cross_entropy(logits, labels, mx.array(w)).item() == pytest.approx((3 * ce[0] + ce[1] + ce[2]) / 5, rel=1e-6)
    # Label smoothing eps: (1 - eps) * CE + eps * mean over labels of -log p (what MLX and PyTorch compute).
    eps = 0.2
    smoothed = (1 - eps) * ce + eps * (-np.log(p)).mean(1)
    assert weighted_cross_entropy(logits, labels, smoothing=eps).item() == pytest.approx(smoothed.mean(), rel=1e-5)


def test_class_weights_from_the_recipe_auto_or_per_label(tiny_llama, tmp_path):
    data = tmp_path / "skewed"
    rng = random.Random(2)
    rows = [r for r in (colour_row(rng) for _ in range(200)) if r["label"] == "red"][:30] + [{"text": "blue a cat dog", "label": "blue"}] * 10
    write_jsonl(data / "train.jsonl", rows)
    write_jsonl(data / "valid.jsonl", rows[:8] + rows[-4:])
    auto = job_for(tiny_llama, data, tmp_path)
    assert auto.classes == ["blue", "red"] and np.allclose(np.array(auto.weights), [40 / (2 * 10), 40 / (2 * 30)])
    given = job_for(tiny_llama, data, tmp_path, classify={"class_weights": {"blue": 4.0}})
    assert np.allclose(np.array(given.weights), [4.0, 1.0])
    with pytest.raises(DataError, match="class_weights names label.*'green'"):
        job_for(tiny_llama, data, tmp_path, classify={"class_weights": {"green": 2.0}})


# -- training, resume ------------------------------------------------------------------------------------


@pytest.mark.parametrize("head", ["score", "verbalizer"])
def test_a_tiny_model_learns_a_separable_labelling_to_100_percent(tiny_llama, colours, tmp_path, head):
    run = train(classify_recipe(tiny_llama, colours, tmp_path, classify={"head": head}, train={"compile": True}))
    assert run.ok, run.error
    evals = events(run.path, "EvalReport")
    assert evals[-1]["metrics"]["accuracy"] == 1.0 and evals[-1]["metrics"]["macro_f1"] == 1.0
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]
    started = events(run.path, "RunStarted")[0]
    assert started["unit"] == "seq" and "lm-classify" in started["method"]
    clf = mlxft.classifier(run.path)
    rows = [json.loads(line) for line in (colours / "test.jsonl").read_text().splitlines()]
    assert [r["label"] for r in clf([r["text"] for r in rows])] == [r["label"] for r in rows]


def test_a_run_killed_with_sigkill_resumes_to_the_same_losses(tiny_llama, colours, tmp_path):
    steps = 24
    sections = dict(train={"steps": steps, "save_every": 6, "eval_every": None, "keep_checkpoints": 3}, lora={"dropout": 0.1})
    reference = train(classify_recipe(tiny_llama, colours, tmp_path / "ref", **sections))
    assert reference.ok, reference.error
    run_dir = train_and_sigkill_at(classify_recipe(tiny_llama, colours, tmp_path / "killed", **sections), tmp_path / "killed", 6, tmp_path)
    assert_resumes_like(run_dir, reference.path, steps)
    ref_score = mx.load(str(reference.path / "adapter" / "score.safetensors"))["score.weight"]
    assert np.allclose(np.array(mx.load(str(run_dir / "adapter" / "score.safetensors"))["score.weight"]), np.array(ref_score), atol=1e-6)


# -- use: Python, predict, eval ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tiny_llama, colours, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained")
    run = train(classify_recipe(tiny_llama, colours, out, classify={"head": "verbalizer"}, train={"steps": 20, "eval_every": 20, "save_every": None}))
    assert run.ok, run.error
    return run.path


def test_the_classifier_answers_in_the_shape_of_a_text_classification_pipeline(trained):
    clf = mlxft.classifier(trained)
    one = clf("red cat dog")
    assert isinstance(one, list) and len(one) == 1 and set(one[0]) == {"label", "score"} and one[0]["label"] == "red"
    many = clf(["blue fish a", "red the dog", "the blue cat"])
    assert [m["label"] for m in many] == ["blue", "red", "blue"]
    every = clf(["blue fish a", "red the dog"], top_k=None)
    assert all(len(e) == 2 and sum(x["score"] for x in e) == pytest.approx(1.0, abs=1e-5) for e in every)
    assert clf({"text": "red a fish"}) == clf("red a fish")
    with pytest.raises(MlxftError, match="input 2: text: is missing"):
        clf(["red a", {"words": "blue"}])


def test_predict_a_text_and_a_file_on_the_command_line(trained, colours, tmp_path):
    out = subprocess.run(MLXFT + ["predict", str(trained), "red dog the cat"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "red"
    csv = tmp_path / "texts.csv"
    csv.write_text("text\nblue bird a\nred fish cat\n")
    out = subprocess.run(MLXFT + ["predict", str(trained), "--file", str(csv), "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(r["text"], r["label"]) for r in rows] == [("blue bird a", "blue"), ("red fish cat", "red")]
    assert all(set(r["scores"]) == {"red", "blue"} for r in rows)
    out = subprocess.run(MLXFT + ["predict", str(trained)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "give one text or --file" in out.stderr


def test_predict_names_a_bad_file_row_by_line_and_refuses_what_cannot_work(trained, tmp_path):
    def predict(*extra):
        return subprocess.run(MLXFT + ["predict", *extra], capture_output=True, text=True, timeout=120, cwd=tmp_path)

    (tmp_path / "other.csv").write_text("text\nred cat\n\"\"\n")
    (tmp_path / "words.csv").write_text("words\nred cat\n")
    (tmp_path / "empty.jsonl").write_text("")
    out = predict(str(trained), "--file", "other.csv")
    assert out.returncode == 1 and "other.csv:3: text: is empty" in out.stderr and "Traceback" not in out.stderr, out.stderr
    out = predict(str(trained), "--file", "words.csv")
    assert out.returncode == 1 and "words.csv:2: text: is missing" in out.stderr, out.stderr
    out = predict(str(trained), "--file", "empty.jsonl")
    assert out.returncode == 1 and "empty.jsonl: no rows to classify" in out.stderr, out.stderr
    out = predict(str(trained), "red dog", "--batch-size", "0")
    assert out.returncode == 2 and "--batch-size: 0: must be 1 or more" in out.stderr, out.stderr
    out = predict(str(tmp_path), "red dog")
    assert out.returncode == 1 and "no classifier here (neither an lm-classify nor an image-classify run)" in out.stderr, out.stderr
    out = predict(str(tmp_path / "gone"), "red dog")
    assert out.returncode == 1 and "gone: no such folder" in out.stderr, out.stderr
    with pytest.raises(MlxftError, match="batch_size 0"):
        mlxft.classifier(trained)(["red dog"], batch_size=0)


def test_eval_writes_the_report_confusion_calibration_and_the_zero_shot_base(trained, colours):
    out = subprocess.run(MLXFT + ["eval", str(trained), "--split", "test"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    folder = trained / "eval" / "test"
    summary = json.loads((folder / "summary.json").read_text())
    truth = [json.loads(line)["label"] for line in (colours / "test.jsonl").read_text().splitlines()]
    predictions = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    assert summary["texts"] == len(truth) == len(predictions)
    assert summary["accuracy"] == pytest.approx(np.mean([p["predicted"] == t for p, t in zip(predictions, truth)]))
    assert 0 <= summary["ece"] <= 1 and sum(b["count"] for b in summary["calibration"]["bins"]) == len(truth)
    assert set(summary["auc"]) == {"red"} and summary["auc"]["red"] >= 0.5
    assert summary["base"]["words"] == {"blue": " blue", "red": " red"} and 0 <= summary["base"]["accuracy"] <= 1
    assert "zero-shot base" in out.stdout and "ROC AUC" in out.stdout and "expected calibration error" in out.stdout
    for png in ("confusion.png", "reliability.png"):
        with Image.open(folder / png) as im:
            assert im.width > 200 and im.height > 200


def test_expected_calibration_error_by_hand():
    from mlxft.eval.calibration import calibration

    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.35, 0.65], [0.4, 0.6]])
    truth = np.array([0, 1, 1, 0])
    cal = calibration(truth, probs, n_bins=10)
    # Bins are (lower, upper]: 0.95 twice in (0.9, 1], 1 of 2 right; 0.6 in (0.5, 0.6], wrong; 0.65 in (0.6, 0.7], right.
    assert [b.count for b in cal.bins] == [0, 0, 0, 0, 0, 1, 1, 0, 0, 2]
    assert cal.ece == pytest.approx(2 / 4 * abs(0.5 - 0.95) + 1 / 4 * abs(0.0 - 0.6) + 1 / 4 * abs(1.0 - 0.65))


# -- bad data, recipes ----------------------------------------------------------------------------


def test_bad_label_data_is_an_error_naming_every_row(tiny_llama, tmp_path):
    data = tmp_path / "bad"
    write_jsonl(data / "train.jsonl", [{"text": "red a", "label": "red"}, {"text": "blue a", "label": 1.5}, {"text": "x"},
                                       {"text": "", "label": "red"}, {"label": "blue", "words": "cat"}, {"text": "blue", "label": "blue"}])
    write_jsonl(data / "valid.jsonl", [{"text": "red a", "label": "red"}])
    with pytest.raises(DataError) as err:
        job_for(tiny_llama, data, tmp_path, classify={"prompt_template": None})
    msg = err.value.message
    assert "4 bad row(s)" in msg
    for line, why in ((2, "label: must be a class name or an integer, got float"), (3, "label: is missing"), (4, "text: is empty"), (5, "text: is missing")):
        assert f"train.jsonl:{line}: {why}" in msg, msg


def test_a_label_seen_only_in_validation_is_an_error_naming_the_row(tiny_llama, colours, tmp_path):
    data = tmp_path / "unseen"
    write_jsonl(data / "train.jsonl", [json.loads(line) for line in (colours / "train.jsonl").read_text().splitlines()])
    write_jsonl(data / "valid.jsonl", [{"text": "red a", "label": "red"}, {"text": "green a", "label": "green"}])
    with pytest.raises(DataError, match=r"valid.jsonl:2: label 'green'"):
        job_for(tiny_llama, data, tmp_path)
    write_jsonl(data / "valid.jsonl", [{"text": "red a", "label": "red"}])
    write_jsonl(data / "test.jsonl", [{"text": "red a", "label": "red"}, {"text": "green a", "label": "green"}])
    run = train(classify_recipe(tiny_llama, data, tmp_path / "runs", train={"steps": 2, "eval_every": 2, "save_every": None}))
    assert run.ok, run.error
    out = subprocess.run(MLXFT + ["eval", str(run.path), "--split", "test"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "test.jsonl:2: label 'green'" in out.stderr and "Traceback" not in out.stderr


def test_one_label_and_a_template_column_the_rows_lack_are_refused(tiny_llama, tmp_path):
    data = tmp_path / "one"
    write_jsonl(data / "train.jsonl", [{"text": "red a", "label": "red"}] * 4)
    with pytest.raises(DataError, match="needs at least two"):
        job_for(tiny_llama, data, tmp_path)
    write_jsonl(data / "train.jsonl", [{"text": "red a", "label": "red"}, {"text": "blue a", "label": "blue"}])
    with pytest.raises(DataError, match=r"train.jsonl:1: premise: is missing \(the prompt template names it; this row has label, text\)"):
        job_for(tiny_llama, data, tmp_path, classify={"prompt_template": "{premise} -> {text}"})


def test_a_long_text_is_cut_and_counted_and_the_templates_end_is_kept(tiny_llama):
    from mlxft.llm.loading import load_tokenizer

    tok = load_tokenizer(str(tiny_llama))
    enc = PromptEncoder(tok, "Text: {text}\nColour:", 24)
    long = " ".join(["the quick brown fox"] * 30)
    ids, cut = enc.encode([{"text": long}, {"text": "red cat"}])
    assert cut == [0] and len(ids[0]) <= 24 and len(ids[1]) < 24
    tail = tok._tokenizer("\nColour:", add_special_tokens=False)["input_ids"]
    assert ids[0][-len(tail):].tolist() == tail  # the prompt still ends with the template's question
    with pytest.raises(DataError, match="template alone"):
        PromptEncoder(tok, "The quick brown fox jumps over the lazy dog. " * 3 + "{text}", 12).encode([{"text": "red"}])


def test_pairs_fill_the_default_template_and_a_missing_valid_split_is_held_out(tiny_llama, tmp_path):
    data = tmp_path / "pairs"
    rng = random.Random(3)
    rows = []
    for _ in range(40):
        a, b = rng.choice(["red", "blue"]), rng.choice(["red", "blue"])
        rows.append({"text_a": f"the {a} cat", "text_b": f"a {b} dog", "label": "same" if a == b else "different"})
    write_jsonl(data / "train.jsonl", rows)
    logs = []
    job = LMClassifyJob(recipe_from_dict(classify_recipe(tiny_llama, data, tmp_path, classify={"prompt_template": None, "valid_fraction": 0.25})),
                        emit=lambda e: logs.append(getattr(e, "message", "")))
    assert job.template == "{text_a}\n{text_b}"
    assert len(job.train) == 30 and len(job.valid) == 10
    assert any("held out for validation" in m and "stratified" in m for m in logs)


def test_recipe_rules_for_lm_classify(tiny_llama, colours, tmp_path):
    base = classify_recipe(tiny_llama, colours, tmp_path)
    with pytest.raises(RecipeError, match="lm-classify does not read data.mask_prompt"):
        recipe_from_dict({**base, "data": {**base["data"], "mask_prompt": False}})
    with pytest.raises(RecipeError, match="classify section is read by lm-classify only"):
        recipe_from_dict({**base, "kind": "lm-lora"})
    with pytest.raises(RecipeError, match="data.format classification trains with kind lm-classify"):
        recipe_from_dict({**{k: v for k, v in base.items() if k != "classify"}, "kind": "lm-lora", "data": {**base["data"], "format": "classification"}})
    with pytest.raises(RecipeError, match="is not a column name"):
        recipe_from_dict({**base, "classify": {"prompt_template": "{0} says"}})
    r = recipe_from_dict({**base, "classify": {"adapter": "full", "verbalizer": {0: " no", 1: " yes"}}})
    assert r.method == "full" and r.classify.verbalizer == {"0": " no", "1": " yes"}
    assert recipe_from_dict(r.to_dict()) == r
    assert math.isclose(r.classify.label_smoothing, 0.0)


# -- the real small model on real reviews (slow) ------------------------------------------------------

ASSET_MODEL = Path(__file__).resolve().parents[1].parent / "shared" / "assets" / "models" / "smollm2-135m-instruct-4bit"
IMDB = ASSET_MODEL.parents[1] / "data" / "imdb"
TRAIN_TEXTS, TEST_TEXTS = 320, 200  # about 4 minutes on 2 busy CPU cores


def imdb_rows(name: str, n: int, seed: int, words: int) -> list[dict]:
    """n balanced reviews (seeded), each cut to its last `words` words: a review's verdict is usually at its end."""
    import csv

    rows = list(csv.DictReader(open(IMDB / name, encoding="utf-8")))
    random.Random(seed).shuffle(rows)
    picked = [r for r in rows if r["label"] == "1"][: n // 2] + [r for r in rows if r["label"] == "0"][: n // 2]
    random.Random(seed + 1).shuffle(picked)
    return [{"text": " ".join(r["text"].replace("<br />", " ").split()[-words:]), "label": int(r["label"])} for r in picked]


@pytest.mark.slow
@pytest.mark.skipif(not ASSET_MODEL.is_dir() or not IMDB.is_dir(), reason="../shared/assets is not here")
def test_on_real_reviews_the_real_model_clearly_beats_chance_and_holds_its_zero_shot_level(tmp_path):
    """SmolLM2-135M-Instruct (dequantized, float32) on IMDB: 320 review endings, one epoch of the verbalizer head with LoRA
    on the last 8 blocks; then 200 held-out test reviews scored by the tuned classifier and by the untrained model.

    Measured here: tuned 0.76 against a zero-shot 0.74 (160 test reviews). The zero-shot verbalizer is already strong on
    this prompt, and a run this short does not clearly beat it (score heads of the same length did not either, see the
    issue note): the test holds the tuned model to chance by a wide margin and to the zero-shot level within noise."""
    from mlxft.llm.classify_eval import evaluate_texts
    from mlxft.llm.classify_predict import load_text_classifier

    data = tmp_path / "imdb"
    write_jsonl(data / "train.jsonl", imdb_rows("imdb_train_5000.csv", TRAIN_TEXTS, 0, 45))
    write_jsonl(data / "test.jsonl", imdb_rows("imdb_test_2000.csv", TEST_TEXTS, 1, 45))
    run = train({
        "kind": "lm-classify", "model": str(ASSET_MODEL), "output_dir": str(tmp_path / "runs"), "seed": 0,
        "data": {"path": str(data), "max_seq_length": 96},
        "classify": {"head": "verbalizer", "prompt_template": "Review: {text}\nSentiment:", "verbalizer": {0: " negative", 1: " positive"}, "valid_fraction": 0},
        "lora": {"rank": 8, "alpha": 16, "layers": 8},
        "train": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3, "warmup_steps": 2, "eval_every": None, "save_every": None, "log_every": 10},
    })
    assert run.ok, run.error
    result = evaluate_texts(load_text_classifier(run.path), str(data), "test", base=True)
    tuned, base = result.report.accuracy, result.base.report.accuracy
    print(f"\nIMDB, {TRAIN_TEXTS} train / {TEST_TEXTS} test reviews: tuned verbalizer accuracy {tuned:.3f} (macro-F1 {result.report.macro.f1:.3f}), "
          f"zero-shot {base:.3f}, ECE {result.calibration.ece:.3f}")
    assert tuned >= 0.70 and result.report.macro.f1 >= 0.68, (tuned, base)  # chance is 0.5
    assert tuned >= base - 0.02, (tuned, base)  # 0.02 is 4 of 200 reviews
