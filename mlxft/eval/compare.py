"""Base vs fine-tuned on the same benchmark in one process: run log, summary, regressions, fixes and a verdict."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mlxft.atomic import atomic_open, atomic_write_text
from mlxft.errors import MlxftError
from mlxft.runs import ADAPTER_DIR, RunDir
from mlxft.textsafe import escape_lines

VERDICT_KEYS = ("ship", "investigate", "look at the training data", "stop")
WHOLE_BENCHMARK = "whole benchmark"


@dataclass
class ItemResult:
    id: str
    prompt: str | None
    messages: list | None
    expected: object
    cluster: str | None
    base_answer: str
    tuned_answer: str
    base_passed: bool
    tuned_passed: bool
    base_reason: str
    tuned_reason: str

    def log_row(self) -> dict:
        """One line of the run log; `mlxft data failures` reads `answer`, `grade` and `failure`."""
        row = {"id": self.id}
        row.update({"prompt": self.prompt} if self.prompt is not None else {"messages": self.messages})
        row.update({
            "expected": self.expected, "answer": self.tuned_answer, "grade": self.tuned_passed,
            "base_answer": self.base_answer, "tuned_answer": self.tuned_answer,
            "base_grade": self.base_passed, "tuned_grade": self.tuned_passed,
            "base_reason": self.base_reason, "tuned_reason": self.tuned_reason,
        })
        if self.cluster is not None:
            row["cluster"] = self.cluster
            row["failure"] = self.cluster
        return row


@dataclass
class GroupScore:
    """Base and tuned on a group of items; `fixes` went wrong -> right, `regressions` right -> wrong."""

    size: int
    base_correct: int
    tuned_correct: int
    fixes: int = 0
    regressions: int = 0

    @property
    def net(self) -> int:
        return self.tuned_correct - self.base_correct

    @property
    def base_accuracy(self) -> float:
        return self.base_correct / self.size if self.size else float("nan")

    @property
    def tuned_accuracy(self) -> float:
        return self.tuned_correct / self.size if self.size else float("nan")

    @property
    def change(self) -> float:
        return self.tuned_accuracy - self.base_accuracy if self.size else float("nan")


def discordant_p_value(fixes: int, regressions: int) -> float:
    """Exact two-sided McNemar test: how likely a split of the discordant items at least this uneven is, were
    neither side better (each discordant item a fair coin). 1.0 when nothing changed."""
    from math import comb

    n = fixes + regressions
    if n == 0:
        return 1.0
    tail = sum(comb(n, k) for k in range(min(fixes, regressions) + 1))
    return min(1.0, 2 * tail / 2**n)


@dataclass(frozen=True)
class Verdict:
    """What to do with the adapter (`key`, one of VERDICT_KEYS) and the numbers that say why (`text`)."""

    key: str
    text: str


@dataclass
class Comparison:
    model: str
    adapter: str
    bench: str
    targets: list[str]  # empty: no cluster is targeted, so the whole benchmark is the target
    target: GroupScore
    rest: GroupScore
    items: list[ItemResult]
    verdict: str
    seed: int
    settings: dict
    heldout: dict | None = None
    training_examples: int | None = None
    seconds: float = 0.0
    regression_clusters: dict = field(default_factory=dict)
    bench_items: list = field(default_factory=list, repr=False)  # with their graders, for classification reports
    verdict_text: str = ""

    @property
    def regressions(self) -> list[ItemResult]:
        return [r for r in self.items if r.base_passed and not r.tuned_passed]

    @property
    def fixes(self) -> list[ItemResult]:
        return [r for r in self.items if not r.base_passed and r.tuned_passed]

    @property
    def target_name(self) -> str:
        return target_name(self.targets)

    def summary(self) -> dict:
        def group(g: GroupScore) -> dict:
            # An empty group (no rest when the whole benchmark is the target) has no accuracy: null, since NaN is not JSON.
            rates = {k: getattr(g, k) if g.size else None for k in ("base_accuracy", "tuned_accuracy", "change")}
            return {"size": g.size, **rates, "fixes": g.fixes, "regressions": g.regressions}

        return {
            "model": self.model, "adapter": self.adapter, "bench": self.bench, "targets": self.targets, "target_name": self.target_name,
            "target": group(self.target), "rest": group(self.rest), "regressions": len(self.regressions), "fixes": len(self.fixes),
            "regression_clusters": self.regression_clusters, "verdict": self.verdict, "verdict_text": self.verdict_text,
            "heldout": self.heldout, "training_examples": self.training_examples, "seed": self.seed, "settings": self.settings,
            "seconds": round(self.seconds, 2),
        }


def target_name(targets: list[str]) -> str:
    """How reports name the target: its clusters, or the whole benchmark when none is targeted."""
    return f"target ({', '.join(targets)})" if targets else WHOLE_BENCHMARK


def choose_targets(clusters: list[str | None], requested: list[str] | None, bench: str | Path) -> list[str]:
    """The clusters to judge: those asked for, else every labelled one; [] (the whole benchmark) when none is labelled.

    Asking for a cluster no item has is an error, raised before any model is loaded: a verdict on
    an empty target could only be made up, and the usual cause is a typo.
    """
    labels = sorted({c for c in clusters if c is not None})
    if not requested:
        return labels
    requested = list(dict.fromkeys(requested))
    unknown = [t for t in requested if t not in labels]
    if unknown:
        hint = (f"clusters in this benchmark: {', '.join(labels)}; or leave out --target to judge every labelled cluster" if labels
                else "this benchmark has no `cluster` column; leave out --target to judge the whole benchmark")
        raise MlxftError(f"{bench}: no items in cluster(s) {unknown}", hint=hint)
    return requested


def score_items(items: list[ItemResult], targets: list[str]) -> tuple[GroupScore, GroupScore]:
    """(target, rest): with no targets every item is in the target and the rest is empty."""
    in_target = [r for r in items if not targets or r.cluster in targets]
    rest = [r for r in items if targets and r.cluster not in targets]
    return _score(in_target), _score(rest)


def _score(items: list[ItemResult]) -> GroupScore:
    return GroupScore(len(items), sum(r.base_passed for r in items), sum(r.tuned_passed for r in items),
                      fixes=sum(r.tuned_passed and not r.base_passed for r in items),
                      regressions=sum(r.base_passed and not r.tuned_passed for r in items))


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _facts(name: str, g: GroupScore) -> str:
    """`+48.1 pts on the whole benchmark (40.3% -> 88.4%, 450 fixes, 30 regressions)`."""
    shift = _pts(g.change) if g.net else "no net change"
    return (f"{shift} on {name} ({_pct(g.base_accuracy)} -> {_pct(g.tuned_accuracy)}, "
            f"{_count(g.fixes, 'fix', 'fixes')}, {_count(g.regressions, 'regression', 'regressions')})")


@dataclass(frozen=True)
class VerdictWords:
    """How a verdict names what it judged and what changed; the defaults are the base-vs-adapter comparison's."""

    whole: str = f"the {WHOLE_BENCHMARK}"  # the target when no cluster is targeted
    worse: str = "the adapter makes the model worse"
    this: str = "this adapter"
    item: tuple[str, str] = ("item", "items")


