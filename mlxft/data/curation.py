"""The failure-cluster workflow: eval run log -> failure clusters -> a review file a person corrects -> training sets.

Fine-tuning is for failures that survive better prompts: take the items the
model gets wrong, write the right answers, and train on those.

The evaluation run log is JSONL, one object per item:

    id          string or integer, unique in the file
    prompt      the question (a string), or
    messages    the conversation up to the model's answer: [{role, content}, ...]
    answer      the model's answer. A base-vs-tuned log may have `tuned_answer`
                and `base_answer` instead: `answer` is used if present, else
                `tuned_answer`, else `base_answer` (the model being improved is
                the newest one).
    expected    the reference answer (optional; any non-string is kept as JSON text)
    grade       true/false; "pass"/"fail" (also "passed"/"failed", "true"/"false",
                any case); or a number, which passes when >= the threshold
                (1.0 unless `pass_threshold` says otherwise, so a 0..1 score
                passes only with full marks)
    failure     the failure cluster's name (or `failure_label`); without one a
                failing item falls back to `cluster`, then to "unlabelled"
    cluster     optional: the benchmark cluster the item belongs to

Nothing a person wrote is destroyed: `export_review` will not replace a review
file that has any correction filled in, and `build_training_sets` will not
write into a folder that already holds files unless asked.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mlxft.atomic import atomic_write_text
from mlxft.data.outputs import explain_write_errors, refuse_writing_over_inputs
from mlxft.data.readers import RowError, iter_jsonl_rows
from mlxft.data.split import split_rows
from mlxft.errors import DataError
from mlxft.textsafe import escape_controls, escape_lines

ROLES = ("system", "user", "assistant", "tool")
UNLABELLED = "unlabelled"
ANSWER_KEYS = ("answer", "tuned_answer", "base_answer")
PASS_WORDS = {"pass": True, "passed": True, "true": True, "fail": False, "failed": False, "false": False}


@dataclass(frozen=True)
class EvalRow:
    """One graded item of an evaluation run log, and where it came from."""

    id: str
    prompt: str | None
    messages: tuple[dict, ...] | None
    answer: str
    expected: str | None
    passed: bool
    failure: str  # the cluster a failure is grouped under; UNLABELLED when the log has none
    cluster: str | None = None
    score: float | None = None  # the numeric grade, when the log gave one
    source: str = ""
    line: int = 0

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"

    @property
    def question(self) -> str:
        """The prompt as one string: the prompt, or the last user turn of the conversation."""
        return self.prompt if self.prompt is not None else _last_user_turn(self.messages or ())


@dataclass(frozen=True)
class Cluster:
    """The failures that share a label."""

    label: str
    rows: tuple[EvalRow, ...]
    share: float  # of all failures, 0..1

    @property
    def count(self) -> int:
        return len(self.rows)

    @property
    def examples(self) -> tuple[EvalRow, ...]:
        return self.rows[:3]


@dataclass(frozen=True)
class ReviewItem:
    """One reviewed item: the model's wrong answer and the person's correction."""

    id: str
    prompt: str | None
    messages: tuple[dict, ...] | None
    model_answer: str
    corrected: str
    expected: str | None
    failure: str
    line: int


@dataclass(frozen=True)
class ReviewResult:
    """A filled-in review file: the items with a correction, and how many were left empty."""

    source: str
    items: tuple[ReviewItem, ...]
    discarded: int  # lines whose `corrected` is empty: not reviewed, so not trained on
    discarded_ids: tuple[str, ...] = ()

    @property
    def used(self) -> int:
        return len(self.items)

    def summary(self) -> str:
        return escape_controls(f"{self.source}: {self.used} correction(s) used, {self.discarded} left empty and skipped")


@dataclass(frozen=True)
class BuildResult:
    """What `build_training_sets` wrote, and the counts behind it."""

    out_dir: Path
    paths: dict[str, Path]
    sft_train: int
    sft_valid: int
    preference_train: int
    preference_valid: int
    corrections: int  # reviewed items used
    passing_kept: int  # items the model already passes, mixed into the SFT set
    pairs_skipped: int  # corrections equal to the model's answer: no contrast for a preference pair

    def summary(self) -> str:
        lines = [
            f"{self.out_dir}: {self.corrections} correction(s), {self.passing_kept} passing example(s) kept",
            f"  sft:        {self.sft_train} train, {self.sft_valid} valid",
            f"  preference: {self.preference_train} train, {self.preference_valid} valid",
        ]
        if self.pairs_skipped:
            lines.append(f"  {self.pairs_skipped} correction(s) equal the model's answer: in the SFT set, not in the preference pairs")
        return escape_lines(lines)


# ----- reading the eval log


def read_eval_log(path: str | Path, *, pass_threshold: float = 1.0) -> list[EvalRow]:
    """Read and check every line of an evaluation run log; all bad lines are reported in one DataError."""
    path = Path(path).expanduser()
    if not math.isfinite(pass_threshold):  # nan would fail every numeric grade without a word
        raise DataError(f"pass_threshold (--pass-threshold): {pass_threshold} is not a finite number", hint="numeric grades at or above it pass, e.g. --pass-threshold 0.5")
    rows: list[EvalRow] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for n, obj, problem in _json_lines(path):
        if problem:
            problems.append(problem)
            continue
        row, row_problems = _eval_row(obj, str(path), n, pass_threshold)
        if row is not None and row.id in seen:
            row_problems.append(f"{path}:{n}: id: {row.id!r} is already used on line {seen[row.id]}")
        if row_problems:
            problems.extend(row_problems)
            continue
        seen[row.id] = n
        rows.append(row)
    if problems:
        raise DataError(
            f"{path}: {len(problems)} problem(s) in the evaluation log\n" + "\n".join(f"  {p}" for p in problems),
            hint="fix or remove these lines; each needs id, prompt or messages, answer, and grade (see mlxft.data.curation)",
        )
    if not rows:
        raise DataError(f"{path}: the evaluation log has no rows", hint="run `mlxft eval` first; it writes one JSON object per item")
    return rows


def _eval_row(obj: dict, source: str, n: int, pass_threshold: float) -> tuple[EvalRow | None, list[str]]:
    at = f"{source}:{n}"
    problems: list[str] = []
    item_id = _id_field(obj, at, problems)
    prompt, messages = _prompt_fields(obj, at, problems)
    answer_key = next((k for k in ANSWER_KEYS if k in obj), None)
    answer = None
    if answer_key is None:
        problems.append(f"{at}: answer: missing; give the model's answer as 'answer' (or 'tuned_answer' / 'base_answer')")
    elif not isinstance(obj[answer_key], str):
        problems.append(f"{at}: {answer_key}: must be a string, got {_type(obj[answer_key])}")
    else:
        answer = obj[answer_key]
    passed, score = _grade(obj.get("grade"), "grade" in obj, at, pass_threshold, problems)
    failure = _label_fields(obj, at, problems)
    cluster = obj.get("cluster")
    if cluster is not None and not isinstance(cluster, str):
        problems.append(f"{at}: cluster: must be a string, got {_type(cluster)}")
    if problems:
        return None, problems
    row = EvalRow(
        id=item_id, prompt=prompt, messages=messages, answer=answer, expected=_text_or_none(obj.get("expected")),
        passed=passed, failure=failure or cluster or UNLABELLED, cluster=cluster, score=score, source=source, line=n,
    )
    return row, []


def _grade(value: Any, present: bool, at: str, threshold: float, problems: list[str]) -> tuple[bool, float | None]:
    if not present:
        problems.append(f"{at}: grade: missing; give true/false, \"pass\"/\"fail\", or a score (>= {threshold:g} passes)")
        return False, None
    if isinstance(value, bool):  # before the number check: True is an int in Python
        return value, None
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            problems.append(f"{at}: grade: {value} is not a finite score")
            return False, None
        return value >= threshold, float(value)
    if isinstance(value, str) and value.strip().lower() in PASS_WORDS:
        return PASS_WORDS[value.strip().lower()], None
    problems.append(f"{at}: grade: {value!r} is not a grade; use true/false, \"pass\"/\"fail\", or a number")
    return False, None


def _label_fields(obj: dict, at: str, problems: list[str]) -> str | None:
    labels = {}
    for key in ("failure", "failure_label"):
        value = obj.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            problems.append(f"{at}: {key}: must be a string, got {_type(value)}")
        elif value.strip():
            labels[key] = value.strip()
    if len(set(labels.values())) > 1:
        problems.append(f"{at}: failure: 'failure' is {labels['failure']!r} but 'failure_label' is {labels['failure_label']!r}; keep one")
    return next(iter(labels.values()), None)


# ----- clusters


def failure_clusters(rows: Iterable[EvalRow]) -> list[Cluster]:
    """Group the failing rows by failure label, largest cluster first (ties by label)."""
    failures = [r for r in rows if not r.passed]
    groups: dict[str, list[EvalRow]] = {}
    for row in failures:
        groups.setdefault(row.failure, []).append(row)
    clusters = [Cluster(label, tuple(group), len(group) / len(failures)) for label, group in groups.items()]
    return sorted(clusters, key=lambda c: (-c.count, c.label))


def format_clusters(clusters: list[Cluster], examples: int = 2, *, width: int = 100) -> str:
    """A terminal view of the clusters: count, share of failures, and a few examples each (control characters escaped)."""
    if not clusters:
        return "No failures: every item passed."
    total = sum(c.count for c in clusters)
    labels = {c.label: escape_controls(c.label) for c in clusters}
    label_width = max(len(shown) for shown in labels.values())
    lines = [f"{total} failure(s) in {len(clusters)} cluster(s)", ""]
    for c in clusters:
        lines.append(f"{labels[c.label]:<{label_width}}  {c.count:>5}  {c.share:6.1%}")
        for row in c.rows[:examples]:
            shown_id = escape_controls(row.id)
            lines.append(f"    [{shown_id}] prompt:   {_clip(row.question, width)}")
            lines.append(f"    {' ' * (len(shown_id) + 2)} model:    {_clip(row.answer, width)}")
            expected = "(none given)" if row.expected is None else _clip(row.expected, width)
            lines.append(f"    {' ' * (len(shown_id) + 2)} expected: {expected}")
        if c.count > examples > 0:
            lines.append(f"    ... and {c.count - examples} more")
        lines.append("")
    return escape_lines(lines).rstrip() + "\n"


def _clip(text: str, width: int) -> str:
    # One line per field: a newline would break the layout, so lines are joined with spaces; escaped before
    # clipping so the width counts what the terminal shows.
    flat = " ".join(part.strip() for part in text.strip().splitlines()) if "\n" in text else text.strip()
    flat = escape_controls(flat)
    return flat if len(flat) <= width else flat[: width - 1].rstrip() + "…"


# ----- the review file


def export_review(rows: Cluster | Iterable[EvalRow], path: str | Path, *, overwrite: bool = False) -> Path:
    """Write a review file (JSONL) for a person to fill in `corrected`; returns its path.

    Refuses, whatever `overwrite` says, when `path` is a review file with any
    correction filled in. Another existing file is replaced only with
    `overwrite=True`; an existing review with every `corrected` still empty is
    replaced freely (nothing of a person's is in it).
    """
    path = Path(path).expanduser()
    items = list(rows.rows if isinstance(rows, Cluster) else rows)
    if not items:
        raise DataError(f"{path}: nothing to review: no rows were given", hint="pick a cluster that has failures (see `mlxft data failures`)")
    refuse_writing_over_inputs([path], {row.source for row in items if row.source}, hint="write the review to another file (--out)")
    if path.is_dir():
        raise DataError(f"{path}: is a folder", hint="give --out a file for the review, e.g. review.jsonl")
    if path.exists():
        _refuse_to_replace_review(path, overwrite)
    write_review_entries([review_entry(row) for row in items], path)
    return path


def review_entry(row: EvalRow) -> dict:
    """One line of a review file: the item, the model's answer, and `corrected` left empty for a person."""
    entry: dict[str, Any] = {"id": row.id}
    if row.messages is not None:
        entry["messages"] = list(row.messages)
    else:
        entry["prompt"] = row.prompt
    entry.update(model_answer=row.answer, expected=row.expected, failure=row.failure, corrected="")
    return entry


def write_review_entries(entries: Iterable[dict], path: str | Path) -> None:
    """Write review lines atomically (a crash leaves the old file whole); callers decide whether replacing is allowed."""
    path = Path(path)
    with explain_write_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries))


