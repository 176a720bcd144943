"""`mlxft` subcommands: parse arguments, call the engine, print. No training logic lives here."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import mlxft  # noqa: F401  (BLAS preload before anything imports mlx.core)
from mlxft.errors import MlxftError
from mlxft.textsafe import escape_controls


def _print_error(exc: MlxftError) -> None:
    from mlxft.textsafe import escape_controls

    # Messages quote data (ids, clusters, labels): escaped, but their own line breaks are layout and stay.
    message, hint = (escape_controls(text, keep="\n") if text else text for text in (exc.message, exc.hint))
    print(f"error: {message}", file=sys.stderr)
    if hint:
        print(f"  hint: {hint}", file=sys.stderr)


# -- training ---------------------------------------------------------------------------------
def cmd_train(args) -> int:
    from mlxft.progress import ProgressPrinter
    from mlxft.recipe import load_recipe
    from mlxft.distributed import launched_rank, launched_size
    from mlxft.train.process import check_ranks, resume_run, run_peer, start_run

    printer = ProgressPrinter()
    launched = launched_rank()  # started by `mlx.launch` as one rank of a world (e.g. across Macs)
    if launched is not None and args.ranks not in (None, 1):
        raise MlxftError("--ranks with mlx.launch: the launcher's hostfile decides the ranks", hint="drop --ranks")
    if args.resume:
        if args.recipe or args.overrides:
            raise MlxftError("--resume continues a run with its saved recipe", hint="drop the recipe and overrides, or start a new run without --resume")
        if launched:
            return run_peer(_peer_recipe(args.resume), args.resume, resume=True)
        ranks = 1 if launched is not None else args.ranks  # launched rank 0: the launcher's world, not local ranks
        if ranks is None:
            from mlxft.runs import RunDir

            saved = RunDir(args.resume)
            ranks = _default_ranks(saved.load_recipe()) if saved.recipe_path.is_file() else 1  # no recipe: resume_run names it
        run = resume_run(args.resume, on_event=printer, ranks=ranks)
    else:
        if not args.recipe:
            raise MlxftError("give a recipe: `mlxft train RECIPE.yaml [key=value ...]`", hint="or `mlxft train --resume RUN_DIR`")
        recipe = load_recipe(args.recipe, args.overrides)
        if launched is not None:
            check_ranks(recipe, launched_size())
        if launched:
            return run_peer(recipe, None, resume=False)
        ranks = 1 if launched is not None else args.ranks if args.ranks is not None else _default_ranks(recipe)
        check_ranks(recipe, ranks)  # before the plan divides a batch over them
        _warn_if_it_will_not_fit(recipe, ranks)
        run = start_run(recipe, on_event=printer, ranks=ranks)
    return _report_run(run)


def _default_ranks(recipe) -> int:
    """--ranks not given: what `auto_ranks` picks for this machine, said in one line when it is not plain one process."""
    from mlxft.train.process import auto_ranks

    ranks, why = auto_ranks(recipe)
    if ranks > 1:
        print(f"ranks: {why}", file=sys.stderr)
    return ranks


def _peer_recipe(run_dir: str):
    """The recipe a launched rank 1+ resumes with: the run's own, which must be at the same path on its host."""
    from mlxft.runs import RunDir

    run = RunDir(run_dir)
    if not run.recipe_path.is_file():
        raise MlxftError(f"{run.path}: no recipe.yaml on this host (rank {os.environ.get('MLX_RANK')})",
                         hint="every host of a launched resume needs the run folder's recipe.yaml at the same path: share the folder, or copy recipe.yaml there")
    return run.load_recipe()


def _report_run(run) -> int:
    if run.status == "stopped":
        if run.last_checkpoint:
            print(f"stopped; resume with: mlxft train --resume {run.path}", file=sys.stderr)
        else:
            print("stopped before any checkpoint was saved; start it again with `mlxft train`", file=sys.stderr)
        return 130
    if run.ok:
        print(str(run.adapter_path))
        return 0
    print(f"error: {escape_controls(run.error, keep=chr(10))}", file=sys.stderr)  # a training error can quote a data row
    if run.hint:
        print(f"  hint: {escape_controls(run.hint)}", file=sys.stderr)
    if run.status == "died" and run.last_checkpoint:  # a failure the child reported names its checkpoint in the hint
        print(f"last complete checkpoint: {run.last_checkpoint}\nresume with: mlxft train --resume {run.path}", file=sys.stderr)
    return 1


def cmd_stop(args) -> int:
    from mlxft.runs import RunDir, summarize_run

    run = RunDir(args.run_dir)
    if not run.recipe_path.is_file():
        raise MlxftError(f"{run.path} is not an mlxft run directory (no recipe.yaml)", hint="pass the folder that `mlxft train` printed; `mlxft runs` lists them")
    summary = summarize_run(run)
    if summary.status not in ("running", "starting"):
        print(f"{run.path}: not running ({summary.status}); nothing to stop")
        return 0
    run.request_stop()
    print(f"{run.path}: asked to stop; it saves a checkpoint after the current step (resume with `mlxft train --resume {run.path}`)")
    return 0


def cmd_runs(args) -> int:
    from mlxft.runs import list_runs
    from mlxft.textsafe import escape_controls

    if args.log_mlflow:
        return _log_mlflow(args)
    if args.uri or args.experiment:
        raise MlxftError("--uri and --experiment go with --log-mlflow RUN", hint="mlxft runs --log-mlflow RUN_DIR [--uri sqlite:///mlflow.db]")

    runs = list_runs(args.dir)
    if args.json:
        print(json.dumps([{**vars(r), "path": str(r.path)} for r in runs], indent=2))
        return 0
    if not runs:
        print(f"no runs in {args.dir}/")
        return 0
    for r in runs:
        for problem in r.problems:
            print(f"warning: {escape_controls(problem)}", file=sys.stderr)
    print(f"{'run':<32} {'status':<13} {'step':>11} {'loss':>7} {'best val':>8}  model")
    for r in runs:
        loss = f"{r.last_loss:.3f}" if r.last_loss is not None else "-"
        best = f"{r.best_val_loss:.3f}" if r.best_val_loss is not None else "-"
        # Run names and models come from recipes and metrics files: printed escaped, padded as shown.
        print(f"{escape_controls(r.path.name):<32} {escape_controls(r.status):<13} {f'{r.step}/{r.total_steps}':>11} {loss:>7} {best:>8}  {escape_controls(r.model)}")
    return 0


def _log_mlflow(args) -> int:
    from mlxft.textsafe import escape_controls
    from mlxft.tracking import log_run_dir

    done = log_run_dir(args.log_mlflow, uri=args.uri, experiment=args.experiment)
    if args.json:
        print(json.dumps(done))
        return 0
    print(escape_controls(f"logged {args.log_mlflow} to MLflow run {done['run_id']} (experiment {done['experiment']!r} at {done['uri']}): "
                          f"{done['metrics']} metric values, artifacts {', '.join(done['artifacts']) or 'none'}, status {done['status']}"))
    return 0