def decide_verdict(target: GroupScore, rest: GroupScore, targets: list[str], words: VerdictWords = VerdictWords()) -> Verdict:
    """Ship only a gain on the target that breaks nothing; a gain that breaks more than it fixes is a stop.

    The target is the targeted clusters, or the whole benchmark when none is targeted (then `rest` is empty).
    `words` lets another comparison (two image classifiers on a test split) speak of its own things.
    """
    name = f"the target{'s' if len(targets) > 1 else ''} {', '.join(targets)}" if targets else words.whole
    facts = _facts(name, target) + (f"; {_facts('the rest', rest)}" if rest.size else "")
    regressions = target.regressions + rest.regressions
    them = "the regression" if regressions == 1 else f"the {regressions} regressions"
    net = target.net + rest.net
    if target.net > 0 and regressions == 0:
        key, advice = "ship", "ship it"
    elif target.net > 0 and net < 0:
        key, advice = "stop", (f"it breaks more than it fixes ({net:+d} {words.item[1]} over {words.whole}); do not ship it, and keep "
                               "examples the model already gets right in the training set (`mlxft data build --keep-passing`)")
    elif target.net > 0:
        key, advice = "investigate", f"read {them} before shipping"
    elif regressions == 0:
        key, advice = "look at the training data", ("the target did not improve and nothing broke; look at the training data "
                                                    "(too few examples, too unlike the benchmark, or too few steps)")
    elif target.net < 0:
        key, advice = "stop", f"{words.worse} on {name}; do not ship it"
    else:
        key, advice = "stop", f"no gain on {name}, and {_count(regressions, *words.item)} broke; do not ship {words.this}"
    return Verdict(key, f"{facts}: {advice}")


