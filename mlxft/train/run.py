"""One training run of any job, read top to bottom: build the job, train, save its result.

`JOBS` is the one table from a recipe's kind to the job that trains it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import mlx.core as mx

from mlxft.distributed import World
from mlxft.events import LogMessage, RunFinished, RunStarted
from mlxft.llm.classify import LMClassifyJob
from mlxft.llm.preference import PreferenceJob
from mlxft.llm.sft import SFTJob
from mlxft.vision.classify import ImageClassifyJob
from mlxft.recipe import Recipe
from mlxft.runs import RunDir
from mlxft.train.loop import DivergedError, LoopHooks, Trainer

JOBS = {"lm-lora": SFTJob, "lm-qlora": SFTJob, "lm-dora": SFTJob, "lm-full": SFTJob, "lm-dpo": PreferenceJob, "lm-orpo": PreferenceJob,
        "lm-classify": LMClassifyJob, "image-classify": ImageClassifyJob}


def run_job(recipe: Recipe, run_dir: Path, hooks: LoopHooks, resume: bool = False, world: World | None = None) -> RunFinished:
    """Train `recipe` into `run_dir`. In a world of several ranks every rank calls this; rank 0 alone writes."""
    emit = hooks.emit
    world = world or World()
    t0 = time.perf_counter()
    mx.random.seed(recipe.seed)

    # -- setup --------------------------------------------------------------------------------
    job = JOBS[recipe.kind](recipe, emit)
    run = RunDir(run_dir)
    if hasattr(job, "prepare"):
        job.prepare(run.path, emit)  # before a resume loads its checkpoint: the job's one-off work on the starting model
    trainer = Trainer(job, recipe.train, seed=recipe.seed, run_dir=run, hooks=hooks, world=world)
    if resume:
        if world.is_main:
            resumed_from = trainer.resume_latest()  # sets aside what does not load: rank 0 alone touches the run
            emit(LogMessage("info", f"resumed from {resumed_from} (step {trainer.state.step})"))
        trainer.share_state_from_main()  # the other ranks start where rank 0 resumed
    if world.size > 1:
        emit(LogMessage("info", f"data-parallel over {world.size} ranks: each computes 1/{world.size} of every batch of {recipe.train.batch_size}; gradients are summed"))
    emit(RunStarted(run_dir=str(run.path), total_steps=trainer.total_steps, resumed_from_step=trainer.state.step, pid=os.getpid(), unit=job.unit,
                    charted=list(getattr(job, "charted", ())), **job.describe()))

    # -- train --------------------------------------------------------------------------------
    try:
        status = trainer.fit()
    except DivergedError as exc:
        st = trainer.state
        if run.best_dir.is_dir() and st.best_step:
            exc.hint += f"; best/ holds the weights from before it diverged (validation {trainer.best_metric} {st.best_value:.4f} at step {st.best_step})"
        raise  # nothing is saved from a diverged model

    # -- save ---------------------------------------------------------------------------------
    if not world.is_main:
        return RunFinished(step=trainer.state.step, status=status, adapter_path="", best_val_loss=trainer.state.best_val_loss,
                           final_train_loss=trainer.state.last_train_loss, seconds=time.perf_counter() - t0)
    final, note = trainer.save_result()
    if note:
        emit(LogMessage("info", note))
    job.write_readme(run)
    return RunFinished(
        step=trainer.state.step, status=status, adapter_path=str(final), best_val_loss=trainer.state.best_val_loss,
        final_train_loss=trainer.state.last_train_loss, seconds=time.perf_counter() - t0,
    )
