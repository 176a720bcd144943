"""Two image classifiers on the same labelled split: both predictions per image, accuracy and macro-F1 with the difference,
the per-class reports side by side, regressions (right under A, wrong under B) and fixes by path, and a verdict.

The verdict is the base-vs-tuned comparison's (`mlxft.eval.compare.decide_verdict`), with A as the base and B as the
tuned: the whole split is the target, and every image one item. An exact McNemar test on the discordant images says
how much of the difference chance could make; like the language-model verdict, the verdict key does not use it.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mlxft.atomic import atomic_write_text
from mlxft.errors import MlxftError
from mlxft.eval.compare import GroupScore, Verdict, VerdictWords, decide_verdict, discordant_p_value
from mlxft.textsafe import escape_lines

if TYPE_CHECKING:  # the TUI reads KIND and comparison_stem without loading MLX
    from mlxft.vision.evaluate import ImageEvaluation

KIND = "image-comparison"  # summary.json's `kind`, so readers tell it from one run's evaluation
SHOWN_CHANGES = 20  # regressions and fixes printed to the terminal; the reports list them all


@dataclass(frozen=True)
class ImagePair:
    """One image under both classifiers: each one's prediction and the probability it gave that prediction."""

    image: str
    label: str
    before: str
    before_p: float
    after: str
    after_p: float

    @property
    def before_right(self) -> bool:
        return self.before == self.label

    @property
    def after_right(self) -> bool:
        return self.after == self.label


@dataclass
class ImageComparison:
    """A (`before`) against B (`after`) on the same images of one split."""

    before_name: str
    after_name: str
    before: ImageEvaluation
    after: ImageEvaluation
    pairs: list[ImagePair]  # in B's image order
    score: GroupScore  # base = A, tuned = B
    verdict: Verdict
    p_value: float
    data: str | None = None
    before_path: str | None = None
    after_path: str | None = None

    @property
    def split(self) -> str:
        return self.after.split

    @property
    def labels(self) -> list[str]:
        return self.after.labels

    @property
    def regressions(self) -> list[ImagePair]:
        return [p for p in self.pairs if p.before_right and not p.after_right]

    @property
    def fixes(self) -> list[ImagePair]:
        return [p for p in self.pairs if not p.before_right and p.after_right]

    def summary(self) -> dict:
        def side(name: str, path: str | None, e: ImageEvaluation) -> dict:
            r = e.report
            return {"name": name, "path": path, "accuracy": r.accuracy, "macro_f1": r.macro.f1, "correct": round(r.accuracy * r.total),
                    "auc": e.auc, "classification": {**asdict(r), "columns": list(r.columns)}}

        before, after = self.before.report, self.after.report
        return {
            "kind": KIND, "split": self.split, "data": self.data, "images": len(self.pairs), "labels": list(self.labels),
            "before": side(self.before_name, self.before_path, self.before), "after": side(self.after_name, self.after_path, self.after),
            "change": {"accuracy": after.accuracy - before.accuracy, "macro_f1": after.macro.f1 - before.macro.f1},
            "regressions": [asdict(p) for p in self.regressions], "fixes": [asdict(p) for p in self.fixes],
            "mcnemar": {"discordant": self.score.fixes + self.score.regressions, "p_value": self.p_value, "note": chance_note(self)},
            "verdict": self.verdict.key, "verdict_text": self.verdict.text,
            "predictions": [asdict(p) for p in self.pairs],
        }


def check_same_labels(before: list[str], after: list[str], names: tuple[str, str]) -> None:
    """Two classifiers compare only over one label set (in any order); else say which labels each lacks."""
    if set(before) == set(after):
        return
    only_a, only_b = [x for x in before if x not in after], [x for x in after if x not in before]
    parts = [f"only {names[0]} has {', '.join(map(repr, only_a))}" if only_a else "", f"only {names[1]} has {', '.join(map(repr, only_b))}" if only_b else ""]
    raise MlxftError(f"{names[0]} and {names[1]} classify into different labels ({'; '.join(p for p in parts if p)})",
                     hint="compare runs trained on the same classes (the same image folder's labels)")