def _training_examples(adapter: Path) -> int | None:
    """How many training samples made the adapter, when it comes from an mlxft run directory."""
    from mlxft.events import RunStarted

    run = RunDir.containing(adapter)
    started = next((e for e in run.events() if isinstance(e, RunStarted)), None) if run else None
    return started.train_samples if started else None


def generate_answers(model, tokenizer, texts: list[str], *, max_tokens: int, batch_size: int, on_batch=lambda done: None) -> list[str]:
    """Greedy answers for rendered prompts, `batch_size` sequences decoded together; `on_batch(answered)` after each batch."""
    from mlx_lm.generate import batch_generate

    from mlxft.llm.generate import prompt_ids

    ids = [prompt_ids(tokenizer, t) for t in texts]
    out: list[str] = []
    for start in range(0, len(ids), batch_size):
        chunk = ids[start : start + batch_size]
        response = batch_generate(model, tokenizer, chunk, max_tokens=max_tokens, completion_batch_size=batch_size, prefill_batch_size=batch_size)
        out.extend(t.strip() for t in response.texts)
        on_batch(len(out))
    return out


def compare(model: str, adapter: str | Path, bench: str | Path, *, targets: list[str] | None = None, default_grader="exact",
            max_tokens: int = 128, batch_size: int = 8, seed: int = 0, heldout: str | None = None, heldout_split: str = "test",
            score: str = "generate", labels: list[str] | None = None, on_progress=lambda done, total, phase: None) -> Comparison:
    """Run base (adapter off) and tuned (adapter on) on every benchmark item, in one model in memory.

    score="generate": greedy answers, graded; score="labels": each item's answer is its best-ranked candidate label
    (mlxft/eval/label_scoring.py), graded the same way.
    """
    import mlx.core as mx

    from mlxft.eval.bench import read_bench
    from mlxft.eval.graders import grade
    from mlxft.llm.adapters import load_adapter, resolve_adapter_dir
    from mlxft.lora import set_adapters_enabled
    from mlxft.llm.generate import render_prompt
    from mlxft.llm.loading import load_model

    t0 = time.perf_counter()
    items = read_bench(bench, default_grader=default_grader)
    if score not in ("generate", "labels"):
        raise MlxftError(f"score must be generate or labels, got {score!r}")
    candidates = None
    if score == "labels":
        from mlxft.eval.label_scoring import candidates_for

        candidates = candidates_for(items, labels)
    targets = choose_targets([it.cluster for it in items], targets, bench)
    loaded = load_model(model)
    adapter_dir = resolve_adapter_dir(adapter)
    cfg = load_adapter(loaded.model, adapter_dir)
    if cfg.get("fine_tune_type") == "full":
        raise MlxftError("base-vs-tuned needs an adapter that can be switched off; this is a full fine-tune", hint="compare LoRA/DoRA adapters, or evaluate the two models separately")
    loaded.model.eval()
    mx.random.seed(seed)
    texts = [render_prompt(loaded.tokenizer, prompt=it.prompt, messages=it.messages) for it in items]
    answers = {}
    for phase, enabled in (("base", False), ("tuned", True)):
        set_adapters_enabled(loaded.model, enabled)
        on_progress(0, len(items), phase)  # the model is loaded: answering starts
        on_batch = lambda done, phase=phase: on_progress(done, len(items), phase)  # noqa: E731
        if candidates is None:
            answers[phase] = generate_answers(loaded.model, loaded.tokenizer, texts, max_tokens=max_tokens, batch_size=batch_size,
                                              on_batch=on_batch)
        else:
            from mlxft.eval.label_scoring import score_labels

            ranked = score_labels(loaded.model, loaded.tokenizer, texts, candidates, model_type=loaded.model_type,
                                  batch_size=batch_size, on_batch=on_batch)
            answers[phase] = [next(iter(r)) for r in ranked]
    results = []
    for it, base, tuned in zip(items, answers["base"], answers["tuned"]):
        gb, gt = grade(base, it.expected, it.grader), grade(tuned, it.expected, it.grader)
        results.append(ItemResult(it.id, it.prompt, it.messages, it.expected, it.cluster, base, tuned, gb.passed, gt.passed, gb.reason, gt.reason))

    target_score, rest_score = score_items(results, targets)
    verdict = decide_verdict(target_score, rest_score, targets)
    regressions = [r for r in results if r.base_passed and not r.tuned_passed]
    shared: dict[str, int] = {}
    for r in regressions:
        shared[r.cluster or "(no cluster)"] = shared.get(r.cluster or "(no cluster)", 0) + 1

    held = None
    if heldout:
        held = heldout_losses(loaded, heldout, heldout_split)
    return Comparison(
        model=model, adapter=str(adapter_dir), bench=str(bench), targets=targets, target=target_score, rest=rest_score,
        items=results, verdict=verdict.key, verdict_text=verdict.text, seed=seed,
        settings={"score": score, "max_tokens": max_tokens if score == "generate" else None, "batch_size": batch_size,
                  "temperature": 0.0, "default_grader": str(default_grader)},
        heldout=held, training_examples=_training_examples(Path(adapter)), seconds=time.perf_counter() - t0,
        regression_clusters=shared, bench_items=items,
    )


