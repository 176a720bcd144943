"""Peak-memory planning for a causal-LM training run before any weights are loaded: an estimate from config.json
numbers, a verdict against this machine's memory, and cheaper settings.

The estimate models mlx-lm's Llama/Qwen-style blocks and was calibrated on MLX's CPU backend against
`mx.get_peak_memory()` for full training steps (forward, backward, AdamW update); see
`benchmarks/memory_plan.py`. Memory is in GB (10**9 bytes) and judged against `mlxft.backend.memory_to_judge()`,
as everywhere mlxft prints memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import get_args

from mlxft.backend import (  # noqa: F401  (judge, FIT_MARKS, Verdict: the verdict every memory table shares, named here too)
    FIT_MARKS,
    GB,
    RUNTIME_OVERHEAD_BYTES,
    TIGHT_FRACTION,
    Verdict,
    default_compute_dtype,
    default_device_is_gpu,
    judge,
    memory_to_judge,
)
from mlxft.catalogue import format_parameter_count  # noqa: F401  (the catalogue tables' format, named here too)
from mlxft.errors import MlxftError, ModelError
from mlxft.job import total_steps_for
from mlxft.llm.batch_shapes import DataLengths, candidate_batches, ceiling_batch
from mlxft.llm.packing import attention_cost, packable
from mlxft.recipe import CLASSIFY_KINDS, PREFERENCE_KINDS, LoraSection, TrainSection

OVERHEAD_BYTES = RUNTIME_OVERHEAD_BYTES
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
LOGIT_COPIES = 4  # CPU: logits, max-shifted logits, softmax and the scattered target gradient, float32 (measured)
LOGIT_COPIES_GPU = 3  # GPU: fused cross-entropy keeps the logits and makes their gradient (not measured: no GPU here)
# With gradient checkpointing the step peaks while the last block is recomputed and the loss's backward is under way;
# how many logit copies are still alive then is MLX's evaluation order's choice: measured 1.9 on SmolLM2-135M
# (30 blocks, vocabulary 49k: 4 x 512 tokens with 128 to 2,048 trained) and 3.4 on an 8-block model with an 8k
# vocabulary. The plan takes the middle.
LOGIT_COPIES_CHECKPOINTED = 2.5
UPDATE_COPIES = 2.05  # full fine-tuning: the compiled AdamW step's new state, in copies of the weights (measured)
UPDATE_VOCAB_COPIES = 1.6  # and its extra working copies of the vocabulary matrices (measured, tied and untied)
MARGIN = 1.05  # on activations and logits: the measured peak varies ~3% from run to run

# Which part of a block a LoRA target sits in decides which activations its gradient keeps alive.
_ATTN_IN = {"q_proj", "k_proj", "v_proj", "qkv_proj", "query_key_value", "wqkv", "c_attn", "q", "k", "v"}
_ATTN_OUT = {"o_proj", "out_proj", "dense", "wo", "o"}
_MLP_IN = {"gate_proj", "up_proj", "gate_up_proj", "w1", "w3", "fc1", "c_fc"}
_MLP_OUT = {"down_proj", "w2", "fc2"}
_ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class _Shape:
    """The architecture numbers the estimate needs, read from a config.json dict."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    attention_bias: bool
    norms_per_layer: int
    qk_norm: bool
    logit_softcap: bool

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def target_dims(self, name: str) -> tuple[int, int]:
        """(input, output) features of the linear layer a LoRA target names."""
        D, I, q, kv = self.hidden, self.intermediate, self.q_dim, self.kv_dim
        dims = {
            "q_proj": (D, q), "k_proj": (D, kv), "v_proj": (D, kv), "o_proj": (q, D),
            "qkv_proj": (D, q + 2 * kv), "query_key_value": (D, q + 2 * kv), "wqkv": (D, q + 2 * kv),
            "gate_proj": (D, I), "up_proj": (D, I), "down_proj": (I, D), "gate_up_proj": (D, 2 * I),
            "w1": (D, I), "w3": (D, I), "w2": (I, D), "fc1": (D, I), "fc2": (I, D),
        }
        return dims.get(name, (D, D))  # an unknown name: sized like a square projection


