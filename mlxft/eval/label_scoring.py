"""`mlxft eval --score labels`: answer a labelled benchmark by ranking its candidate labels instead of generating.

Each candidate's score is the summed log-probability of its tokens and then the end-of-turn token after the prompt,
so a label counts as a *whole* answer ("Paris" then <|im_end|>, not "Paris is the..."). The model cannot write a
sentence instead of a label, and an item costs one batched forward pass (its prompt once per candidate) rather than
a decode loop of up to max_tokens steps.

Candidates of an item: its one-of grader's `labels`, else every distinct expected answer of the benchmark (a
classification benchmark lists each label as some item's answer). Items whose answers are not labels (json and
regex graders, non-string answers) are refused by id.
"""

from __future__ import annotations

import numpy as np

from mlxft.errors import DataError

SCORABLE_GRADERS = ("exact", "one-of", "contains")


def _strings(expected) -> list[str] | None:
    values = expected if isinstance(expected, list) else [expected]
    if not values or not all(isinstance(v, str) and v.strip() for v in values):
        return None
    return values


def candidates_for(items, labels: list[str] | None = None) -> list[list[str]]:
    """Each item's candidate labels (see the module docstring); `labels` given overrides them for every item."""
    problems = []
    for it in items:
        if it.grader.kind not in SCORABLE_GRADERS:
            problems.append(f"{it.id} (line {it.line}): grader {it.grader.kind} grades free text, not a label")
        elif _strings(it.expected) is None:
            problems.append(f"{it.id} (line {it.line}): expected {it.expected!r} is not a label (a non-empty string or a list of them)")
    if problems:
        shown = "\n  ".join(problems[:8]) + (f"\n  ... and {len(problems) - 8} more" if len(problems) > 8 else "")
        raise DataError(f"--score labels ranks candidate labels, and {len(problems)} item(s) have no label to rank:\n  {shown}",
                        hint="use --score generate for this benchmark, or give those items an exact or one-of grader and a label")
    if labels:
        return [list(dict.fromkeys(labels)) for _ in items]
    pool = list(dict.fromkeys(v for it in items for v in _strings(it.expected)))
    out = []
    for it in items:
        own = list(it.grader.labels or []) if it.grader.kind == "one-of" else []
        out.append(list(dict.fromkeys(own)) if own else pool)
    if all(len(c) < 2 for c in out):
        raise DataError("--score labels needs at least two candidate labels, and this benchmark has one expected answer",
                        hint="list the labels: --labels negative,positive (or give the items a one-of grader with labels)")
    return out


def _end_token(tokenizer) -> int | None:
    hf = getattr(tokenizer, "_tokenizer", tokenizer)
    eos = getattr(hf, "eos_token_id", None)
    return int(eos) if eos is not None else None


def score_labels(model, tokenizer, texts: list[str], candidates: list[list[str]], *, model_type: str = "", batch_size: int = 8,
                 share_prompt: bool = True, on_batch=lambda done: None) -> list[dict[str, float]]:
    """For each rendered prompt, {candidate: summed log-probability of candidate + end token}, best first.

    Where the architecture's body and LM head run apart, the head is applied at the candidates' positions only.
    """
    import mlx.core as mx

    from mlxft.llm.generate import prompt_ids
    from mlxft.llm.objective import split_forward

    parts = split_forward(model, model_type)

    hf = getattr(tokenizer, "_tokenizer", tokenizer)
    end = _end_token(tokenizer)
    token_cache: dict[str, np.ndarray] = {}

    def tokens(label: str) -> np.ndarray:
        if label not in token_cache:
            ids = list(hf(label, add_special_tokens=False)["input_ids"]) + ([end] if end is not None else [])
            token_cache[label] = np.asarray(ids, np.int32)
        return token_cache[label]

    pad = getattr(hf, "pad_token_id", None)
    pad = int(pad if pad is not None else (end if end is not None else 0))
    results: list[dict[str, float]] = []
    # Items with the same candidate list share a batch (the usual case: one list for the whole benchmark).
    start = 0
    while start < len(texts):
        group = [start]
        while len(group) < batch_size and start + len(group) < len(texts) and candidates[start + len(group)] == candidates[start]:
            group.append(start + len(group))
        labels = candidates[start]
        words = [tokens(x) for x in labels]
        prompts = [np.asarray(prompt_ids(tokenizer, texts[i]), np.int32) for i in group]
        shared = _shared_prompt_scores(model, parts, prompts, words, pad) if share_prompt else None
        if shared is not None:
            _record(results, shared, labels)
            start += len(group)
            on_batch(len(results))
            continue
        inputs, positions, targets, tmask = _pair_arrays(prompts, words, pad)
        if parts is not None:
            h = parts[0](inputs)
            rows = parts[1](mx.take(h.reshape(-1, h.shape[-1]), positions.reshape(-1), axis=0)).astype(mx.float32)
        else:
            logits = model(inputs)
            rows = mx.take(logits.reshape(-1, logits.shape[-1]), positions.reshape(-1), axis=0).astype(mx.float32)
        logp = mx.take_along_axis(rows, targets.reshape(-1, 1), axis=-1)[:, 0] - mx.logsumexp(rows, axis=-1)
        _record(results, np.array((logp.reshape(tmask.shape) * tmask).sum(axis=-1).reshape(len(group), len(labels))), labels)
        start += len(group)
        on_batch(len(results))
    return results