def _same_images(a: ImageEvaluation, b: ImageEvaluation, names: tuple[str, str]) -> None:
    """Both evaluations cover the same split's images with the same true labels; else say what differs."""
    if a.split != b.split:
        raise MlxftError(f"{names[0]} was evaluated on the '{a.split}' split and {names[1]} on '{b.split}': a comparison needs one split",
                         hint="evaluate both on the same split, e.g. mlxft eval RUN_B --against RUN_A --split test")
    seen_a, seen_b = set(a.paths), set(b.paths)
    for name, e, seen in ((names[0], a, seen_a), (names[1], b, seen_b)):
        if len(seen) != len(e.paths):
            raise MlxftError(f"{name}'s '{e.split}' evaluation lists {len(e.paths) - len(seen)} image(s) twice", hint="evaluate it again")
    if seen_a != seen_b:
        only_a, only_b = sorted(seen_a - seen_b), sorted(seen_b - seen_a)
        sample = (only_a or only_b)[:3]
        raise MlxftError(f"the two '{a.split}' splits are not the same images: {len(only_a)} only in {names[0]}'s, {len(only_b)} only in "
                         f"{names[1]}'s (e.g. {', '.join(sample)})",
                         hint="evaluate both on one image folder: mlxft eval RUN_B --against RUN_A --data IMAGE_FOLDER")
    truth_a = {p: a.labels[t] for p, t in zip(a.paths, a.truth)}
    differ = [p for p, t in zip(b.paths, b.truth) if truth_a[p] != b.labels[t]]
    if differ:
        raise MlxftError(f"{len(differ)} image(s) have a different true label in the two evaluations (e.g. {differ[0]})",
                         hint="evaluate both again on the same image folder")


def compare_evaluations(before: ImageEvaluation, after: ImageEvaluation, names: tuple[str, str] = ("A", "B"), *,
                        data: str | None = None, paths: tuple[str | None, str | None] = (None, None)) -> ImageComparison:
    """A (`before`) against B (`after`) image by image: regressions, fixes, the scores of each, and the verdict."""
    check_same_labels(before.labels, after.labels, names)
    _same_images(before, after, names)
    row = {p: i for i, p in enumerate(before.paths)}
    pairs = []
    for i, path in enumerate(after.paths):
        j = row[path]
        pa, pb = int(before.probs[j].argmax()), int(after.probs[i].argmax())
        pairs.append(ImagePair(path, after.labels[after.truth[i]], before.labels[pa], float(before.probs[j, pa]), after.labels[pb], float(after.probs[i, pb])))
    right_a = np.array([p.before_right for p in pairs], bool)
    right_b = np.array([p.after_right for p in pairs], bool)
    score = GroupScore(len(pairs), int(right_a.sum()), int(right_b.sum()), fixes=int((~right_a & right_b).sum()), regressions=int((right_a & ~right_b).sum()))
    words = VerdictWords(whole=f"the {after.split} split", worse=f"{names[1]} is worse than {names[0]}", this=names[1], item=("image", "images"))
    verdict = decide_verdict(score, GroupScore(0, 0, 0), [], words)
    return ImageComparison(names[0], names[1], before, after, pairs, score, verdict, discordant_p_value(score.fixes, score.regressions),
                           data=data, before_path=paths[0], after_path=paths[1])


def run_data(run, given: str | Path) -> str:
    """The image folder a run was trained on (its recipe's data.path); `run` is the RunDir holding the classifier, or None."""
    from mlxft.recipe import load_recipe

    if run is None:
        raise MlxftError(f"{given}: not inside a run directory, so its data is unknown", hint="pass --data IMAGE_FOLDER")
    return load_recipe(run.recipe_path).data.path


def run_name(clf) -> str:
    """How reports name a classifier: its run folder's name, else its own folder's."""
    from mlxft.runs import RunDir

    run = RunDir.containing(clf.folder)
    return (run.path if run else clf.folder).name