_ALIASES = {
    "hidden_size": ("hidden_size", "n_embd", "d_model"),
    "num_hidden_layers": ("num_hidden_layers", "n_layer", "num_layers"),
    "num_attention_heads": ("num_attention_heads", "n_head"),
    "vocab_size": ("vocab_size",),
}


def _shape(config: dict) -> _Shape:
    # Multimodal configs (Gemma 3, Qwen2-VL style) keep the language model under text_config.
    if isinstance(config.get("text_config"), dict):
        config = {**config, **config["text_config"]}
    found, missing = {}, []
    for key, names in _ALIASES.items():
        value = next((config[n] for n in names if config.get(n) is not None), None)
        if value is None:
            missing.append(key)
        found[key] = value
    if missing:
        raise ModelError(
            f"the model config lacks {', '.join(missing)}, so its memory cannot be estimated",
            hint="give a Hugging Face config.json of a decoder-only language model",
        )
    hidden, heads = int(found["hidden_size"]), int(found["num_attention_heads"])
    intermediate = config.get("intermediate_size") or config.get("n_inner") or config.get("ffn_dim") or 4 * hidden
    model_type = str(config.get("model_type", ""))
    return _Shape(
        hidden=hidden,
        intermediate=int(intermediate),
        layers=int(found["num_hidden_layers"]),
        heads=heads,
        kv_heads=int(config.get("num_key_value_heads") or heads),
        head_dim=int(config.get("head_dim") or hidden // heads),
        vocab=int(found["vocab_size"]),
        # Hugging Face's default is untied; assuming so when unsaid errs towards more memory.
        tied=bool(config.get("tie_word_embeddings", False)),
        attention_bias=bool(config.get("attention_bias", model_type == "qwen2")),
        norms_per_layer=4 if model_type.startswith(("gemma2", "gemma3")) else 2,
        qk_norm=model_type.startswith(("qwen3", "gemma3", "olmo2")),
        logit_softcap=bool(config.get("final_logit_softcapping")),
    )


def _parameter_counts(s: _Shape) -> tuple[int, int]:
    """(parameters in quantizable matrices, other parameters: norms and biases)."""
    per_layer = 2 * s.hidden * s.q_dim + 2 * s.hidden * s.kv_dim + 3 * s.hidden * s.intermediate
    matrices = s.layers * per_layer + s.vocab * s.hidden * (1 if s.tied else 2)
    small = s.norms_per_layer * s.hidden + (2 * s.head_dim if s.qk_norm else 0)
    small += (s.q_dim + 2 * s.kv_dim) if s.attention_bias else 0
    return matrices, s.layers * small + s.hidden


def count_parameters(config: dict) -> int:
    """The parameter count implied by a config.json dict (Llama/Qwen-style blocks, embeddings counted once if tied)."""
    matrices, small = _parameter_counts(_shape(config))
    return matrices + small


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes alive at the peak of one training step, by what holds them; `total` adds the fixed runtime overhead."""

    weights: int  # the base model (for full fine-tuning: the trained weights themselves)
    trainable: int  # trainable parameters not already in `weights`: the LoRA/DoRA adapters
    gradients: int  # those alive at the peak (full fine-tuning: with the optimizer step's temporaries)
    optimizer: int  # AdamW: two states per trainable parameter, in the parameter's dtype (as MLX keeps them)
    activations: int  # what the backward pass needs from the forward pass, plus one layer's working set
    logits: int  # batch x seq x vocab, float32, times the copies cross-entropy and its gradient make
    overhead: int
    parameters: int  # counts, for reports
    trainable_parameters: int

    @property
    def arrays(self) -> int:
        """The part MLX's allocator sees: comparable to `mx.get_peak_memory()`."""
        return self.weights + self.trainable + self.gradients + self.optimizer + self.activations + self.logits

    @property
    def total(self) -> int:
        return self.arrays + self.overhead


def estimate_memory(
    config: dict,
    *,
    method: str = "lora",
    quant_bits: int | None = None,
    group_size: int = 64,
    rank: int = 8,
    targets: list[str] | str = "all-linear",
    lora_layers: int | str = "all",
    batch_size: int = 4,
    seq_len: int = 2048,
    trained_tokens: int | None = None,
    compute_dtype: str = "float32",
    grad_checkpoint: bool = False,
    gpu: bool = False,
) -> MemoryEstimate:
    """Estimate the peak memory of one training step from a config.json dict and the training settings.

    method is 'lora', 'dora' or 'full'; quant_bits None or 4/8 (the base is quantized, embeddings included,
    as mlx-lm does); targets a list of module names or 'all-linear'; lora_layers the last N blocks or 'all'.
    The batch is batch_size x seq_len positions (padded), of which trained_tokens get loss (None: all of them);
    mlxft applies the LM head to trained positions only (objective.SPLIT_HEAD_TYPES), so they size the logits.
    gpu says MLX runs on a GPU backend (Metal, CUDA), whose fused attention keeps no batch x heads x seq x seq
    scores for the backward pass and whose fused cross-entropy makes fewer copies of the logits; MLX's CPU
    backend composes both from plain ops (this is what the calibration measured).
    """
    if method not in ("lora", "dora", "full"):
        raise MlxftError(f"unknown training method {method!r}", hint="use 'lora', 'dora' or 'full'")
    if compute_dtype not in DTYPE_BYTES:
        raise MlxftError(f"unknown compute dtype {compute_dtype!r}", hint=f"use one of {', '.join(DTYPE_BYTES)}")
    if method == "full" and quant_bits:
        raise MlxftError("full fine-tuning cannot train a quantized base", hint="use LoRA (QLoRA) on a quantized base")
    s = _shape(config)
    b = DTYPE_BYTES[compute_dtype]
    full = method == "full"

    matrices, small = _parameter_counts(s)
    parameters = matrices + small
    if quant_bits:
        # Packed weights plus a scale and a bias per group, both in the compute dtype.
        weights = math.ceil(matrices * quant_bits / 8) + math.ceil(matrices / group_size) * 2 * b + small * b
    else:
        weights = parameters * b

    names = list(_ALL_LINEAR) if targets == "all-linear" else [t.rsplit(".", 1)[-1] for t in targets]
    adapted = s.layers if full or lora_layers == "all" else max(0, min(int(lora_layers), s.layers))
    if full:
        trainable_parameters = parameters
        trainable = 0
        gradients = parameters * b
        optimizer = 2 * parameters * b
    else:
        per_layer = sum(rank * sum(s.target_dims(n)) + (s.target_dims(n)[1] if method == "dora" else 0) for n in names)
        trainable_parameters = adapted * per_layer
        trainable = gradients = 4 * trainable_parameters  # adapters are created in float32
        optimizer = 2 * trainable

    tokens = batch_size * seq_len
    D, I = s.hidden, s.intermediate
    # Per token and adapted block, in compute-dtype elements (calibrated on LoRA of q/k/v/o): block input,
    # two norm outputs, q/k/v after RoPE, the attention output, and the MLP's gate, up and SiLU intermediates.
    saved = 3 * D + 2 * s.q_dim + 2 * s.kv_dim + 4 * I
    roles = {_role(n) for n in names}
    if not full and "attn_in" not in roles:
        saved -= D  # nobody needs the first norm's output for a weight gradient
    if not full and "attn_out" not in roles:
        saved -= s.q_dim  # nor the attention output
    if full or "mlp_in" in roles:
        saved += D  # the second norm's output feeds the gate/up weight gradients
    if full or "mlp_out" in roles:
        saved += I  # the SwiGLU output feeds the down_proj weight gradient
    if not full:
        saved += rank * len(names)  # x @ A for each adapter
    if method == "dora":
        saved += sum(s.target_dims(n)[1] for n in names)  # the unnormalised output, for the magnitude's gradient
    scores = 0 if gpu else s.heads * seq_len * b  # softmax(QK^T) per query, per head
    # The fused kernel instead keeps its output and a float32 log-sum-exp per query and head.
    fused = (s.q_dim * b + s.heads * 4) if gpu else 0
    layer_bytes = saved * b + scores + fused
    working = (7 * D + 4 * I) * b + scores  # one block's backward, plus the final norm and head inputs (measured)
    if grad_checkpoint:
        # Only block inputs stay, and one block is recomputed at a time during the backward pass.
        activations = tokens * (adapted * D * b + layer_bytes + working)
    else:
        activations = tokens * (adapted * layer_bytes + working)
    if method == "dora" and quant_bits:
        # DoRA dequantizes each adapted weight, and the matmul keeps it for the backward pass.
        activations += adapted * sum(math.prod(s.target_dims(n)) for n in names) * b

    copies = LOGIT_COPIES_GPU if gpu else LOGIT_COPIES_CHECKPOINTED if grad_checkpoint else LOGIT_COPIES
    copies += 2 if s.logit_softcap else 0  # tanh soft-capping keeps two more
    trained = tokens if trained_tokens is None else min(int(trained_tokens), tokens)
    logits = (trained if _head_on_trained_rows(config) else tokens) * s.vocab * 4 * copies
    activations, logits = activations * MARGIN, logits * MARGIN

    if full:
        # Full fine-tuning peaks at one of two moments (measured). Early in the backward pass all activations
        # are alive but only the vocabulary matrices have gradients. At the optimizer step every gradient is, and
        # the compiled update builds the new weights and Adam states before the old ones are let go (held by the
        # model and the optimizer until it returns), plus working copies of the largest (vocabulary) matrices.
        vocab_matrices = s.vocab * s.hidden * b * (1 if s.tied else 2)
        update = UPDATE_COPIES * parameters * b + UPDATE_VOCAB_COPIES * vocab_matrices
        early = activations + logits + vocab_matrices
        late = gradients + update
        if early >= late:
            gradients = vocab_matrices
        else:
            gradients, activations, logits = gradients + update, 0, 0

    return MemoryEstimate(
        weights=int(weights),
        trainable=int(trainable),
        gradients=int(gradients),
        optimizer=int(optimizer),
        activations=int(activations),
        logits=int(logits),
        overhead=OVERHEAD_BYTES,
        parameters=int(parameters),
        trainable_parameters=int(trainable_parameters),
    )


def _head_on_trained_rows(config: dict) -> bool:
    from mlxft.llm.objective import SPLIT_HEAD_TYPES  # the loss decides which rows reach the LM head

    return str(config.get("model_type", "")) in SPLIT_HEAD_TYPES


def _role(name: str) -> str:
    lowered = name.lower()
    for role, names in (("attn_in", _ATTN_IN), ("attn_out", _ATTN_OUT), ("mlp_in", _MLP_IN), ("mlp_out", _MLP_OUT)):
        if lowered in names:
            return role
    return "attn_in"



# ---------------------------------------------------------------------------------------------------------
# Plans


@dataclass(frozen=True)
class Suggestion:
    """A cheaper variant of the recipe: what changes, the key=value overrides that make it, and its estimate."""

    change: str
    overrides: tuple[str, ...]
    estimate: MemoryEstimate
    verdict: Verdict


@dataclass(frozen=True)
class MemoryPlan:
    """The estimate for a recipe against this machine, a verdict, what the batch size was planned from, and
    (unless it fits) cheaper variants."""

    model: str
    settings: dict
    estimate: MemoryEstimate
    available: int
    verdict: Verdict
    suggestions: tuple[Suggestion, ...] = field(default_factory=tuple)
    basis: str = ""  # "planned from the data: ..." or "planned from max_seq_length=N: why"
    ranks: int = 1  # data-parallel processes on this machine: `estimate` is one rank's, the verdict judges all of them

    @property
    def total(self) -> int:
        """What the run needs on this machine: each rank holds its own model, optimizer and batch."""
        return self.estimate.total * self.ranks


def recipe_settings(recipe, config: dict | None = None) -> dict:
    """The estimate_memory keywords a Recipe implies, at its largest batch (batch_size x max_seq_length, all trained).

    'auto' dtype is resolved for this machine's default device. Given the model's config.json, a checkpoint saved
    quantized is planned as `load_model` treats it: kept quantized on a GPU or under QLoRA, else dequantized.
    """
    gpu = default_device_is_gpu()
    dtype = recipe.dtype if recipe.dtype != "auto" else default_compute_dtype()
    bits, group = (recipe.quantize.bits, recipe.quantize.group_size) if recipe.quantize else (None, 64)
    saved = (config or {}).get("quantization") or (config or {}).get("quantization_config")
    if isinstance(saved, dict) and saved.get("bits") and recipe.method != "full" and (recipe.quantize or gpu):
        bits, group = int(saved["bits"]), int(saved.get("group_size", 64))
    return dict(
        method=recipe.method,
        quant_bits=bits,
        group_size=group,
        rank=recipe.lora.rank,
        targets=recipe.lora.targets,
        lora_layers=recipe.lora.layers,
        **ceiling_batch(recipe.train.batch_size, recipe.data.max_seq_length, recipe.kind in CLASSIFY_KINDS).settings(),
        compute_dtype=dtype,
        grad_checkpoint=recipe.train.grad_checkpoint,
        gpu=gpu,
    )


def plan_memory(recipe, config: dict, available: int | None = None, data: DataLengths | None = None, ranks: int = 1) -> MemoryPlan:
    """Estimate a Recipe's peak memory for a config.json dict and judge it against `available` (default:
    `memory_to_judge()`, the same number every command and screen uses).

    With `data` (from `measure_train_lengths`) the batch is the longest the run will train on; without it, or when
    the data could not be measured, batch_size x max_seq_length. `plan.basis` says which.
    `ranks` > 1 (`mlxft train --ranks N`): each of N processes on this machine trains every N-th sample of each batch
    with its own copy of the model; the estimate is one rank's, the verdict judges N of them.
    """
    if available is None:
        available = memory_to_judge()[1]
    size = _batch_sizer(recipe, config, data, ranks)
    settings, basis = size(recipe_settings(recipe, config), recipe.train.batch_size, recipe.data.max_seq_length)
    estimate = estimate_memory(config, **settings)
    verdict = judge(estimate.total * ranks, available)
    suggestions: tuple[Suggestion, ...] = ()
    if verdict != "fits":
        suggestions = tuple(_suggest(recipe, config, settings, available // ranks, size, data))
    return MemoryPlan(recipe.model, settings, estimate, available, verdict, suggestions, basis, ranks)


def _batch_sizer(recipe, config: dict, data: DataLengths | None, ranks: int = 1):
    """size(settings, batch_size, max_seq_length) -> (settings at the batch that needs most memory, the plan's basis).

    With ranks > 1 the batch is one rank's part of it (every ranks-th sample)."""

    # Preference kinds run both answers of every pair in one batch: B pairs are 2B sequences, the longer answer's length.
    per = 2 if recipe.kind in PREFERENCE_KINDS else 1
    unit = lambda b: f"{b} pairs ({per * b} sequences)" if per == 2 else f"{b}"  # noqa: E731

    def size(settings: dict, batch_size: int, max_len: int) -> tuple[dict, str]:
        part = f" per rank (of {batch_size}, over {ranks} ranks)" if ranks > 1 else ""
        if data is None or data.problem or not data.samples:
            why = data.problem if data is not None and data.problem else "no data measured"
            one = recipe.kind in CLASSIFY_KINDS
            mine = -(-batch_size // ranks)
            top = ceiling_batch(mine * per, max_len, one)
            return {**settings, **top.settings()}, (
                f"planned from max_seq_length={max_len} ({why}): batch {unit(mine)}{part} x {top.length} tokens, "
                + ("one position of each read by the head" if one else f"all {top.trained:,} positions trained")
            )
        measured = data.capped(max_len, recipe.data.overlong)
        micro = None
        if data.exact:  # how many steps the run takes decides which batches it sees
            micro = total_steps_for(recipe.train, measured.samples) * recipe.train.grad_accumulation
        packing = (max_len, attention_cost(config)) if recipe.data.batching == "pack" and packable(str(config.get("model_type", ""))) else None
        shapes, which = candidate_batches(measured, batch_size, micro, recipe.seed, recipe.data.batching, packing, ranks)
        def shaped(s) -> dict:
            return {**settings, **s.settings(), "batch_size": s.batch * per}

        best = max(shapes, key=lambda s: estimate_memory(config, **shaped(s)).total)
        return shaped(best), f"planned from the data: batch {unit(best.batch)}{part} x {best.length} tokens ({best.trained:,} trained), {which}"

    return size


def _suggest(recipe, config: dict, settings: dict, available: int, size, data: DataLengths | None) -> list[Suggestion]:
    """Each cheaper change alone (smallest total first); then, if none fits alone, the fewest changes that fit together.

    `size` re-plans the batch for a changed batch_size or max_seq_length, from the data when it was measured.
    """
    layers = _shape(config).layers
    # (group, change, overrides, delta); a delta sets estimate keywords, or the recipe's batch_size / max_seq_length.
    # Changes in one group are alternatives, never combined.
    options: list[tuple[str, str, tuple[str, ...], dict]] = []
    if settings["method"] == "full":
        options.append(("base", "LoRA instead of full fine-tuning", ("kind=lm-lora",), dict(method="lora")))
        options.append(("base", "QLoRA: LoRA on a 4-bit base", ("kind=lm-qlora",), dict(method="lora", quant_bits=4, group_size=64)))
    elif settings["quant_bits"] != 4:
        overrides = ("kind=lm-qlora",) if recipe.kind == "lm-lora" else ("quantize.bits=4",)
        group = settings["group_size"] if settings["quant_bits"] else 64
        options.append(("base", "QLoRA: quantize the base to 4 bits", overrides, dict(quant_bits=4, group_size=group)))
    batch = recipe.train.batch_size
    if batch > 1:
        half = batch // 2
        accumulate = max(1, round(batch * recipe.train.grad_accumulation / half))
        options.append((
            "batch", f"batch size {half}, accumulating {accumulate} micro-batches per step (same effective batch)",
            (f"train.batch_size={half}", f"train.grad_accumulation={accumulate}"), dict(batch_size=half),
        ))
    if not settings["grad_checkpoint"]:
        options.append(("checkpoint", "gradient checkpointing (~30% slower)", ("train.grad_checkpoint=true",), dict(grad_checkpoint=True)))
    measured = data is not None and not data.problem and data.samples
    longest = max(data.lengths) if measured else recipe.data.max_seq_length
    if longest > 256:
        half_len = longest // 2
        fate = "truncated" if recipe.data.overlong == "truncate" else "dropped"
        if measured and data.exact:
            longer = sum(n > half_len for n in data.lengths)
            what = f"{longer:,} of {data.samples:,} samples are longer and get {fate}"
        else:
            what = f"longer samples get {fate}"
        options.append(("length", f"max_seq_length {half_len} ({what})", (f"data.max_seq_length={half_len}",), dict(max_seq_length=half_len)))
    adapted = layers if settings["lora_layers"] == "all" else min(int(settings["lora_layers"]), layers)
    if settings["method"] != "full" and adapted > 4:
        options.append(("layers", f"LoRA on the last {adapted // 2} of {layers} layers", (f"lora.layers={adapted // 2}",), dict(lora_layers=adapted // 2)))

    def estimate(delta: dict) -> MemoryEstimate:
        knobs = {k: delta.pop(k) for k in ("batch_size", "max_seq_length") if k in delta}
        changed = {**settings, **delta}
        if knobs:
            changed, _ = size(changed, knobs.get("batch_size", batch), knobs.get("max_seq_length", recipe.data.max_seq_length))
        return estimate_memory(config, **changed)

    singles = []
    for _, change, overrides, delta in options:
        e = estimate(dict(delta))
        singles.append(Suggestion(change, overrides, e, judge(e.total, available)))
    singles.sort(key=lambda s: s.estimate.total)
    if not singles or any(s.verdict == "fits" for s in singles):
        return singles

    # Greedy: keep adding the change that saves most until the run fits (or nothing is left to add).
    chosen: list[tuple[str, str, tuple[str, ...], dict]] = []
    delta: dict = {}
    remaining = list(options)
    while remaining and judge(estimate(dict(delta)).total, available) != "fits":
        best = min(remaining, key=lambda o: estimate({**delta, **o[3]}).total)
        chosen.append(best)
        delta = {**delta, **best[3]}
        remaining = [o for o in remaining if o[0] != best[0]]
    combined = estimate(dict(delta))
    changes = "; ".join(c[1].split(" (")[0] for c in chosen)
    overrides = tuple(o for c in chosen for o in c[2])
    return singles + [Suggestion(f"together: {changes}", overrides, combined, judge(combined.total, available))]


# ---------------------------------------------------------------------------------------------------------
# Reports


def _gb(n: int) -> str:
    return f"{n / GB:.2f} GB"


def _describe(settings: dict) -> str:
    method = {"lora": "LoRA", "dora": "DoRA", "full": "full fine-tuning"}[settings["method"]]
    if settings["quant_bits"] and settings["method"] != "full":
        method = f"Q{method}, {settings['quant_bits']}-bit base (group {settings['group_size']})"
    if settings["method"] != "full":
        targets = settings["targets"]
        named = "all linear layers" if targets == "all-linear" else ", ".join(targets)
        method += f", rank {settings['rank']} on {named}, layers: {settings['lora_layers']}"
    checkpoint = "on" if settings["grad_checkpoint"] else "off"
    backend = "MLX GPU" if settings.get("gpu") else "MLX CPU"
    return f"{method}\n  {settings['compute_dtype']}, gradient checkpointing {checkpoint}, {backend}"


def _against(plan: MemoryPlan) -> str:
    """"of Y GB available (Z%)": what the plan's total is judged against, in the words every face prints it with."""
    share = plan.total / plan.available if plan.available else math.inf
    return f"of {_gb(plan.available)} available ({share:.0%})"


def format_plan_line(plan: MemoryPlan) -> str:
    """The plan in one line (the Train screen's memory line): the same numbers as `format_plan`, and its basis."""
    ranks = f" ({plan.ranks} ranks)" if plan.ranks > 1 else ""
    return f"memory: ~{_gb(plan.total)} peak{ranks} {_against(plan)}, {plan.verdict}; {plan.basis}  (details: mlxft plan{' --ranks ' + str(plan.ranks) if ranks else ''})"


def format_plan(plan: MemoryPlan) -> str:
    """A readable memory plan: the breakdown in GB, the verdict, and what to try when it does not fit."""
    e, s = plan.estimate, plan.settings
    trained = "LoRA/DoRA adapters, float32" if s["method"] != "full" else "in weights"
    rows = [
        ("weights", e.weights, f"{format_parameter_count(e.parameters)} parameters, " + (f"{s['quant_bits']}-bit" if s["quant_bits"] else s["compute_dtype"])),
        ("trainable", e.trainable, f"{format_parameter_count(e.trainable_parameters)} parameters ({trained})"),
        ("gradients", e.gradients, ""),
        ("optimizer", e.optimizer, "AdamW: 2 states per trainable parameter"),
        ("activations", e.activations, "block inputs, and the one block being recomputed" if s["grad_checkpoint"] else "kept for the backward pass"),
        ("logits", e.logits, "trained positions x vocab, float32, with cross-entropy's copies"),
        ("overhead", e.overhead, "runtime, fixed"),
    ]
    lines = [f"Memory plan for {plan.model}: {_describe(s)}"]
    if plan.basis:
        lines.append(f"  {plan.basis}")
    lines += [f"  {name:<12}{_gb(value):>11}   {note}".rstrip() for name, value, note in rows]
    if plan.ranks > 1:
        lines.append(f"  {'one rank':<12}{_gb(plan.estimate.total):>11}   each of {plan.ranks} processes holds its own model, optimizer and batch")
        lines.append(f"  {f'{plan.ranks} ranks':<12}{_gb(plan.total):>11}   {_against(plan)}")
    else:
        lines.append(f"  {'total':<12}{_gb(plan.estimate.total):>11}   {_against(plan)}")
    lines.append(f"Verdict: {plan.verdict}")
    if plan.ranks > 1 and plan.verdict != "fits":
        lines.append(f"Each rank holds its own copy: every rank fewer needs about {_gb(plan.estimate.total)} less (a smaller --ranks).")
    if plan.suggestions:
        lines.append("To use less memory, override one of these (re-estimated totals):")
        for sug in plan.suggestions:
            lines.append(f"  {_gb(sug.estimate.total * plan.ranks):>11}  {sug.verdict:<12}  {sug.change}")
            lines.append(f"  {'':>11}  {'':<12}  {' '.join(sug.overrides)}")
    return "\n".join(lines)


# The table sizes a typical SFT batch (4 samples of 512 tokens), not the 2048-token ceiling: on MLX's CPU
# backend attention scores are kept per layer for the backward pass, so the ceiling says "no" to everything.
TABLE_SEQ_LEN = 512


@dataclass(frozen=True)
class ModelFit:
    """One model at the table's default settings: LoRA on the full-precision base and on a 4-bit base, each judged."""

    lora: MemoryEstimate | None  # None for a base that is quantized already: only QLoRA applies
    qlora: MemoryEstimate
    lora_verdict: Verdict | None
    qlora_verdict: Verdict

    @property
    def best_verdict(self) -> Verdict:
        order = get_args(Verdict)  # best first
        return min((v for v in (self.lora_verdict, self.qlora_verdict) if v), key=order.index)


def table_settings(gpu: bool | None = None) -> dict:
    """The estimate_memory keywords behind `mlxft models`: recipe defaults (LoRA, batch 4) at TABLE_SEQ_LEN tokens."""
    lora, train = LoraSection(), TrainSection()
    gpu = default_device_is_gpu() if gpu is None else gpu
    return dict(
        rank=lora.rank, targets=lora.targets, lora_layers=lora.layers, batch_size=train.batch_size,
        seq_len=TABLE_SEQ_LEN, compute_dtype="bfloat16" if gpu else "float32", grad_checkpoint=False, gpu=gpu, method="lora",
    )


def estimate_fit(config: dict, available: int, settings: dict | None = None) -> ModelFit:
    """A config.json dict's row of the models table: LoRA and QLoRA-4bit estimates at `table_settings()`, judged.

    A base saved quantized (config.json has `quantization`) is trained as it is: its bits, no full-precision row.
    """
    common = table_settings() if settings is None else settings
    quantized = config.get("quantization") or config.get("quantization_config")
    if isinstance(quantized, dict) and quantized.get("bits"):
        bits, group = int(quantized["bits"]), int(quantized.get("group_size", 64))
        qlora = estimate_memory(config, **{**common, "quant_bits": bits, "group_size": group})
        return ModelFit(None, qlora, None, judge(qlora.total, available))
    full_base = estimate_memory(config, **common)
    four_bit = estimate_memory(config, **{**common, "quant_bits": 4, "group_size": 64})
    return ModelFit(full_base, four_bit, judge(full_base.total, available), judge(four_bit.total, available))


def format_models_table(entries, available_bytes: int) -> str:
    """The `mlxft models` table: each catalogue entry's size and memory for LoRA and QLoRA-4bit at default settings."""
    common = table_settings()
    lora, train, seq_len, gpu, dtype = LoraSection(), TrainSection(), common["seq_len"], common["gpu"], common["compute_dtype"]
    short = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}[dtype]
    header = (
        f"Memory to fine-tune at default settings: LoRA rank {lora.rank} on {', '.join(lora.targets)} in every layer, "
        f"batch {train.batch_size} x {seq_len} tokens, AdamW, {dtype} compute ({'GPU' if gpu else 'CPU'});\n"
        f"judged against {_gb(available_bytes)} available here (tight = over {TIGHT_FRACTION:.0%}). "
        f"Shorter sequences, smaller batches or gradient checkpointing need much less: `mlxft plan RECIPE` sizes yours."
    )
    cols = ("model", "params", "context", f"LoRA {short}", "fits", "QLoRA 4-bit", "fits")
    rows = []
    for entry in entries:
        fit = estimate_fit(entry.config(), available_bytes, common)
        rows.append((
            entry.key + (" *" if entry.gated else ""),
            format_parameter_count(entry.parameters),
            f"{entry.context_length // 1024}K",
            f"{fit.lora.total / GB:.1f} GB",
            FIT_MARKS[fit.lora_verdict],
            f"{fit.qlora.total / GB:.1f} GB",
            FIT_MARKS[fit.qlora_verdict],
        ))
    widths = [max(len(str(r[i])) for r in (cols, *rows)) for i in range(len(cols))]

    def fmt(row) -> str:
        return "  ".join(str(v).ljust(w) if i == 0 else str(v).rjust(w) for i, (v, w) in enumerate(zip(row, widths)))

    lines = [header, "", fmt(cols), fmt(tuple("-" * w for w in widths))] + [fmt(r) for r in rows]
    if any(e.gated for e in entries):
        lines.append("* gated on the Hub: accept the licence on the model page first (mlx-community 4-bit copies are not gated)")
    return "\n".join(lines)