def cmd_tui(args) -> int:
    from tui import run_app  # the only place the CLI reaches into the UI (Textual loads here, not on `import mlxft`)

    return run_app(runs_dir=args.runs_dir, start=args.screen)


def cmd_validate(args) -> int:
    from mlxft.recipe import load_recipe

    # Like `train RECIPE key=value ...`: a word with `=` that is not a file is an override, for every recipe named.
    recipes = [a for a in args.recipes if "=" not in a or Path(a).exists()]
    overrides = [a for a in args.recipes if a not in recipes] + (args.set or [])
    if not recipes:
        raise MlxftError("give a recipe: `mlxft validate RECIPE.yaml [key=value ...]`", hint="e.g. mlxft validate recipes/chat-lora.yaml train.steps=50")
    bad = 0
    for path in recipes:
        try:
            r = load_recipe(path, overrides or None)
            print(f"ok    {path}  ({r.kind}, model {r.model})")
        except MlxftError as exc:
            bad += 1
            _print_error(exc)
    return 1 if bad else 0


def cmd_plan(args) -> int:
    from mlxft.recipe import load_recipe
    from mlxft.backend import memory_to_judge
    from mlxft.llm.batch_shapes import measure_train_lengths
    from mlxft.llm.memory import format_plan, plan_memory

    recipe = load_recipe(args.recipe, args.overrides)
    if args.ranks is not None:
        from mlxft.train.process import check_ranks

        check_ranks(recipe, args.ranks)
    if recipe.kind == "image-classify":
        raise MlxftError("mlxft plan sizes language-model runs; an image-classify run's memory is the backbone's at batch_size images",
                         hint="the first steps' peak memory is in the progress line (and the run's metrics.jsonl)")
    available = memory_to_judge(args.memory_gb)[1]
    folder = Path(recipe.model).expanduser()
    if folder.is_dir():
        from mlxft.llm.model_files import check_model_config

        check_model_config(folder, trust_remote_code=recipe.trust_remote_code)  # names a broken field before the arithmetic meets it
    config = _config_without_weights(recipe.model)
    # The plan may fetch the tokenizer, as it fetches config.json: the data's token lengths size the batch.
    data = measure_train_lengths(recipe, allow_download=True)
    ranks = args.ranks
    if ranks is None:  # what `mlxft train` would run without --ranks
        from mlxft.train.process import auto_ranks

        ranks, why = auto_ranks(recipe, data, available)
        if ranks > 1:
            print(f"ranks: {why}")
    try:
        plan = plan_memory(recipe, config, available, data, ranks=ranks)
    except (TypeError, ValueError) as exc:
        raise MlxftError(f"{recipe.model}: its config has a size that is not a number ({exc})", hint="fix config.json, or use a catalogue key (`mlxft models`)") from None
    print(format_plan(plan))
    return 2 if plan.verdict == "will-not-fit" else 0


def _warn_if_it_will_not_fit(recipe, ranks: int = 1) -> None:
    """Before loading anything, say so when the memory plan predicts the run will not fit (`mlxft plan` refuses)."""
    from mlxft.llm.catalogue import config_at_hand
    from mlxft.llm.batch_shapes import measure_train_lengths
    from mlxft.llm.memory import format_plan, plan_memory

    try:
        config = config_at_hand(recipe.model)
        if config is None:
            return  # a Hub id or a GGUF: no config at hand without a download or an import
        plan = plan_memory(recipe, config, ranks=ranks)
        if plan.verdict == "will-not-fit":
            # The data can only shrink the batch below max_seq_length, so it is tokenized only when the ceiling does not fit.
            plan = plan_memory(recipe, config, plan.available, measure_train_lengths(recipe), ranks=ranks)
    except (MlxftError, TypeError, ValueError):
        return  # a config too broken to plan from is named, field by field, when the run loads it
    if plan.verdict == "will-not-fit":
        print("warning: this run is estimated not to fit in memory:\n" + format_plan(plan), file=sys.stderr)


def _config_without_weights(spec: str) -> dict:
    """The model's config.json from a folder, the catalogue, a GGUF's metadata, or the Hub (config only)."""
    from mlxft.llm.catalogue import config_at_hand

    config = config_at_hand(spec)
    if config is not None:
        return config
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf" and path.is_file():
        from mlxft.llm.loading import import_gguf_cached

        return json.loads((import_gguf_cached(path) / "config.json").read_text())
    try:
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(spec, "config.json")).read_text())
    except Exception as exc:  # offline, unknown id...: say what was tried
        raise MlxftError(f"cannot find a config for {spec!r} ({type(exc).__name__})", hint="use a catalogue key (`mlxft models`), a local folder, or connect to the Hub") from None


def cmd_models(args) -> int:
    from mlxft.backend import memory_to_judge
    from mlxft.llm.catalogue import load_catalogue
    from mlxft.llm.inventory import format_local_table, list_models
    from mlxft.llm.memory import format_models_table, table_settings
    from mlxft.vision.catalogue import format_vision_table, load_vision_catalogue, vision_record

    total, available = memory_to_judge(args.memory_gb)
    llm, vision = args.kind in ("all", "llm"), args.kind in ("all", "vision")
    backbones = load_vision_catalogue() if vision else []
    if args.json:
        settings = table_settings()
        listings = list_models(available, local=args.local, settings=settings) if llm else []
        out = {"memory": {"total_bytes": total, "available_bytes": available}, "settings": settings, "models": [m.to_dict() for m in listings],
               "vision": [vision_record(e, available) for e in backbones]}
        print(json.dumps(out, indent=1))
        return 0
    tables = []
    if llm:
        tables.append(format_models_table(load_catalogue(), available))
        if args.local:
            tables.append(format_local_table(list_models(available)))
    if vision:
        tables.append(format_vision_table(backbones, available))
    print("\n\n".join(tables))
    return 0


def cmd_import(args) -> int:
    from mlxft.llm.gguf import import_gguf

    src = Path(args.gguf)
    out = Path(args.out) if args.out else Path("models-local") / src.stem
    folder = import_gguf(src, out, dequantize=not args.keep_quantized, dtype=args.dtype)
    print(str(folder))
    return 0


def cmd_import_adapter(args) -> int:
    from mlxft.llm.peft_format import import_peft_adapter

    src = Path(args.peft_dir)
    out = Path(args.out) if args.out else Path("adapters-local") / (src.resolve().name or "adapter")
    folder, notes = import_peft_adapter(src, out, base=args.base)
    if args.json:
        print(json.dumps({"folder": str(folder), "notes": notes}))
        return 0
    print(str(folder))
    for note in notes:
        print(f"note: {note}")
    return 0


def cmd_export(args) -> int:
    from mlxft.export import ExportOptions, export_run

    options = ExportOptions(dtype=args.dtype, quantize=args.quantize, base=args.base, extra={"with_base": True} if args.with_base else {})
    result = export_run(args.run_dir, args.format, out=args.out, options=options)
    if args.json:
        print(json.dumps({"folder": str(result.folder), "format": result.format, "files": result.files, "notes": result.notes}))
        return 0
    print(f"{result.format} export: {result.folder}")
    for name in result.files:
        print(f"  {name}")
    for note in result.notes:
        print(f"note: {note}")
    return 0