def compare_runs(after: str | Path, before: str | Path, *, data: str | None = None, split: str = "test", threshold_for: str | None = None,
                 on_progress=lambda name, model, done, total: None) -> ImageComparison:
    """Run B (`after`) and run A (`before`) on the same images of one split, then `compare_evaluations`.

    Everything that would make the comparison meaningless is refused before any image is read: the same run twice,
    label sets that differ, and (unless `data` names one folder for both) runs trained on different image folders.
    `on_progress(run name, 1 or 2, images done, images)` as each classifier works through the split.
    """
    from mlxft.runs import RunDir
    from mlxft.vision.evaluate import evaluate_images
    from mlxft.vision.predict import load_classifier

    clf_b, clf_a = load_classifier(after), load_classifier(before)
    if clf_a.folder.resolve() == clf_b.folder.resolve():
        raise MlxftError(f"--against {before}: that is {after} itself", hint="compare two different runs: mlxft eval RUN_B --against RUN_A")
    run_b, run_a = RunDir.containing(clf_b.folder), RunDir.containing(clf_a.folder)
    where = [Path(run.path if run else clf.folder).resolve() for run, clf in ((run_a, clf_a), (run_b, clf_b))]
    names = (where[0].name, where[1].name) if where[0].name != where[1].name else (str(where[0]), str(where[1]))
    check_same_labels(clf_a.labels, clf_b.labels, names)
    folder = data or run_data(run_b, after)
    if data is None:
        other = run_data(run_a, before)
        if Path(other).expanduser().resolve() != Path(folder).expanduser().resolve():
            raise MlxftError(f"{names[0]} was trained on {other} and {names[1]} on {folder}: their '{split}' splits are not the same images",
                             hint="pass --data IMAGE_FOLDER to evaluate both on one split")
    b = evaluate_images(clf_b, folder, split, threshold_for=threshold_for, on_progress=lambda done, total: on_progress(names[1], 1, done, total))
    a = evaluate_images(clf_a, folder, split, on_progress=lambda done, total: on_progress(names[0], 2, done, total))
    return compare_evaluations(a, b, names, data=str(Path(folder).expanduser().resolve()), paths=(str(where[0]), str(where[1])))


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def chance_note(c: ImageComparison) -> str:
    n = c.score.fixes + c.score.regressions
    if n == 0:
        return "A and B are right and wrong on exactly the same images"
    note = (f"McNemar exact test on the {n} image(s) where A and B differ ({c.score.fixes} fixed, {c.score.regressions} broken): p = {c.p_value:.3g}")
    return note + ("; a split this uneven is rare by chance" if c.p_value < 0.05 else "; chance alone could make a split like this")


def _class_rows(c: ImageComparison) -> list[tuple[str, int, tuple[float, float, float], tuple[float, float, float]]]:
    a, b = c.before.report, c.after.report
    rows = [(label, b.per_class[label].support, tuple(getattr(a.per_class[label], k) for k in ("precision", "recall", "f1")),
             tuple(getattr(b.per_class[label], k) for k in ("precision", "recall", "f1"))) for label in c.labels]
    return rows + [("macro avg", b.macro.support, (a.macro.precision, a.macro.recall, a.macro.f1), (b.macro.precision, b.macro.recall, b.macro.f1))]


def _pair_line(p: ImagePair) -> str:
    return f"{p.image}  true {p.label}: A {p.before} {p.before_p:.2f}, B {p.after} {p.after_p:.2f}"


