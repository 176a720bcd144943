"""The causal-LM fine-tuning job (lm-lora, lm-qlora, lm-dora, lm-full): model and adapters, token batches, SFT loss."""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

from mlxft.atomic import atomic_write_text
from mlxft.data.batches import PackedBatch, collate, epoch_order, eval_order, pack, pack_layout, padded_width
from mlxft.data.encode import Encoded, SampleEncoder, encode_records
from mlxft.data.sources import read_split
from mlxft.errors import DataError, ModelError
from mlxft.events import LogMessage
from mlxft.job import Batch
from mlxft.llm import adapters as A
from mlxft.llm.cpu_speed import use_cpu_kernels
from mlxft.llm.loading import count_parameters, device_name, load_model
from mlxft.llm.model_files import load_safetensors_checked
from mlxft.llm.objective import make_loss
from mlxft.llm.packing import attention_cost, packable
from mlxft.recipe import Recipe
from mlxft.recompute import enable_grad_checkpoint
from mlxft.runs import ADAPTER_DIR, RunDir


def read_train_valid(d, what: str = "") -> tuple[list, list]:
    """The records of the train split (a DataError when there is none) and of the valid split (maybe empty)."""
    train_records = read_split(d.path, d.train_split)
    if not train_records:
        raise DataError(f"{d.path}: no '{d.train_split}' split found (or it is empty)", hint=f"put train.jsonl (and valid.jsonl){what} in the data folder")
    return train_records, read_split(d.path, d.valid_split) or []


def load_splits(recipe: Recipe, tokenizer, emit=lambda e: None) -> tuple[list[Encoded], list[Encoded]]:
    """Encode the train and valid splits with the recipe's format and length policy."""
    d = recipe.data
    train_records, valid_records = read_train_valid(d)
    encoder = SampleEncoder(tokenizer, d)
    train, tstats = encode_records(train_records, encoder, d.format, d.max_seq_length, d.overlong)
    valid, vstats = encode_records(valid_records, encoder, d.format, d.max_seq_length, d.overlong)
    for name, st in (("train", tstats), ("valid", vstats)):
        emit(LogMessage("info", f"{name}: {st.summary()}"))
        for where in st.dropped_where[:10]:
            emit(LogMessage("warning", f"dropped {where}"))
    if not train:
        raise DataError(f"{d.path}: no usable training samples ({tstats.summary()})")
    if not valid_records:
        emit(LogMessage("warning", f"no '{d.valid_split}' split in {d.path}: validation loss, early stopping and keep_best are off"))
    return train, valid


def prepare_model(recipe: Recipe, emit=lambda e: None):
    """Load the base with the device's dtype policy and attach the recipe's adapters; returns (loaded, adapter_config)."""
    quant = (recipe.quantize.bits, recipe.quantize.group_size) if recipe.quantize else None
    loaded = load_model(recipe.model, dtype=recipe.dtype, quantize=quant, trust_remote_code=recipe.trust_remote_code)
    for note in loaded.notes:
        emit(LogMessage("info", note))
    model = loaded.model
    if recipe.init_adapter:
        return loaded, _start_from_adapter(model, recipe, emit)
    num_layers = A.adapter_layer_count(model, recipe.lora.layers)
    if recipe.method == "full":
        model.freeze()
        for block in model.layers[-num_layers:]:
            block.unfreeze()
        if num_layers == len(model.layers):
            model.unfreeze()
        cfg = A.adapter_config("full", num_layers, 0, 0.0, 0.0, [], base_model=recipe.model)
    else:
        keys = A.resolve_target_keys(model, recipe.lora.targets, num_layers)
        mx.random.seed(recipe.seed)  # LoRA A matrices are drawn from the recipe's seed
        A.apply_adapters(model, recipe.method, recipe.lora.rank, recipe.lora.scale, recipe.lora.dropout, keys, num_layers)
        cfg = A.adapter_config(recipe.method, num_layers, recipe.lora.rank, recipe.lora.scale, recipe.lora.dropout, keys, alpha=recipe.lora.alpha, base_model=recipe.model)
    use_cpu_kernels(model)
    mx.eval(model.parameters())
    return loaded, cfg


def _start_from_adapter(model, recipe: Recipe, emit) -> dict:
    """Apply `init_adapter` to the model as the starting point of training; its config (rank, targets, kind) is the run's."""
    cfg = A.load_adapter(model, recipe.init_adapter)
    method, n = cfg.get("fine_tune_type", "lora"), cfg["num_layers"]
    if method == "full":
        model.freeze()
        for block in model.layers[-n:]:
            block.unfreeze()
        if n == len(model.layers):
            model.unfreeze()
    if recipe.quantize and method == "full":
        raise ModelError(f"{recipe.init_adapter}: a fully fine-tuned model cannot be trained on a quantized base", hint="remove `quantize`")
    lp = cfg.get("lora_parameters") or {}
    what = f"{method} r{lp['rank']} on {len(lp.get('keys') or [])} module(s) of the last {n} blocks" if method != "full" else f"full, the last {n} blocks"
    emit(LogMessage("info", f"starting from the adapter in {recipe.init_adapter} ({what}); the recipe's lora section is not used"))
    use_cpu_kernels(model)
    out = dict(cfg)
    out["mlxft"] = {**(cfg.get("mlxft") if isinstance(cfg.get("mlxft"), dict) else {}), "base_model": recipe.model, "init_adapter": str(recipe.init_adapter)}
    mx.eval(model.parameters())
    return out