def cmd_push(args) -> int:
    from mlxft.export import ExportOptions
    from mlxft.export.push import push_run
    from mlxft.textsafe import escape_controls

    options = ExportOptions(dtype=args.dtype, quantize=args.quantize, base=args.base)
    result = push_run(args.run_dir, args.repo, fmt=args.format, out=args.out, private=args.private, dry_run=args.dry_run, options=options)
    if args.json:
        print(json.dumps({"repo": result.repo, "folder": str(result.folder), "files": result.files, "notes": result.notes,
                          "url": result.url, "commit_url": result.commit_url, "dry_run": result.dry_run}))
        return 0
    print(escape_controls(f"{'dry run: would upload' if result.dry_run else 'uploaded'} {result.folder} to {result.repo}:"))
    for name in result.files:
        print(f"  {escape_controls(name)}")
    for note in result.notes:
        print(f"note: {escape_controls(note)}")
    if result.url:
        print(escape_controls(result.commit_url or result.url))
    return 0


def cmd_doctor(args) -> int:
    from mlxft.backend import doctor, format_doctor

    report = doctor(compare_reference=not args.quick)
    print(report.to_json() if args.json else format_doctor(report))
    return 0


# -- using a model ----------------------------------------------------------------------------
def _sampling(args):
    from mlxft.llm.generate import SamplingSettings

    return SamplingSettings(temperature=args.temp, top_p=args.top_p, top_k=args.top_k, max_tokens=args.max_tokens, seed=args.seed)


def cmd_generate(args) -> int:
    from mlxft.api import load
    from mlxft.llm.generate import generate_text, render_prompt

    model, tok = load(args.model, adapter=args.adapter)
    text = render_prompt(tok, prompt=args.prompt, system=args.system, use_template=not args.raw)
    on_text = (lambda s: (sys.stdout.write(s), sys.stdout.flush())) if not args.no_stream else None
    out = generate_text(model, tok, text, _sampling(args), on_text=on_text)
    print("" if on_text else out)
    return 0