def format_comparison(c: ImageComparison, *, shown: int = SHOWN_CHANGES) -> str:
    """What `mlxft eval RUN_B --against RUN_A` prints: scores, classes side by side, regressions and fixes, the verdict."""
    a, b = c.before.report, c.after.report
    width = max([len("class"), *(len(label) for label in c.labels), len("macro avg")])
    lines = [
        f"A = {c.before_name}, B = {c.after_name}: the same {len(c.pairs)} images of the '{c.split}' split",
        f"accuracy: {_pct(a.accuracy)} -> {_pct(b.accuracy)} ({100 * (b.accuracy - a.accuracy):+.1f} pts); "
        f"macro F1: {a.macro.f1:.3f} -> {b.macro.f1:.3f} ({b.macro.f1 - a.macro.f1:+.3f})",
        "",
        f"{'class':<{width}} {'n':>5}   A prec recall    f1   B prec recall    f1",
        *(f"{label:<{width}} {n:>5}   {pa:>6.3f} {ra:>6.3f} {fa:>5.3f}   {pb:>6.3f} {rb:>6.3f} {fb:>5.3f}"
          for label, n, (pa, ra, fa), (pb, rb, fb) in _class_rows(c)),
        "",
    ]
    for title, rows in ((f"regressions ({len(c.regressions)}): right under A, wrong under B", c.regressions),
                        (f"fixes ({len(c.fixes)}): wrong under A, right under B", c.fixes)):
        lines.append(title)
        lines += [f"  {_pair_line(p)}" for p in rows[:shown]]
        if len(rows) > shown:
            lines.append(f"  ... and {len(rows) - shown} more in the report")
    lines += ["", chance_note(c), f"verdict: {c.verdict.key} - {c.verdict.text}"]
    return escape_lines(lines)


def format_comparison_markdown(c: ImageComparison) -> str:
    """The report a person reads: both runs, scores with the change, per-class side by side, the verdict, every regression and fix."""
    a, b = c.before.report, c.after.report
    lines = [
        f"# {c.after_name} against {c.before_name}: {c.split} split", "",
        f"- A (before): `{c.before_name}`" + (f" at `{c.before_path}`" if c.before_path else ""),
        f"- B (after): `{c.after_name}`" + (f" at `{c.after_path}`" if c.after_path else ""),
        f"- images: {len(c.pairs)} of the '{c.split}' split" + (f" of `{c.data}`" if c.data else "") + f", labels {', '.join(c.labels)}", "",
        "| | A | B | change |", "|---|---:|---:|---:|",
        f"| accuracy | {_pct(a.accuracy)} | {_pct(b.accuracy)} | {100 * (b.accuracy - a.accuracy):+.1f} pts |",
        f"| macro F1 | {a.macro.f1:.3f} | {b.macro.f1:.3f} | {b.macro.f1 - a.macro.f1:+.3f} |",
        f"| right | {c.score.base_correct} | {c.score.tuned_correct} | {c.score.net:+d} |", "",
        f"## Verdict: {c.verdict.key}", "", c.verdict.text, "", chance_note(c), "",
        "## Per class", "", "| class | n | A precision | A recall | A F1 | B precision | B recall | B F1 |", "|---|---:|---:|---:|---:|---:|---:|---:|",
        *(f"| {label} | {n} | {pa:.3f} | {ra:.3f} | {fa:.3f} | {pb:.3f} | {rb:.3f} | {fb:.3f} |" for label, n, (pa, ra, fa), (pb, rb, fb) in _class_rows(c)),
        "",
    ]
    for title, rows in ((f"Regressions ({len(c.regressions)}): right under A, wrong under B", c.regressions),
                        (f"Fixes ({len(c.fixes)}): wrong under A, right under B", c.fixes)):
        lines += [f"## {title}", ""]
        lines += [f"- `{p.image}` true **{p.label}**: A {p.before} ({p.before_p:.2f}), B {p.after} ({p.after_p:.2f})" for p in rows] or ["(none)"]
        lines.append("")
    return escape_lines(lines)


def comparison_stem(before_name: str) -> str:
    """`compare-<A>`: one pair of files per run compared against, so comparing with another run keeps this one."""
    return "compare-" + (re.sub(r"[^A-Za-z0-9._-]+", "_", before_name).strip("._") or "run")[:80]


def write_comparison(c: ImageComparison, out: Path) -> dict[str, Path]:
    """compare-<A>.json (every image's two predictions, scores, verdict) and compare-<A>.md, each written atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = comparison_stem(c.before_name)
    paths = {"comparison": out / f"{stem}.json", "comparison_report": out / f"{stem}.md"}
    atomic_write_text(paths["comparison"], json.dumps(c.summary(), indent=2, default=float))
    atomic_write_text(paths["comparison_report"], format_comparison_markdown(c))
    return paths