def read_review_entries(path: str | Path) -> list[dict]:
    """Every line of a review file as written, filled in or not, after `read_review`'s checks (a bad file is a DataError)."""
    read_review(path)
    return [obj for _n, obj, _problem in _json_lines(Path(path))]


def _refuse_to_replace_review(path: Path, overwrite: bool) -> None:
    filled, is_review = [], True
    for n, obj, problem in _json_lines(path):
        if problem or "corrected" not in obj:
            is_review = False
            continue
        if isinstance(obj["corrected"], str) and obj["corrected"].strip():
            filled.append(n)
    if filled:
        shown = ", ".join(map(str, filled[:10])) + (" ..." if len(filled) > 10 else "")
        raise DataError(
            f"{path}: already holds {len(filled)} correction(s) (lines {shown}); it will not be replaced",
            hint="build from it with `mlxft data build`, or export to another file; move it away yourself to start over",
        )
    if not is_review and not overwrite:
        raise DataError(f"{path}: already exists and is not an empty review file", hint="choose another path, or pass --overwrite (overwrite=True)")


def read_review(path: str | Path) -> ReviewResult:
    """Read a review file back; lines with an empty `corrected` are skipped and counted, bad lines reported at once."""
    path = Path(path)
    items: list[ReviewItem] = []
    discarded: list[str] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for n, obj, problem in _json_lines(path):
        if problem:
            problems.append(problem)
            continue
        at = f"{path}:{n}"
        line_problems: list[str] = []
        item_id = _id_field(obj, at, line_problems)
        prompt, messages = _prompt_fields(obj, at, line_problems)
        model_answer = obj.get("model_answer")
        if not isinstance(model_answer, str):
            line_problems.append(f"{at}: model_answer: must be a string, got {_type(model_answer)}")
        corrected = obj.get("corrected")
        if corrected is not None and not isinstance(corrected, str):
            line_problems.append(f"{at}: corrected: must be a string, got {_type(corrected)}")
        failure = obj.get("failure")
        if failure is not None and not isinstance(failure, str):
            line_problems.append(f"{at}: failure: must be a string, got {_type(failure)}")
        if item_id is not None and item_id in seen:
            line_problems.append(f"{at}: id: {item_id!r} is already used on line {seen[item_id]}")
        if line_problems:
            problems.extend(line_problems)
            continue
        seen[item_id] = n
        if not (corrected or "").strip():
            discarded.append(item_id)
            continue
        items.append(ReviewItem(
            id=item_id, prompt=prompt, messages=messages, model_answer=model_answer, corrected=corrected,
            expected=_text_or_none(obj.get("expected")), failure=failure or UNLABELLED, line=n,
        ))
    if problems:
        raise DataError(
            f"{path}: {len(problems)} problem(s) in the review file\n" + "\n".join(f"  {p}" for p in problems),
            hint="fix these lines; leave 'corrected' as \"\" to skip an item rather than deleting its fields",
        )
    if not items and not discarded:
        raise DataError(f"{path}: the review file is empty", hint="export one with `mlxft data review` first")
    return ReviewResult(str(path), tuple(items), len(discarded), tuple(discarded))