def cmd_chat(args) -> int:
    from mlxft.api import load
    from mlxft.llm.generate import generate_text, render_prompt

    if args.json:
        return _chat_json(args)
    model, tok = load(args.model, adapter=args.adapter)
    messages = [{"role": "system", "content": args.system}] if args.system else []
    print("chat: empty line or Ctrl-D to quit, /reset to clear the history", file=sys.stderr)
    while True:
        try:
            line = input("> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if not line:
            return 0
        if line == "/reset":
            messages = messages[:1] if args.system else []
            continue
        messages.append({"role": "user", "content": line})
        reply = generate_text(model, tok, render_prompt(tok, messages=messages), _sampling(args), on_text=lambda s: (sys.stdout.write(s), sys.stdout.flush()))
        print()
        messages.append({"role": "assistant", "content": reply})


def _chat_json(args) -> int:
    """Side by side for programs (the TUI's Chat screen): one model, the adapter switched off for base."""
    from mlxft.api import load
    from mlxft.llm.chat_json import LineReader, json_line_writer, serve_chat

    try:
        model, tok = load(args.model, adapter=args.adapter)
    except MlxftError as exc:  # the reader (the TUI's Chat screen) gets the error as a line too
        json_line_writer(sys.stdout)({"error": exc.message, "hint": exc.hint, "fatal": True})
        raise
    serve_chat(model, tok, has_adapter=args.adapter is not None, lines=LineReader(sys.stdin.fileno()), write=json_line_writer(sys.stdout),
               defaults=_sampling(args), system=args.system, info={"model": args.model, "adapter": args.adapter})
    return 0


def cmd_eval_loss(args) -> int:
    from mlxft.llm.evaluate import eval_loss

    result = eval_loss(args.model, args.data, split=args.split, adapter=args.adapter, batch_size=args.batch_size, max_seq_length=args.max_seq_length, data_format=args.format)
    print(json.dumps(result, indent=2) if args.json else f"{args.split}: loss {result['loss']:.4f}, perplexity {result['perplexity']:.3f} over {result['tokens']} tokens ({result['samples']} samples)")
    return 0


def cmd_quickstart(args) -> int:
    if args.what == "vision":
        from mlxft.vision.quickstart import run_vision_quickstart

        return run_vision_quickstart(output_dir=args.output_dir)
    from mlxft.quickstart import run_quickstart

    return run_quickstart(steps=args.steps, output_dir=args.output_dir)


# -- evaluation ---------------------------------------------------------------------------------
def cmd_eval(args) -> int:
    from mlxft.eval.compare import compare, format_terminal, write_reports
    from mlxft.runs import RunDir
    from mlxft.textsafe import escape_lines

    if args.run and _is_text_classifier(args.run):
        return _eval_texts(args)
    if args.run:
        return _eval_images(args)
    if args.against:
        raise MlxftError("--against compares two image-classify runs: mlxft eval RUN_B --against RUN_A",
                         hint="for language models the comparison is base vs tuned: mlxft eval --model BASE --adapter RUN_DIR --bench bench.jsonl")
    missing = [f"--{k}" for k in ("model", "adapter", "bench") if not getattr(args, k)]
    if missing:
        raise MlxftError(f"mlxft eval of a language model needs {', '.join(missing)}",
                         hint="mlxft eval --model BASE --adapter RUN_DIR --bench bench.jsonl; for an image classifier: mlxft eval RUN_DIR --split test")

    def progress(done: int, total: int, phase: str) -> None:
        if args.progress_json:
            print(json.dumps({"phase": phase, "done": done, "total": total}), flush=True)
        else:
            print(f"{phase}: {done}/{total} answered", file=sys.stderr)

    labels = [x.strip() for x in args.labels.split(",") if x.strip()] if args.labels else None
    if labels and args.score != "labels":
        raise MlxftError("--labels lists the candidates of --score labels", hint="add --score labels, or drop --labels")
    result = compare(
        args.model, args.adapter, args.bench, targets=args.target, default_grader=args.grader, max_tokens=args.max_tokens,
        batch_size=args.batch_size, seed=args.seed, heldout=args.heldout, heldout_split=args.heldout_split,
        score=args.score, labels=labels, on_progress=progress,
    )
    run = RunDir(args.adapter)
    out = Path(args.out) if args.out else (run.eval_dir if run.recipe_path.is_file() else Path("eval") / time.strftime("%Y%m%d-%H%M%S"))
    paths = write_reports(result, out, focus_class=args.focus_class)
    if args.progress_json:
        print(json.dumps({"finished": True, "out": str(out), "verdict": result.verdict, "paths": {k: str(v) for k, v in paths.items()}}), flush=True)
        return 0
    print(format_terminal(result))
    print(escape_lines([*(f"{name.replace('_', ' ')} matrix: {paths[name]}" for name in ("confusion_base", "confusion_tuned") if name in paths),
                        f"report: {paths['report']}", f"run log: {paths['log']} (for `mlxft data failures`)", f"summary: {paths['summary']}"]))
    return 0


def cmd_predict(args) -> int:
    from mlxft.textsafe import escape_controls
    from mlxft.errors import ModelError
    from mlxft.vision.predict import classifier_folder as image_classifier_folder
    from mlxft.vision.predict import image_paths, load_classifier

    if _is_text_classifier(args.run):
        return _predict_texts(args)
    try:
        folder = image_classifier_folder(args.run)
    except ModelError:
        raise MlxftError(f"{args.run}: " + ("no classifier here (neither an lm-classify nor an image-classify run)" if Path(args.run).exists() else "no such folder"),
                         hint="pass the run directory of a classifier; a language model run answers with mlxft generate --model BASE --adapter RUN --prompt TEXT") from None
    if args.file is not None:
        raise MlxftError(f"--file is for text classifiers (lm-classify); {args.run} is an image classifier", hint="mlxft predict RUN IMAGE|FOLDER")
    if args.images is None:
        raise MlxftError("give an image or a folder of images: `mlxft predict RUN IMAGE|FOLDER`")
    clf = load_classifier(folder)
    paths = image_paths(args.images)
    if not paths:
        raise MlxftError(f"{args.images}: no images in this folder", hint="images end in .jpg, .png, .webp, ...")
    if args.top_k is not None and args.top_k < 1:
        raise MlxftError(f"--top-k {args.top_k}: must be 1 or more")
    probs = clf.probabilities(paths)
    k = min(args.top_k or (len(clf.labels) if args.json else 1), len(clf.labels))
    for path, p in zip(paths, probs):
        order = p.argsort()[::-1]
        if args.json:
            print(json.dumps({"image": str(path), "label": clf.labels[order[0]], "scores": {clf.labels[i]: float(p[i]) for i in order[:k]}}))
        else:
            print(escape_controls(f"{path}  " + "  ".join(f"{clf.labels[i]} {p[i]:.3f}" for i in order[:k])))
    return 0


def _eval_images(args) -> int:
    """One image classifier on a labelled split; with --against, also that run's classifier on the same images, compared."""
    from mlxft.runs import RunDir
    from mlxft.textsafe import escape_lines
    from mlxft.vision.compare import compare_runs, format_comparison, run_data, run_name, write_comparison
    from mlxft.vision.evaluate import evaluate_images, format_evaluation, write_evaluation
    from mlxft.vision.predict import load_classifier

    lm_flags = [f"--{k}" for k in ("model", "adapter", "bench") if getattr(args, k)]
    if lm_flags:
        raise MlxftError(f"{', '.join(lm_flags)} are for language models; RUN is an image classifier's run",
                         hint="mlxft eval RUN [--against OTHER_RUN]; or mlxft eval --model BASE --adapter RUN_DIR --bench bench.jsonl")
    models = 2 if args.against else 1

    def progress(name: str, model: int, done: int, total: int) -> None:
        if args.progress_json:
            print(json.dumps({"phase": name, "done": done, "total": total, "model": model, "models": models}), flush=True)
        elif done == total:
            print(f"{name}: {done}/{total} images", file=sys.stderr)

    comparison = None
    if args.against:
        comparison = compare_runs(args.run, args.against, data=args.data, split=args.split, threshold_for=args.threshold_for, on_progress=progress)
        result = comparison.after
        run = RunDir.containing(comparison.after_path)
    else:
        clf = load_classifier(args.run)
        run = RunDir.containing(clf.folder)
        name = run_name(clf)
        result = evaluate_images(clf, args.data or run_data(run, args.run), args.split, threshold_for=args.threshold_for,
                                 on_progress=lambda done, total: progress(name, 1, done, total))
    out = Path(args.out) if args.out else (run.eval_dir / args.split if run else Path("eval") / time.strftime("%Y%m%d-%H%M%S"))
    paths = write_evaluation(result, out)
    if comparison:
        paths.update(write_comparison(comparison, out))
    if args.progress_json:
        print(json.dumps({"finished": True, "out": str(out), "verdict": comparison.verdict.key if comparison else None,
                          "paths": {k: str(v) for k, v in paths.items()}}), flush=True)
        return 0
    lines = format_comparison(comparison).splitlines() if comparison else format_evaluation(result).splitlines()
    print(escape_lines([*lines, *(f"{k.replace('_', ' ')}: {v}" for k, v in paths.items())]))
    return 0


def _classifier_data_and_out(args, folder: Path, data_name: str) -> tuple[str, Path]:
    """The data a classifier run is evaluated on (--data, else its recipe's) and the report folder (--out, else RUN/eval/SPLIT)."""
    from mlxft.recipe import load_recipe
    from mlxft.runs import RunDir

    run = RunDir.containing(folder)
    data = args.data
    if data is None:
        if run is None:
            raise MlxftError(f"{args.run}: not inside a run directory, so its data is unknown", hint=f"pass --data {data_name}")
        data = load_recipe(run.recipe_path).data.path
    out = Path(args.out) if args.out else (run.eval_dir / args.split if run else Path("eval") / time.strftime("%Y%m%d-%H%M%S"))
    return data, out


def _count(value: str) -> int:
    """An argparse type: a whole number of 1 or more (a batch of 0 would never finish)."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n}: must be 1 or more")
    return n


def _is_text_classifier(run: str) -> bool:
    from mlxft.llm.classify_predict import is_text_classifier

    return is_text_classifier(run)


def _predict_texts(args) -> int:
    """`mlxft predict RUN "text" | --file F`: a table, or --json: one record per input, in input order, every label's probability."""
    from mlxft.data.readers import Record, iter_rows
    from mlxft.llm.classify_predict import load_text_classifier
    from mlxft.textsafe import dump_json, escape_controls

    if (args.images is None) == (args.file is None):
        raise MlxftError("give one text or --file F (.jsonl .csv .tsv .parquet)", hint='e.g. mlxft predict RUN "what a great film" or mlxft predict RUN --file reviews.csv')
    if args.top_k is not None and args.top_k < 1:
        raise MlxftError(f"--top-k {args.top_k}: must be 1 or more")
    clf = load_text_classifier(args.run)
    names = None
    if args.file is None:
        inputs = [args.images]
    else:
        rows = list(iter_rows(args.file))
        bad = [f"{r.where}: {r.reason}" for r in rows if not isinstance(r, Record)]
        if bad:
            raise MlxftError(f"{len(bad)} unreadable row(s) in {args.file}:\n  " + "\n  ".join(bad[:20]))
        fields = clf.encoder.fields
        if not rows:
            raise MlxftError(f"{args.file}: no rows to classify", hint=f"the file holds no texts; its rows need the column(s) {', '.join(fields)}")
        inputs = [r.data for r in rows]
        if len(fields) == 1 and inputs and all(fields[0] not in r for r in inputs) and all("text" in r for r in inputs):
            inputs = [{fields[0]: r["text"]} for r in inputs]  # a file's `text` column fills a template that names another
        names = [r.where for r in rows]  # a bad row is named by its file and line
    probs = clf.probabilities(inputs, args.batch_size, names)
    labels = clf.labels
    k = min(args.top_k or (len(labels) if args.json else 1), len(labels))
    for item, p in zip(inputs, probs):
        order = p.argsort()[::-1]
        shown = item if isinstance(item, str) else {f: item.get(f) for f in clf.encoder.fields}
        if args.json:
            text = shown if isinstance(shown, str) or len(shown) > 1 else next(iter(shown.values()))
            print(dump_json({"text": text, "label": labels[order[0]], "scores": {labels[i]: float(p[i]) for i in order[:k]}}))
        else:
            text = shown if isinstance(shown, str) else " | ".join(str(v) for v in shown.values())
            text = " ".join(text.split())
            print(escape_controls("  ".join(f"{labels[i]} {p[i]:.3f}" for i in order[:k]) + f"  {text[:70] + ('…' if len(text) > 70 else '')}"))
    if clf.truncated:
        print(f"note: {clf.truncated} text(s) were cut to the classifier's {clf.encoder.max_length} prompt tokens", file=sys.stderr)
    return 0


def _eval_texts(args) -> int:
    from mlxft.llm.classify_eval import evaluate_texts, format_text_evaluation, write_text_evaluation
    from mlxft.llm.classify_predict import load_text_classifier
    from mlxft.textsafe import escape_lines

    clf = load_text_classifier(args.run)
    data, out = _classifier_data_and_out(args, clf.folder, "DATA")
    result = evaluate_texts(clf, data, args.split, base=not args.no_base, batch_size=args.batch_size)
    paths = write_text_evaluation(result, out)
    if args.progress_json:
        print(json.dumps({"finished": True, "out": str(out), "verdict": None, "paths": {k: str(v) for k, v in paths.items()}}), flush=True)
        return 0
    print(escape_lines([*format_text_evaluation(result).splitlines(), *(f"{k}: {v}" for k, v in paths.items())]))
    return 0


# -- data curation ----------------------------------------------------------------------------
def cmd_data_failures(args) -> int:
    from mlxft.data.curation import failure_clusters, format_clusters, read_eval_log

    if args.examples < 0:
        raise MlxftError(f"--examples {args.examples}: must be 0 or more", hint="the examples shown per cluster, e.g. --examples 2")
    rows = read_eval_log(args.eval_log, pass_threshold=args.pass_threshold)
    print(format_clusters(failure_clusters(rows), examples=args.examples))
    return 0


def cmd_data_review(args) -> int:
    from mlxft.data.curation import export_review, failure_clusters, read_eval_log, read_review
    from mlxft.textsafe import escape_controls

    if args.check:
        print(read_review(args.check).summary())
        return 0
    if not args.eval_log or not args.out:
        raise MlxftError("export with `mlxft data review EVAL_LOG --cluster LABEL --out review.jsonl`", hint="or read a filled-in file back with `mlxft data review --check review.jsonl`")
    clusters = failure_clusters(read_eval_log(args.eval_log, pass_threshold=args.pass_threshold))
    labels = [c.label for c in clusters]
    if args.cluster is None:
        chosen = [r for c in clusters for r in c.rows]
    else:
        match = [c for c in clusters if c.label == args.cluster]
        if not match:
            raise MlxftError(f"{args.eval_log}: no failure cluster {args.cluster!r}", hint=f"clusters: {', '.join(labels) or '(no failures)'}")
        chosen = match[0].rows
    path = export_review(chosen, args.out, overwrite=args.overwrite)
    print(escape_controls(f"{path}: {len(chosen)} item(s) to review; fill in `corrected`, then `mlxft data build {path} --out DIR`"))
    return 0


def cmd_data_build(args) -> int:
    from mlxft.data.curation import build_training_sets, read_eval_log

    passing = read_eval_log(args.keep_passing, pass_threshold=args.pass_threshold) if args.keep_passing else None
    result = build_training_sets(
        args.review, out_dir=args.out, sft_format=args.format, keep_passing=passing, keep_ratio=args.keep_ratio,
        seed=args.seed, valid_fraction=args.valid_fraction, overwrite=args.overwrite,
    )
    print(result.summary())
    return 0


def _mapping(pairs: list[str] | None) -> dict | None:
    if not pairs:
        return None
    bad = [p for p in pairs if "=" not in p]
    if bad:
        raise MlxftError(f"--map takes column=your_name, got {bad[0]!r}", hint="e.g. --map prompt=question --map completion=answer")
    return dict(p.split("=", 1) for p in pairs)


def cmd_data_validate(args) -> int:
    from mlxft.data.validate import validate_data

    tokenizer = None
    if args.model:
        from mlxft.llm.loading import load_tokenizer

        tokenizer = load_tokenizer(args.model)  # token counts need no weights
    if args.openai:
        from mlxft.data.openai_format import check_openai_path

        checks = check_openai_path(args.path)
        print("\n".join(c.summary() for c in checks))
        return 0 if all(c.ok for c in checks) else 1
    report = validate_data(args.path, fmt=args.format, mapping=_mapping(args.map), tokenizer=tokenizer, max_seq_length=args.max_seq_length, overlong=args.overlong,
                           allow_outside_paths=args.allow_outside_paths)
    print(report.to_json() if args.json else report.format_text())
    return 0 if report.usable else 1


def cmd_data_show(args) -> int:
    from mlxft.data.readers import Record, read_page
    from mlxft.textsafe import dump_json, escape_controls

    page = read_page(args.path, args.split, start=args.start, count=args.count, at=args.at)
    for row in page.rows:
        entry = {"where": row.where, **({"row": row.data} if isinstance(row, Record) else {"error": row.reason})}
        print(dump_json(entry, default=str) if args.json else escape_controls(f"{row.where}: ") + (dump_json(row.data, default=str) if isinstance(row, Record) else escape_controls(f"UNREADABLE: {row.reason}")))
    end = page.start + len(page.rows)
    print(escape_controls(f"rows {page.start + 1}-{end} of the {page.split} split" + (f"; more follow (--start {end})" if page.more else "")), file=sys.stderr)
    return 0


def cmd_data_convert(args) -> int:
    from mlxft.data.convert import convert_data

    result = convert_data(args.path, args.out, fmt=args.format, mapping=_mapping(args.map), to_chat=args.to_chat, overwrite=args.overwrite,
                          allow_outside_paths=args.allow_outside_paths, to=args.to)
    print(result.summary())
    return 1 if result.problems else 0


def cmd_data_split(args) -> int:
    from mlxft.data.sources import read_split
    from mlxft.data.split import parse_fractions, split_rows, write_splits

    fractions = parse_fractions(args.fractions)
    records = read_split(args.input, "train") or []
    splits = split_rows([r.data for r in records], fractions=fractions, seed=args.seed, label_key=args.label_key)
    paths = write_splits(splits, args.out, input_paths=(Path(args.input),), overwrite=args.overwrite)
    for name, path in paths.items():
        print(f"{name}: {len(splits[name])} rows -> {path}")
    return 0


# -- the parser -------------------------------------------------------------------------------
def _add_sampling(p) -> None:
    p.add_argument("--temp", type=float, default=0.0, help="temperature (0 = greedy)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--system", help="system prompt")


def _chat_json_protocol() -> str:
    """The --json request/reply lines, as the engine module documents them (kept in one place)."""
    import mlxft.llm.chat_json as chat_json

    return chat_json.__doc__.split("\n\n", 1)[1]


def _export_formats_epilog() -> str:
    """The export formats and the run kinds each takes, from the one table (mlxft/export/formats.py)."""
    import textwrap

    from mlxft.export import all_formats

    lines = ["formats:"]
    for f in all_formats().values():
        lines.append(f"  {f.name}")
        lines += textwrap.wrap(f.summary, width=96, initial_indent="      ", subsequent_indent="      ")
        lines.append(f"      runs: {', '.join(f.kinds)}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlxft", description="Local-first fine-tuning on MLX: LoRA, QLoRA, DoRA and full fine-tuning of causal LMs.")
    p.add_argument("--version", action="version", version=f"mlxft {mlxft.__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("quickstart", help="fine-tune a real small model on bundled data, offline, in a few minutes")
    s.add_argument("what", nargs="?", choices=["llm", "vision"], default="llm",
                   help="llm (default): LoRA on SmolLM2-135M-Instruct; vision: EfficientNet-Lite0 on animal silhouettes")
    s.add_argument("--steps", type=int, default=60, help="llm: training steps")
    s.add_argument("--output-dir", default="runs")
    s.set_defaults(fn=cmd_quickstart)

    s = sub.add_parser("train", help="train from a recipe (key=value overrides any field), or --resume RUN_DIR")
    s.add_argument("recipe", nargs="?")
    s.add_argument("overrides", nargs="*", help="e.g. train.steps=50 lora.rank=16")
    s.add_argument("--resume", metavar="RUN_DIR")
    s.add_argument("--ranks", type=int, default=None, metavar="N",
                   help="data-parallel over N processes on this machine (MLX's ring backend on loopback); each computes 1/N of every "
                        "batch and gradients are summed, so the run equals one process with the same batch. A resume may use another N. "
                        "Default: 1 on a GPU; 2 on MLX's CPU backend when the kind, batch, cores and memory plan allow (MLXFT_RANKS pins it)")
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser("stop", help="ask a running training (from any terminal) to save a checkpoint and stop")
    s.add_argument("run_dir")
    s.set_defaults(fn=cmd_stop)

    s = sub.add_parser("runs", help="list the runs in a folder with status, step and losses; or --log-mlflow RUN: log a run to MLflow after the fact")
    s.add_argument("dir", nargs="?", default="runs")
    s.add_argument("--json", action="store_true")
    s.add_argument("--log-mlflow", metavar="RUN", help="log this run directory (recipe as params, metrics.jsonl as metrics, result, eval and loss curve as artifacts) into a new MLflow run")
    s.add_argument("--uri", help="with --log-mlflow: the tracking store or server (default: the recipe's tracking.mlflow.uri, $MLFLOW_TRACKING_URI, sqlite:///mlflow.db)")
    s.add_argument("--experiment", help="with --log-mlflow: the MLflow experiment (default: the recipe's, else mlxft)")
    s.set_defaults(fn=cmd_runs)

    s = sub.add_parser("tui", help="the terminal app: models, data, training with live charts, evaluation, chat")
    s.add_argument("--runs-dir", default="runs", help="where runs are listed and created")
    s.add_argument("--screen", default="models", choices=["models", "data", "train", "evaluate", "chat"])
    s.set_defaults(fn=cmd_tui)

    s = sub.add_parser("validate", help="check recipes without running them (key=value overrides apply to each, as in train)")
    s.add_argument("recipes", nargs="+", metavar="RECIPE [key=value]")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="an override to validate with (repeatable)")
    s.set_defaults(fn=cmd_validate)

    s = sub.add_parser("plan", help="estimate peak memory of a recipe before loading any weights")
    s.add_argument("recipe")
    s.add_argument("overrides", nargs="*", help="as in train: e.g. train.batch_size=2 data.max_seq_length=512")
    s.add_argument("--memory-gb", type=float, help="judge against this much memory (GB) instead of this machine's (or set MLXFT_MEMORY_GB)")
    s.add_argument("--ranks", type=int, default=None, metavar="N",
                   help="as in train --ranks: N data-parallel processes on this machine, each with its own model and its part of every batch "
                        "(default: what train picks without --ranks)")
    s.set_defaults(fn=cmd_plan)

    s = sub.add_parser("models", help="the model catalogue, with the memory each needs and whether it fits here")
    s.add_argument("--local", action="store_true", help="also list local models: ./models-local, GGUF imports and the Hugging Face cache")
    s.add_argument("--kind", choices=["all", "llm", "vision"], default="all",
                   help="llm: the language models only; vision: the image backbones (image-classify) only")
    s.add_argument("--json", action="store_true", help="one JSON object: memory, settings, a record per model and per vision backbone")
    s.add_argument("--memory-gb", type=float, help="judge against this much memory instead of this machine's (or set MLXFT_MEMORY_GB)")
    s.set_defaults(fn=cmd_models)

    s = sub.add_parser("import", help="turn a GGUF file (Ollama, LM Studio) into an MLX model folder")
    s.add_argument("gguf")
    s.add_argument("--out", help="output folder (default: models-local/<name>)")
    s.add_argument("--keep-quantized", action="store_true", help="keep the GGUF's 4/8-bit weights instead of dequantizing")
    s.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    s.set_defaults(fn=cmd_import)

    s = sub.add_parser("import-adapter", help="turn a PEFT LoRA/DoRA adapter folder into an mlx-lm adapter folder (--adapter also reads PEFT folders as they are)")
    s.add_argument("peft_dir", metavar="PEFT_DIR", help="the folder PEFT's save_pretrained wrote: adapter_config.json + adapter_model.safetensors")
    s.add_argument("--out", help="output folder, new or empty (default: adapters-local/<name>)")
    s.add_argument("--base", help="the base model (folder, catalogue key or cached Hub id), where the adapter's base_model_name_or_path is not at hand")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_import_adapter)

    s = sub.add_parser("export", help="write a run in a format other tools read: PEFT, a fused model, GGUF for llama.cpp/Ollama, ...",
                       epilog=_export_formats_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("run_dir")
    s.add_argument("--format", required=True, help="see the list below; a run exports in the formats its kind allows")
    s.add_argument("--out", help="the export folder (default RUN/exports/FORMAT); an earlier export there is replaced, nothing else is")
    s.add_argument("--dtype", help="the weights' type where the format has a choice: float16, bfloat16, float32 (gguf: f16, q8_0)")
    s.add_argument("--quantize", type=int, choices=[4, 8], help="fused into a quantized base: re-quantize to these bits (default: keep it dequantized)")
    s.add_argument("--base", help="the base model, where the run's recorded one has moved (a folder or Hub id)")
    s.add_argument("--with-base", action="store_true", help="gguf-adapter: also write the base model as base.gguf (at --dtype, default f16) for the Modelfile's FROM")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_export)

    s = sub.add_parser("push", help="export a run with a model card and upload it to a Hugging Face Hub repo (--dry-run: the folder only)")
    s.add_argument("run_dir")
    s.add_argument("--repo", required=True, help="OWNER/NAME on the Hub (created if missing; the token is HF_TOKEN or `hf auth login`'s)")
    s.add_argument("--format", default="mlx", help="the export format to push (default mlx: the result as saved); see `mlxft export --help`")
    s.add_argument("--private", action="store_true", help="create the repo private (a repo that exists keeps its visibility)")
    s.add_argument("--dry-run", action="store_true", help="write the folder that would be uploaded and list its files; no network")
    s.add_argument("--out", help="the folder to upload from (default RUN/exports/hub-FORMAT); an earlier export there is replaced, nothing else is")
    s.add_argument("--dtype", help="as for `mlxft export`")
    s.add_argument("--quantize", type=int, choices=[4, 8], help="as for `mlxft export`")
    s.add_argument("--base", help="the base model (a folder or Hub id) where the run's recorded one has moved; a Hub id is named in the card")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_push)

    s = sub.add_parser("doctor", help="OS, MLX device, BLAS speed, memory, Hub token, caches")
    s.add_argument("--json", action="store_true")
    s.add_argument("--quick", action="store_true", help="skip the reference-BLAS comparison")
    s.set_defaults(fn=cmd_doctor)

    for name, fn, help_ in (("generate", cmd_generate, "generate from a prompt, with or without an adapter"), ("chat", cmd_chat, "chat in the terminal")):
        s = sub.add_parser(name, help=help_)
        s.add_argument("--model", required=True, help="catalogue key, Hub id, folder or .gguf")
        s.add_argument("--adapter", help="adapter folder (mlx-lm or PEFT) or run directory")
        _add_sampling(s)
        if name == "generate":
            s.add_argument("--prompt", required=True)
            s.add_argument("--raw", action="store_true", help="do not apply the chat template")
            s.add_argument("--no-stream", action="store_true")
        else:
            s.add_argument("--json", action="store_true", help="headless side-by-side mode: JSON requests on stdin, JSON lines out (see below)")
            s.formatter_class = argparse.RawDescriptionHelpFormatter
            s.epilog = "--json protocol:\n" + _chat_json_protocol()
        s.set_defaults(fn=fn)

    s = sub.add_parser("eval", help="base vs fine-tuned on the same benchmark: target cluster, the rest, regressions, a verdict; "
                                    "or a classifier run (image-classify, lm-classify) on a labelled split (--against: two image runs compared)")
    s.add_argument("run", nargs="?", metavar="RUN", help="an image-classify or lm-classify run (or its model / adapter folder): evaluate it on --split of --data")
    s.add_argument("--model", help="language models: the base model")
    s.add_argument("--adapter", help="language models: adapter folder (mlx-lm or PEFT) or run directory")
    s.add_argument("--bench", help="language models: benchmark JSONL: id, prompt or messages, expected, cluster, grader")
    s.add_argument("--data", help="classifiers: the labelled data (default: the run's data.path)")
    s.add_argument("--split", default="test", help="classifiers: the labelled split to evaluate (default test)")
    s.add_argument("--against", metavar="RUN_A", help="image classifiers: also evaluate this earlier run on the same images and compare "
                                                       "(A before, RUN after): scores of each, regressions and fixes by path, a verdict")
    s.add_argument("--no-base", action="store_true", help="text classifiers: skip the zero-shot base (the untrained model scoring the label words)")
    s.add_argument("--threshold-for", metavar="LABEL=RECALL", help="image classifiers: choose the threshold on P(LABEL) that reaches RECALL on the valid split, and report the operating point")
    s.add_argument("--target", action="append", help="the cluster(s) the fine-tune targets (default: every labelled cluster; the whole benchmark when none is labelled)")
    s.add_argument("--grader", default="exact", help="default grader: exact, contains, regex, json, one-of, numeric")
    s.add_argument("--heldout", help="data folder for held-out loss of base and tuned")
    s.add_argument("--heldout-split", default="test")
    s.add_argument("--score", choices=["generate", "labels"], default="generate",
                   help="language models: generate answers and grade them (default), or rank each item's candidate labels by "
                        "log-probability (one forward pass per item; the model cannot answer with a sentence)")
    s.add_argument("--labels", help="with --score labels: the candidates, comma-separated (default: each item's one-of labels, "
                                    "else every distinct expected answer of the benchmark)")
    s.add_argument("--max-tokens", type=int, default=128)
    s.add_argument("--batch-size", type=_count, default=8)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--focus-class", help="classification: list false positives and negatives of this label")
    s.add_argument("--out", help="report folder (default: RUN_DIR/eval)")
    s.add_argument("--progress-json", action="store_true",
                   help='for programs: stdout is JSON lines, {"phase": "base", "done": 8, "total": 24} as batches finish '
                        '(image classifiers: the run\'s name as phase, and "model": 1, "models": 2), '
                        'then {"finished": true, "out": ..., "verdict": ..., "paths": {...}}')
    s.set_defaults(fn=cmd_eval)

    s = sub.add_parser("predict", help="label images or texts with a trained classifier (image-classify or lm-classify run)")
    s.add_argument("run", metavar="RUN", help="an image-classify run directory (or its model folder), or an lm-classify run (or its adapter folder)")
    s.add_argument("images", nargs="?", metavar="IMAGE|FOLDER|TEXT", help="one image, or a folder (every image under it); for a text classifier, one text")
    s.add_argument("--file", help="text classifiers: a .jsonl/.csv/.tsv/.parquet of texts (the prompt's columns, or `text`)")
    s.add_argument("--batch-size", type=_count, default=16, help="text classifiers: texts per forward pass")
    s.add_argument("--top-k", type=int, help="labels shown per input (default 1; --json: all)")
    s.add_argument("--json", action="store_true", help="one JSON object per input, in input order: image or text, label, scores")
    s.set_defaults(fn=cmd_predict)

    data = sub.add_parser("data", help="curate data: split, failure clusters, review, build training sets").add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    from mlxft.data.formats import FORMATS

    for name, fn, help_ in (("validate", cmd_data_validate, "report every problem in a data set; exit 1 when it is not usable"),
                            ("convert", cmd_data_convert, "write any supported source and format as training JSONL")):
        d = data.add_parser(name, help=help_)
        d.add_argument("path", help="a file, a folder of split files, a saved datasets folder, an image folder, or a Hub dataset id")
        d.add_argument("--format", default="auto", choices=["auto", *FORMATS])
        d.add_argument("--map", action="append", metavar="COLUMN=NAME", help="read COLUMN from your column NAME (repeatable)")
        d.add_argument("--allow-outside-paths", action="store_true", help="let an image folder's metadata or symlinks name images outside the folder")
        if name == "validate":
            d.add_argument("--model", help="tokenizer and chat template for token-length statistics")
            d.add_argument("--max-seq-length", type=int, default=2048)
            d.add_argument("--overlong", default="truncate", choices=["truncate", "drop"])
            d.add_argument("--json", action="store_true")
            d.add_argument("--openai", action="store_true", help="check OpenAI fine-tuning JSONL (a file, or a folder of split files) against OpenAI's rules")
        else:
            d.add_argument("--out", required=True)
            d.add_argument("--to", default="mlxft", choices=["mlxft", "openai"],
                           help="openai: OpenAI fine-tuning JSONL (SFT from chat/completion data, DPO from preference data), checked against its rules")
            d.add_argument("--to-chat", action="store_true", help="write prompt/completion pairs as two-turn conversations")
            d.add_argument("--overwrite", action="store_true")
        d.set_defaults(fn=fn)
    d = data.add_parser("show", help="print a page of rows with their file and line (unreadable rows too)")
    d.add_argument("path")
    d.add_argument("--split", default="train")
    d.add_argument("--start", type=int, default=0, help="first row, 0-based, counting unreadable rows")
    d.add_argument("--count", type=int, default=20)
    d.add_argument("--at", metavar="FILE:LINE", help="the page that holds this row (as validate names it)")
    d.add_argument("--json", action="store_true", help="one JSON object per row: where, and row or error")
    d.set_defaults(fn=cmd_data_show)
    d = data.add_parser("failures", help="group an evaluation run log's failures into clusters")
    d.add_argument("eval_log")
    d.add_argument("--examples", type=int, default=2)
    d.add_argument("--pass-threshold", type=float, default=1.0, help="numeric grades at or above this pass")
    d.set_defaults(fn=cmd_data_failures)
    d = data.add_parser("review", help="export a failure cluster for a person to correct, or --check a filled-in file")
    d.add_argument("eval_log", nargs="?")
    d.add_argument("--cluster", help="failure label to export (default: every failure)")
    d.add_argument("--out", help="review file to write (JSONL)")
    d.add_argument("--check", metavar="REVIEW", help="read a filled-in review file back and count used/skipped corrections")
    d.add_argument("--overwrite", action="store_true", help="replace an existing review file that has no corrections yet")
    d.add_argument("--pass-threshold", type=float, default=1.0)
    d.set_defaults(fn=cmd_data_review)
    d = data.add_parser("build", help="turn a reviewed file into an SFT set and preference pairs")
    d.add_argument("review")
    d.add_argument("--out", required=True, help="output folder (gets sft/ and preference/)")
    d.add_argument("--format", default="chat", choices=["chat", "completion"])
    d.add_argument("--keep-passing", metavar="EVAL_LOG", help="mix in examples the model already passes, from this log")
    d.add_argument("--keep-ratio", type=float, default=1.0, help="passing examples per correction")
    d.add_argument("--valid-fraction", type=float, default=0.1)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--overwrite", action="store_true")
    d.add_argument("--pass-threshold", type=float, default=1.0)
    d.set_defaults(fn=cmd_data_build)
    d = data.add_parser("split", help="seeded (and stratified) train/valid/test split written as JSONL")
    d.add_argument("input", help="a data file")
    d.add_argument("--out", required=True, help="folder for train.jsonl / valid.jsonl / test.jsonl")
    d.add_argument("--fractions", default="0.8,0.1,0.1")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--label-key", help="stratify by this column (e.g. label)")
    d.add_argument("--overwrite", action="store_true")
    d.set_defaults(fn=cmd_data_split)

    s = sub.add_parser("eval-loss", help="loss and perplexity of a model (and adapter) on a data split")
    s.add_argument("--model", required=True)
    s.add_argument("--adapter")
    s.add_argument("--data", required=True, help="data folder or .jsonl")
    s.add_argument("--split", default="test")
    s.add_argument("--format", default="auto", choices=["auto", "text", "completion", "chat"])
    s.add_argument("--batch-size", type=_count, default=4)
    s.add_argument("--max-seq-length", type=int, default=2048)
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_eval_loss)
    return p