class SFTJob:
    """Supervised fine-tuning of a causal LM: loss on trained tokens only, batches bucketed by length."""

    artifact = ADAPTER_DIR
    unit = "tok"
    higher_is_better: set[str] = set()
    phases = None

    def __init__(self, recipe: Recipe, emit=lambda e: None):
        self.recipe = recipe
        self.loaded, self.adapter_cfg = prepare_model(recipe, emit)
        self.model = self.loaded.model
        tokenizer = self.loaded.tokenizer
        self._load_data(recipe, tokenizer, emit)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        if recipe.train.grad_checkpoint:
            enable_grad_checkpoint(self.model.layers[0])
        self._loss = make_loss(self.model, self.loaded.model_type)
        self.batching = recipe.data.batching
        if self.batching == "pack" and not packable(self.loaded.model_type):
            emit(LogMessage("warning", f"data.batching pack: {self.loaded.model_type} models cannot be packed (only attention layers with rotary "
                                       "or no position encoding can); batching by length buckets instead"))
            self.batching = "bucket"
        self._attention_cost = attention_cost(self.loaded.config)
        if self.batching == "pack":
            emit(LogMessage("info", self._packing_summary(recipe.train.batch_size, recipe.seed)))
        vocab = self.loaded.config.get("vocab_size")  # the divergence guard's "uniform guessing" level, ln V
        self.uniform_loss = math.log(vocab) if isinstance(vocab, int) and vocab > 1 else None

    def _load_data(self, recipe: Recipe, tokenizer, emit) -> None:
        self.train, self.valid = load_splits(recipe, tokenizer, emit)
        self._lengths = [len(s) for s in self.train]

    def _packing_summary(self, batch_size: int, seed: int) -> str:
        """How much of what the first epoch computes holds tokens, packed and as padded buckets."""
        real = packed = padded = 0
        for idx in epoch_order(self._lengths, batch_size, seed, 0, "pack"):
            sizes = [self._lengths[i] - 1 for i in idx]
            length, rows = pack_layout(sizes, self.recipe.data.max_seq_length, self._attention_cost)
            real, packed = real + sum(sizes), packed + length * len(rows)
            padded += len(sizes) * padded_width(max(sizes))
        return (f"batching pack: {real / max(packed, 1):.1%} of the positions computed hold tokens "
                f"({packed:,} positions an epoch; padded buckets would compute {padded:,}, {real / max(padded, 1):.1%} tokens)")

    # -- what the Trainer asks ------------------------------------------------------------------
    @property
    def train_size(self) -> int:
        return len(self.train)

    @property
    def has_validation(self) -> bool:
        return bool(self.valid)

    def train_order(self, epoch: int, batch_size: int, seed: int) -> list[list[int]]:
        return epoch_order(self._lengths, batch_size, seed, epoch, self.batching)

    def train_batch(self, indices: list[int], epoch: int = 0) -> Batch:
        return self._batch([self.train[i] for i in indices])

    def eval_batches(self, batch_size: int, max_batches: int | None):
        batches = eval_order([len(s) for s in self.valid], batch_size)
        for idx in batches[:max_batches] if max_batches is not None else batches:
            yield self._batch([self.valid[i] for i in idx])

    def _batch(self, samples: list[Encoded]) -> Batch:
        b = pack(samples, self.pad_id, self.recipe.data.max_seq_length, self._attention_cost) if self.batching == "pack" else collate(samples, self.pad_id)
        arrays = (mx.array(b.inputs), mx.array(b.targets), mx.array(b.positions), mx.array(b.weights))
        if isinstance(b, PackedBatch):
            arrays += (mx.array(b.segments),)
        return Batch(arrays=arrays, weight=float(b.trained_tokens), size=b.trained_tokens)

    def loss(self, model, inputs, targets, positions, weights, segments=None):
        return self._loss(model, inputs, targets, positions, weights, segments)

    def eval_metrics(self, model, inputs, targets, positions, weights, segments=None):
        loss, ntok = self._loss(model, inputs, targets, positions, weights, segments)
        return {"loss": loss}, ntok

    def finish_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        return {**metrics, "perplexity": math.exp(min(metrics["loss"], 50.0))}

    def save(self, folder: Path) -> None:
        A.save_adapter(self.model, folder, self.adapter_cfg)

    def load(self, folder: Path) -> None:
        weights = load_safetensors_checked(Path(folder) / A.ADAPTER_WEIGHTS, "the checkpoint's adapter weights")
        self.model.load_weights(list(weights.items()), strict=False)

    # -- what the run reports and leaves ----------------------------------------------------------
    def describe(self) -> dict:
        """The RunStarted fields only the job knows."""
        trainable, params = count_parameters(self.model)
        dtype = next((v.dtype for _, v in tree_flatten(self.model.parameters()) if mx.issubdtype(v.dtype, mx.floating)), mx.float32)
        return {"model": self.recipe.model, "method": self.adapter_cfg.get("fine_tune_type", self.recipe.method), "trainable_parameters": trainable, "total_parameters": params,
                "train_samples": len(self.train), "valid_samples": len(self.valid), "compute_dtype": str(dtype).replace("mlx.core.", ""), "device": device_name()}

    def write_readme(self, run: RunDir) -> None:
        recipe, model_path = self.recipe, self.loaded.path
        text = (
            f"# {run.path.name}\n\n{recipe.kind} of `{recipe.model}`.\n\n"
            f"- Use it: `mlxft generate --model {recipe.model} --adapter {run.path} --prompt \"...\"`\n"
            f"- With mlx-lm: `mlx_lm.generate --model {model_path} --adapter-path {run.result_dir(self.artifact)} --prompt \"...\"`\n"
            f"- Resume: `mlxft train --resume {run.path}`\n"
        )
        atomic_write_text(run.readme_path, text)
        atomic_write_text(run.model_json_path, json.dumps({"model": recipe.model, "model_path": str(model_path)}, indent=2))