# ----- training sets


def build_training_sets(
    review: ReviewResult | str | Path,
    *,
    out_dir: str | Path,
    sft_format: Literal["chat", "completion"] = "chat",
    keep_passing: Iterable[EvalRow] | None = None,
    keep_ratio: float = 1.0,
    seed: int = 0,
    valid_fraction: float = 0.1,
    overwrite: bool = False,
) -> BuildResult:
    """Write an SFT set and preference pairs from the corrections, as mlx-lm's train.jsonl / valid.jsonl.

    - `out_dir/sft`: the correction is the target (the assistant turn in chat
      format, `completion` in completion format).
    - `out_dir/preference`: prompt, chosen = the correction, rejected = the
      model's wrong answer. A correction equal to the model's answer gives no
      contrast, so it is left out of the pairs (counted in `pairs_skipped`).
    - `keep_passing`: items the model already passes, with its own answer as the
      target, so tuning does not cost what it can do; up to `keep_ratio` of them
      per correction are sampled (seeded) into the SFT set only.
    - Valid rows are held out per failure label (see `split_rows`); the pairs use
      the same held-out items as the SFT set.
    Refuses an `out_dir` that already holds files unless `overwrite=True`.
    """
    if not isinstance(review, ReviewResult):
        review = read_review(review)
    out_dir = Path(out_dir).expanduser()
    problems = []
    if sft_format not in ("chat", "completion"):
        problems.append(f"sft_format (--format): {sft_format!r} is not 'chat' or 'completion'")
    if not (0 <= valid_fraction < 1):
        problems.append(f"valid_fraction (--valid-fraction): {valid_fraction} must be >= 0 and < 1")
    if not (keep_ratio >= 0 and math.isfinite(keep_ratio)):
        problems.append(f"keep_ratio (--keep-ratio): {keep_ratio} must be a finite number >= 0")
    if problems:
        raise DataError("cannot build training sets:\n" + "\n".join(f"  {p}" for p in problems),
                        hint="e.g. --valid-fraction 0.1 (a tenth held out) --keep-ratio 1 (one passing example per correction)")
    if not review.items:
        raise DataError(f"cannot build training sets: {review.source}: no corrections filled in ({review.discarded} empty)",
                        hint="fill 'corrected' in the review file for the items you want to train on")
    keep_passing = list(keep_passing or [])
    paths = {key: out_dir / f"{key}.jsonl" for key in ("sft/train", "sft/valid", "preference/train", "preference/valid")}
    refuse_writing_over_inputs(paths.values(), [review.source, *{r.source for r in keep_passing if r.source}], hint="build into another folder (--out)")
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir}: is a file, not a folder", hint="give a folder for the training sets")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise DataError(f"{out_dir}: already exists and is not empty", hint="choose another folder, or pass --overwrite (overwrite=True) to replace the sets in it")

    passing = _sample_passing(keep_passing, review, keep_ratio, seed)
    if sft_format == "completion":
        chat_only = [f"review line {i.line} (id {i.id!r})" for i in review.items if i.prompt is None]
        chat_only += [f"{r.where} (id {r.id!r})" for r in passing if r.prompt is None]
        if chat_only:
            raise DataError(
                f"{len(chat_only)} item(s) are conversations and have no single prompt for the completion format:\n"
                + "\n".join(f"  {c}" for c in chat_only),
                hint="use sft_format='chat' (--format chat)",
            )

    fractions = (1 - valid_fraction, valid_fraction)
    review_split = split_rows(list(review.items), fractions=fractions, seed=seed, label_key="failure")
    passing_split = split_rows(passing, fractions=fractions, seed=seed, label_key="failure")
    rng = random.Random(seed)
    sets: dict[str, list[dict]] = {}
    skipped = 0
    for name in ("train", "valid"):
        sft = [_sft_row(i.prompt, i.messages, i.corrected, sft_format) for i in review_split[name]]
        sft += [_sft_row(r.prompt, r.messages, r.answer, sft_format) for r in passing_split[name]]
        rng.shuffle(sft)  # so the kept examples are not all at the end of the file
        pairs = [_preference_row(i, sft_format) for i in review_split[name] if i.corrected.strip() != i.model_answer.strip()]
        skipped += len(review_split[name]) - len(pairs)
        sets[f"sft/{name}"], sets[f"preference/{name}"] = sft, pairs

    with explain_write_errors(out_dir):
        for key, rows in sets.items():
            paths[key].parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(paths[key], "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return BuildResult(
        out_dir=out_dir, paths=paths,
        sft_train=len(sets["sft/train"]), sft_valid=len(sets["sft/valid"]),
        preference_train=len(sets["preference/train"]), preference_valid=len(sets["preference/valid"]),
        corrections=review.used, passing_kept=len(passing), pairs_skipped=skipped,
    )