def _exit_interrupted(*_) -> None:
    """Ctrl-C before a command runs (imports, parsing): nothing to clean up, so leave at once, without a traceback."""
    os.write(2, b"interrupted\n")
    os._exit(130)


def main(argv: list[str] | None = None) -> int:
    from_command_line = argv is None
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:
        previous = signal.signal(signal.SIGINT, _exit_interrupted)
    parser = build_parser()
    if argv is None and len(sys.argv) == 1 and sys.stdin.isatty() and sys.stdout.isatty():
        argv = ["tui"]  # a person at a terminal typed just `mlxft`
    args = parser.parse_args(argv)
    if not getattr(args, "fn", None):
        parser.print_help()
        return 0
    if in_main_thread:
        signal.signal(signal.SIGINT, previous if previous is not _exit_interrupted else signal.default_int_handler)
    try:
        return args.fn(args)
    except MlxftError as exc:
        _print_error(exc)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        if from_command_line:  # the real command line: leave now, so the interpreter cannot turn this into death by SIGINT
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        return 130
    except BrokenPipeError:  # `mlxft runs | head`: the reader left; nothing to say
        sys.stderr.close()
        return 0
    except Exception as exc:
        if os.environ.get("MLXFT_DEBUG"):
            raise
        _print_error(_unexpected(exc, args))
        return 1


