"""The causal-LM fine-tuning job (lm-lora, lm-qlora, lm-dora, lm-full), read top to bottom: setup, train, save."""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

from mlxft.data.encode import SampleEncoder, encode_records
from mlxft.data.sources import read_split
from mlxft.errors import DataError
from mlxft.events import LogMessage, RunFinished, RunStarted
from mlxft.llm import adapters as A
from mlxft.llm.loading import count_parameters, device_name, load_model
from mlxft.recipe import Recipe
from mlxft.runs import atomic_write_text, publish_dir
from mlxft.train.loop import DivergedError, LoopHooks, Trainer, TrainData, enable_grad_checkpoint, steps_per_epoch
from mlxft.train.objective import make_loss


def load_splits(recipe: Recipe, tokenizer, emit=lambda e: None):
    """Encode the train and valid splits with the recipe's format and length policy."""
    d = recipe.data
    train_records = read_split(d.path, d.train_split)
    if not train_records:
        raise DataError(f"{d.path}: no '{d.train_split}' split found (or it is empty)", hint="put train.jsonl (and valid.jsonl) in the data folder")
    valid_records = read_split(d.path, d.valid_split) or []
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
    mx.eval(model.parameters())
    return loaded, cfg


def total_steps_for(recipe: Recipe, n_train: int) -> int:
    t = recipe.train
    if t.steps is not None:
        return t.steps
    return max(1, math.ceil(t.epochs * steps_per_epoch(n_train, t.batch_size, t.grad_accumulation)))


def run_lm(recipe: Recipe, run_dir: Path, hooks: LoopHooks, resume: bool = False) -> RunFinished:
    emit = hooks.emit
    t0 = time.perf_counter()
    mx.random.seed(recipe.seed)

    # -- setup --------------------------------------------------------------------------------
    loaded, adapter_cfg = prepare_model(recipe, emit)
    model, tokenizer = loaded.model, loaded.tokenizer
    train, valid = load_splits(recipe, tokenizer, emit)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    data = TrainData(train, valid, pad_id=pad_id)
    total = total_steps_for(recipe, len(train))
    if recipe.train.grad_checkpoint:
        enable_grad_checkpoint(model.layers[0])
    hooks.save_adapter = lambda folder: A.save_adapter(model, folder, adapter_cfg)
    vocab = loaded.config.get("vocab_size")  # for the divergence guard's "uniform guessing" level, ln V
    trainer = Trainer(
        model, make_loss(model, loaded.model_type), data, recipe.train,
        seed=recipe.seed, batching=recipe.data.batching, total_steps=total, run_dir=run_dir, hooks=hooks,
        uniform_loss=math.log(vocab) if isinstance(vocab, int) and vocab > 1 else None,
    )
    if resume:
        resumed_from = trainer.resume_latest()
        emit(LogMessage("info", f"resumed from {resumed_from} (step {trainer.state.step})"))
    trainable, params = count_parameters(model)
    emit(RunStarted(
        run_dir=str(run_dir), model=recipe.model, method=recipe.method, total_steps=total,
        trainable_parameters=trainable, total_parameters=params, train_samples=len(train), valid_samples=len(valid),
        compute_dtype=str(next(v.dtype for _, v in _float_params(model))).replace("mlx.core.", ""), device=device_name(),
        resumed_from_step=trainer.state.step, pid=os.getpid(),
    ))

    # -- train --------------------------------------------------------------------------------
    try:
        status = trainer.fit()
    except DivergedError as exc:
        best = run_dir / "best"
        if (best / A.ADAPTER_WEIGHTS).is_file() and trainer.state.best_step:
            exc.hint += f"; best/ holds the adapter from before it diverged (validation loss {trainer.state.best_val_loss:.4f} at step {trainer.state.best_step})"
        raise  # no adapter/ is written from a diverged model

    # -- save ---------------------------------------------------------------------------------
    final = run_dir / "adapter"
    best = run_dir / "best"
    if recipe.train.keep_best and (best / A.ADAPTER_WEIGHTS).is_file() and trainer.state.best_step != trainer.state.step:
        tmp = run_dir / ".adapter-from-best"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(best, tmp)
        publish_dir(tmp, final)
        emit(LogMessage("info", f"adapter/ holds the best validation loss ({trainer.state.best_val_loss:.4f} at step {trainer.state.best_step}); the last step's weights are in checkpoints/"))
    else:
        A.save_adapter(model, final, adapter_cfg)
    _write_readme(run_dir, recipe, loaded.path)
    return RunFinished(
        step=trainer.state.step, status=status, adapter_path=str(final), best_val_loss=trainer.state.best_val_loss,
        final_train_loss=trainer.state.last_train_loss, seconds=time.perf_counter() - t0,
    )


def _float_params(model):
    return ((k, v) for k, v in tree_flatten(model.parameters()) if mx.issubdtype(v.dtype, mx.floating))


def _write_readme(run_dir: Path, recipe: Recipe, model_path: Path) -> None:
    text = (
        f"# {run_dir.name}\n\n{recipe.kind} of `{recipe.model}`.\n\n"
        f"- Use it: `mlxft generate --model {recipe.model} --adapter {run_dir} --prompt \"...\"`\n"
        f"- With mlx-lm: `mlx_lm.generate --model {model_path} --adapter-path {run_dir / 'adapter'} --prompt \"...\"`\n"
        f"- Resume: `mlxft train --resume {run_dir}`\n"
    )
    atomic_write_text(run_dir / "README.md", text)
    atomic_write_text(run_dir / "model.json", json.dumps({"model": recipe.model, "model_path": str(model_path)}, indent=2))