def _record(results: list, scores: np.ndarray, labels: list[str]) -> None:
    for row in scores:
        order = np.argsort(-row, kind="stable")
        results.append({labels[k]: float(row[k]) for k in order})


def _shared_prompt_scores(model, parts, prompts: list[np.ndarray], words: list[np.ndarray], pad: int) -> np.ndarray | None:
    """[B, K] scores with each prompt run once: left-padded prompts fill a batched KV cache, then each candidate's
    tokens (the same for every row) run on it and are trimmed off again. None where the model's cache is not plain."""
    import mlx.core as mx
    from mlx_lm.models.cache import BatchKVCache, KVCache, make_prompt_cache

    if not all(type(c) is KVCache for c in make_prompt_cache(model)):
        return None
    body, head = parts if parts is not None else (None, None)

    def log_probs(x, cache):
        out = head(body(x, cache=cache)) if body is not None else model(x, cache=cache)
        out = out.astype(mx.float32)
        return out - mx.logsumexp(out, axis=-1, keepdims=True)

    B, longest = len(prompts), max(len(p) for p in prompts)
    ids = np.full((B, longest), pad, np.int32)
    for i, p in enumerate(prompts):
        ids[i, longest - len(p):] = p
    cache = [BatchKVCache([longest - len(p) for p in prompts]) for _ in range(len(make_prompt_cache(model)))]
    if body is not None:
        h = body(mx.array(ids), cache=cache)[:, -1]
        first = head(h).astype(mx.float32)
        first = first - mx.logsumexp(first, axis=-1, keepdims=True)
    else:
        first = log_probs(mx.array(ids), cache)[:, -1]
    mx.eval(first, [c.state for c in cache])
    scores = np.zeros((B, len(words)), np.float64)
    for k, w in enumerate(words):
        total = first[:, int(w[0])]
        if len(w) > 1:
            rest = log_probs(mx.array(np.tile(w[:-1], (B, 1))), cache)  # position i predicts w[i + 1]
            total = total + mx.take_along_axis(rest, mx.array(np.tile(w[1:], (B, 1)))[..., None], axis=-1)[..., 0].sum(axis=-1)
            for c in cache:
                c.trim(len(w) - 1)
        scores[:, k] = np.array(total)
    return scores


def _pair_arrays(prompts: list[np.ndarray], words: list[np.ndarray], pad: int):
    """Each prompt once per candidate with the candidate's tokens after it, right-padded:
    (inputs [B*K, L], positions [B*K, T] (flat into B*K*L: the positions that predict each candidate token),
    targets [B*K, T], mask [B*K, T])."""
    import mlx.core as mx

    K, T = len(words), max(len(w) for w in words)
    seqs = [np.concatenate([p, w]) for p in prompts for w in words]
    L = -(-max(len(s) for s in seqs) // 8) * 8
    ids = np.full((len(seqs), L), pad, np.int32)
    positions = np.zeros((len(seqs), T), np.int32)
    targets = np.zeros((len(seqs), T), np.int32)
    mask = np.zeros((len(seqs), T), np.float32)
    for b, p in enumerate(prompts):
        for c, w in enumerate(words):
            r, n = b * K + c, len(w)
            ids[r, : len(p) + n] = seqs[r]
            positions[r, :n] = r * L + len(p) - 1 + np.arange(n)  # position i predicts token i + 1
            targets[r, :n], mask[r, :n] = w, 1.0
    return mx.array(ids), mx.array(positions), mx.array(targets), mx.array(mask)