def _unexpected(exc: Exception, args) -> MlxftError:
    """The last resort: a failure no check caught becomes one message, and its traceback goes to a file, not the screen."""
    from mlxft.errors import write_error

    if isinstance(exc, OSError) and exc.errno is not None and exc.filename:
        import errno

        refused = (errno.ENOSPC, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM)
        return write_error(exc, exc.filename, "write or read it") if exc.errno in refused else MlxftError(f"{exc.filename}: {exc.strerror}")
    if isinstance(exc, MemoryError):
        return MlxftError("out of memory", hint="try a smaller input, batch or model; `mlxft plan RECIPE` estimates what a training needs")
    if isinstance(exc, RecursionError):
        return MlxftError("the input is nested too deeply to read", hint="look for a row or file with thousands of nested brackets")
    import tempfile
    import traceback

    report = Path(tempfile.gettempdir()) / f"mlxft-error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    try:
        report.write_text(f"mlxft {mlxft.__version__}: {' '.join(sys.argv)}\n\n{traceback.format_exc()}", encoding="utf-8")
        where = f"the details are in {report}"
    except OSError:
        where = "run again with MLXFT_DEBUG=1 to see the details"
    return MlxftError(f"{args.command}: unexpected {type(exc).__name__}: {escape_controls(str(exc))}", hint=f"this is a bug in mlxft; {where} (please include it in a report)")


if __name__ == "__main__":
    sys.exit(main())