def heldout_losses(loaded, data: str, split: str) -> dict:
    """Loss and perplexity of base and tuned on a data split, with the same weights in memory."""
    from mlxft.lora import set_adapters_enabled
    from mlxft.llm.evaluate import encode_split, split_loss

    samples, _ = encode_split(loaded, data, split)
    out = {"data": data, "split": split, "samples": len(samples)}
    for phase, enabled in (("base", False), ("tuned", True)):
        set_adapters_enabled(loaded.model, enabled)
        out[phase] = split_loss(loaded, samples)
    return out


def _pct(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.1f}%"


def _pts(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:+.1f} pts"


def _score_rows(c: Comparison) -> list[tuple[str, GroupScore]]:
    """The target, and the rest when there is one (with no target the whole benchmark leaves none)."""
    return [(c.target_name, c.target)] + ([("rest", c.rest)] if c.rest.size else [])


def format_markdown(c: Comparison) -> str:
    """The report a person reads: target and rest, every regression and fix with answers, the verdict, a postmortem.

    Every line goes through `escape_lines`: ids, clusters and paths come from the benchmark and the user.
    """
    lines = [
        f"# Evaluation: {Path(c.adapter).parent.name if Path(c.adapter).name == ADAPTER_DIR else Path(c.adapter).name} vs base",
        "", f"- model: `{c.model}`", f"- adapter: `{c.adapter}`", f"- benchmark: `{c.bench}` ({len(c.items)} items)",
        (f"- answers ranked from the candidate labels by log-probability (--score labels), seed {c.seed}"
         if c.settings.get("score") == "labels" else f"- greedy decoding, seed {c.seed}, max {c.settings['max_tokens']} new tokens"), "",
        "| | items | base | tuned | change | fixes | regressions |", "|---|---:|---:|---:|---:|---:|---:|",
        *(f"| {name} | {g.size} | {_pct(g.base_accuracy)} | {_pct(g.tuned_accuracy)} | {_pts(g.change)} | {g.fixes} | {g.regressions} |"
          for name, g in _score_rows(c)),
        "", f"## Verdict: {c.verdict}", "", c.verdict_text, "",
    ]
    if c.heldout:
        h = c.heldout
        lines += [f"Held-out loss on `{h['data']}` ({h['split']}, {h['samples']} samples): base {h['base']['loss']:.4f} (perplexity {h['base']['perplexity']:.2f}) -> tuned {h['tuned']['loss']:.4f} (perplexity {h['tuned']['perplexity']:.2f}).", ""]
    for title, rows in ((f"Regressions ({len(c.regressions)}): right before, wrong after", c.regressions), (f"Fixes ({len(c.fixes)}): wrong before, right after", c.fixes)):
        lines += [f"## {title}", ""]
        if title.startswith("Regressions") and c.regression_clusters:
            lines += ["What they share: " + ", ".join(f"{k}: {v}" for k, v in sorted(c.regression_clusters.items(), key=lambda kv: -kv[1])), ""]
        for r in rows:
            q = r.prompt if r.prompt is not None else (r.messages[-1]["content"] if r.messages else "")
            lines += [f"- **{r.id}** [{r.cluster or 'no cluster'}] {q!r}", f"  - expected: {r.expected!r}", f"  - base: {r.base_answer!r}", f"  - tuned: {r.tuned_answer!r} ({r.tuned_reason})"]
        lines.append("")
    targeted = ", ".join(c.targets) if c.targets else f"none: the {WHOLE_BENCHMARK} is the target"
    lines += [
        "## Postmortem", "",
        f"- cluster targeted: {targeted} ({c.target.size} items)",
        f"- training examples used: {c.training_examples if c.training_examples is not None else 'unknown (not an mlxft run directory)'}",
        *(f"- change on {where}: {_pct(g.base_accuracy)} -> {_pct(g.tuned_accuracy)} ({_pts(g.change)})"
          for where, g in ((("the cluster" if c.targets else f"the {WHOLE_BENCHMARK}"), c.target), ("the rest", c.rest)) if g.size),
        f"- regressions: {len(c.regressions)}; fixes: {len(c.fixes)}",
        f"- verdict: {c.verdict}", "",
    ]
    return escape_lines(lines)