def _sample_passing(rows: Iterable[EvalRow] | None, review: ReviewResult, ratio: float, seed: int) -> list[EvalRow]:
    if not rows:
        return []
    reviewed = {i.id for i in review.items}
    # Only passing items the person did not correct: a failing row's answer must never become a target.
    pool = [r for r in rows if r.passed and r.id not in reviewed]
    k = min(len(pool), round(ratio * review.used))
    picked = random.Random(seed).sample(pool, k)
    return sorted(picked, key=lambda r: (r.source, r.line))


def _sft_row(prompt: str | None, messages: tuple[dict, ...] | None, target: str, fmt: str) -> dict:
    if fmt == "completion":
        return {"prompt": prompt, "completion": target}
    turns = list(messages) if messages is not None else [{"role": "user", "content": prompt}]
    return {"messages": turns + [{"role": "assistant", "content": target}]}


def _preference_row(item: ReviewItem, fmt: str) -> dict:
    if fmt == "completion":
        return {"prompt": item.prompt, "chosen": item.corrected, "rejected": item.model_answer}
    # The conversational preference layout (as TRL reads it): prompt turns, then one assistant turn each.
    turns = list(item.messages) if item.messages is not None else [{"role": "user", "content": item.prompt}]
    return {
        "prompt": turns,
        "chosen": [{"role": "assistant", "content": item.corrected}],
        "rejected": [{"role": "assistant", "content": item.model_answer}],
    }


# ----- shared field checks


def _json_lines(path: Path):
    """Yield (line number, object, problem) for every non-blank line; a missing file is a DataError."""
    if not path.is_file():
        raise DataError(f"{path}: no such file", hint="check the path")
    # The data readers' own line reader: the same row-size, nesting and UTF-8 checks as training data.
    for row in iter_jsonl_rows(path):
        yield (row.line, None, f"{row.where}: {row.reason}") if isinstance(row, RowError) else (row.line, row.data, None)


def _id_field(obj: dict, at: str, problems: list[str]) -> str | None:
    value = obj.get("id")
    if isinstance(value, bool) or not isinstance(value, (str, int)) or (isinstance(value, str) and not value.strip()):
        problems.append(f"{at}: id: {'missing' if value is None else f'{value!r} is not a string or integer'}; every item needs a unique id")
        return None
    return str(value)


def _prompt_fields(obj: dict, at: str, problems: list[str]) -> tuple[str | None, tuple[dict, ...] | None]:
    has_prompt, has_messages = obj.get("prompt") is not None, obj.get("messages") is not None
    if has_prompt == has_messages:
        problems.append(f"{at}: prompt: give exactly one of 'prompt' (a string) or 'messages' (a list of {{role, content}})")
        return None, None
    if has_prompt:
        if not isinstance(obj["prompt"], str):
            problems.append(f"{at}: prompt: must be a string, got {_type(obj['prompt'])}")
            return None, None
        return obj["prompt"], None
    msgs = obj["messages"]
    if not isinstance(msgs, list) or not msgs:
        problems.append(f"{at}: messages: must be a non-empty list of {{role, content}}")
        return None, None
    ok = True
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or m.get("role") not in ROLES:
            problems.append(f"{at}: messages[{i}]: must be {{role, content}} with role one of {', '.join(ROLES)} and string content")
            ok = False
    if ok and msgs[-1]["role"] == "assistant":
        problems.append(f"{at}: messages: the last turn is the assistant's; give the conversation up to the model's answer, and the answer separately")
        ok = False
    return (None, tuple({"role": m["role"], "content": m["content"]} for m in msgs)) if ok else (None, None)


def _text_or_none(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)  # a structured reference answer is kept, as JSON text


def _last_user_turn(messages: Iterable[dict]) -> str:
    users = [m["content"] for m in messages if m["role"] == "user"]
    return users[-1] if users else ""


def _type(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__