def classification_reports(c: Comparison, items) -> dict | None:
    """For a classification benchmark (every item graded one-of): per-class metrics of base and tuned."""
    from mlxft.eval.classification import classification_report
    from mlxft.eval.graders import extract_label

    if not items or any(it.grader.kind != "one-of" for it in items):
        return None
    labels = list(dict.fromkeys(str(label) for it in items for label in it.grader.labels))
    y_true = [str(r.expected) for r in c.items]
    out = {}
    for phase in ("base", "tuned"):
        answers = [getattr(r, f"{phase}_answer") for r in c.items]
        y_pred = [extract_label(a, labels, it.grader) or a for a, it in zip(answers, items)]
        out[phase] = (classification_report(y_true, y_pred, labels=labels), y_pred)
    return out


def write_reports(c: Comparison, out_dir: str | Path, focus_class: str | None = None) -> dict[str, Path]:
    """run-log.jsonl (what `mlxft data failures` reads), summary.json and report.md, each written atomically;
    for classification benchmarks also the base and tuned confusion matrices as PNGs."""
    from mlxft.eval.classification import draw_confusion_matrix, errors_for_class, format_report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"log": out / "run-log.jsonl", "summary": out / "summary.json", "report": out / "report.md"}
    extra = []
    summary = c.summary()
    reports = classification_reports(c, c.bench_items)
    if reports:
        # Programs (the TUI) draw the matrices themselves from summary.json.
        summary["classification"] = {phase: {**asdict(rep), "columns": list(rep.columns)} for phase, (rep, _) in reports.items()}
        for phase, (rep, y_pred) in reports.items():
            paths[f"confusion_{phase}"] = draw_confusion_matrix(rep, out / f"confusion-{phase}.png", title=f"{phase}: accuracy {rep.accuracy:.1%}")
            extra += [f"## Classification: {phase}", "", "```", *format_report(rep).splitlines(), "```", "", f"![{phase} confusion matrix](confusion-{phase}.png)", ""]
            if focus_class is not None:
                fps, fns = errors_for_class(c.items, [str(r.expected) for r in c.items], y_pred, focus_class)
                extra += [f"{phase} false positives for {focus_class!r} ({len(fps)}): " + ", ".join(r.id for r in fps),
                          f"{phase} false negatives for {focus_class!r} ({len(fns)}): " + ", ".join(r.id for r in fns), ""]
    with atomic_open(paths["log"]) as f:
        for r in c.items:
            f.write(json.dumps(r.log_row(), ensure_ascii=False, default=str) + "\n")
    atomic_write_text(paths["summary"], json.dumps(summary, indent=2, default=str))
    atomic_write_text(paths["report"], format_markdown(c) + ("\n" + escape_lines(extra) if extra else ""))
    return paths


def format_terminal(c: Comparison) -> str:
    """What `mlxft eval` prints: the target (and the rest), regressions and fixes, and the verdict with its numbers."""
    return escape_lines([
        *(f"{name} ({g.size} items): {_pct(g.base_accuracy)} -> {_pct(g.tuned_accuracy)} ({_pts(g.change)})" for name, g in _score_rows(c)),
        f"regressions: {len(c.regressions)}, fixes: {len(c.fixes)}",
        f"verdict: {c.verdict} - {c.verdict_text}",
    ])
