"""The model card (README.md) of an export that goes to the Hub: metadata the Hub reads, and what a person needs.

Built with huggingface_hub's `ModelCard` / `ModelCardData`, from the run directory alone: the recipe, metrics.jsonl
(losses, time, memory), model.json, RUN/eval (what `mlxft eval` wrote) and the export folder itself, whose files say
what it is (an mlx-lm adapter, a PEFT adapter, GGUF, a timm or transformers model), so a format added later gets the
right card without a change here. The loss curve is drawn next to it as loss_curve.png.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from mlxft.atomic import atomic_write_text
from mlxft.runs import RunDir

CARD_NAME = "README.md"
LOSS_PNG = "loss_curve.png"
MLXFT_URL = "https://github.com/mlxft/mlxft"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_CACHE_FOLDER = re.compile(r"^models--([^/]+?)--(.+)$")  # huggingface_hub's cache: models--OWNER--NAME/snapshots/SHA

PIPELINES = {"lm-classify": "text-classification", "image-classify": "image-classification"}  # every other kind generates text
KIND_WORDS = {"lm-lora": "a LoRA fine-tune", "lm-qlora": "a QLoRA fine-tune (LoRA on a quantized base)", "lm-dora": "a DoRA fine-tune",
              "lm-full": "a full fine-tune", "lm-dpo": "a DPO preference tune", "lm-orpo": "an ORPO preference tune",
              "lm-classify": "a text classifier", "image-classify": "an image classifier"}

METHOD_NAMES = {"lora": "LoRA", "dora": "DoRA"}


# -- what the export folder is ------------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """What an export folder holds, read from its files: the library that loads it and how."""

    kind: str                 # mlx-adapter | mlx-model | mlx-image | peft | gguf | timm | transformers | files
    library: str | None       # the card's library_name
    adapter: bool             # an adapter on the base (else a whole model)
    what: str                 # a phrase for the card
    task: str | None = None   # PEFT's task_type
    gguf: tuple[str, ...] = ()


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_layout(folder: Path, fmt: str) -> Layout:
    """What `folder` (an export) is, from its files."""
    folder = Path(folder)
    adapter_cfg = _json(folder / "adapter_config.json")
    config = _json(folder / "config.json")
    ggufs = tuple(sorted(p.name for p in folder.glob("*.gguf")))
    if adapter_cfg.get("peft_type"):
        task = adapter_cfg.get("task_type")
        return Layout("peft", "peft", True, f"a PEFT {adapter_cfg['peft_type']} adapter" + (" (DoRA)" if adapter_cfg.get("use_dora") else ""), task=task)
    if ggufs:
        modelfile = folder / "Modelfile"
        text = modelfile.read_text(encoding="utf-8", errors="replace") if modelfile.is_file() else ""
        is_adapter = any(line.strip().upper().startswith("ADAPTER") for line in text.splitlines())
        return Layout("gguf", None, is_adapter, "a LoRA adapter in GGUF (llama.cpp, Ollama)" if is_adapter else "a GGUF model (llama.cpp, Ollama)", gguf=ggufs)
    if (folder / "adapters.safetensors").is_file():
        full = adapter_cfg.get("fine_tune_type") == "full"
        return Layout("mlx-adapter", "mlx", not full, "fine-tuned weights in mlx-lm's adapter format" if full
                      else f"an mlx-lm {METHOD_NAMES.get(adapter_cfg.get('fine_tune_type', 'lora'), 'LoRA')} adapter")
    if fmt == "mlx" and (folder / "model.safetensors").is_file() and "id2label" in config:
        return Layout("mlx-image", "mlx", False, "an image classifier in mlxft's MLX layout")
    if "pretrained_cfg" in config or ("architecture" in config and "architectures" not in config):
        return Layout("timm", "timm", False, "a timm model")
    if "quantization" in config and config.get("model_type"):
        return Layout("mlx-model", "mlx", False, f"a quantized MLX model ({config['quantization'].get('bits', '?')}-bit)")
    if config.get("architectures") or config.get("model_type"):
        return Layout("transformers", "transformers", False, "a transformers model")
    return Layout("files", "mlx" if fmt == "mlx" else None, False, f"the {fmt} export")


# -- what the run says about itself ----------------------------------------------------------------------
@dataclass
class RunFacts:
    """Everything the card states, gathered once from the run directory."""

    name: str
    kind: str
    model: str                      # as the recipe names it
    base_id: str | None             # the base on the Hub, where known
    license: str | None
    datasets: list[str]
    train_samples: int | None = None
    valid_samples: int | None = None
    steps: int | None = None
    trainable_parameters: int | None = None
    total_parameters: int | None = None
    compute_dtype: str | None = None
    device: str | None = None
    seconds: float | None = None
    peak_memory_gb: float | None = None
    final_train_loss: float | None = None
    final_val_loss: float | None = None
    best_val_loss: float | None = None
    best_step: int | None = None
    status: str | None = None
    evals: list = field(default_factory=list)   # EvalFinding
    problems: list = field(default_factory=list)


def base_model_id(model: str, kind: str, override: str | None = None) -> str | None:
    """The base model's Hub id: the catalogue's for a key, the spec itself for a Hub id, the cache's name for a folder in
    huggingface_hub's cache; None for other local folders and GGUF files (the card then names the base as the recipe does)."""
    spec = (override or model).strip()
    try:
        if kind == "image-classify":
            from mlxft.vision.catalogue import find_backbone

            entry = find_backbone(spec)
        else:
            from mlxft.llm.catalogue import find_model

            entry = find_model(spec)
    except Exception:  # a broken catalogue must not stop a push; the spec is judged on its own below
        entry = None
    if entry is not None:
        return entry.hub_id
    path = Path(spec).expanduser()
    if path.exists():
        for part in (path.resolve(), *path.resolve().parents):
            m = _CACHE_FOLDER.match(part.name)
            if m and (part / "snapshots").is_dir():
                return f"{m.group(1)}/{m.group(2)}"
        return None
    return spec if HUB_ID.match(spec) else None


def base_license(model: str, kind: str, model_path: str | None) -> str | None:
    """The base's licence: the catalogue's, else the license field of the base folder's own model card."""
    try:
        if kind == "image-classify":
            from mlxft.vision.catalogue import find_backbone as find
        else:
            from mlxft.llm.catalogue import find_model as find
        entry = find(model)
    except Exception:
        entry = None
    if entry is not None and entry.license:
        return entry.license
    for folder in (model_path, model):
        if not folder:
            continue
        readme = Path(folder).expanduser().joinpath("README.md")  # the base model's own card, not a run's README
        if readme.is_file():
            try:
                from huggingface_hub import metadata_load

                value = (metadata_load(readme) or {}).get("license")
            except Exception:  # a base card with broken YAML: no licence known, rather than no push
                value = None
            if isinstance(value, str) and value:
                return value
    return None


def dataset_ids(data_path: str) -> list[str]:
    """The training data's Hub id when it is one (a local file or folder is not named in the card's metadata)."""
    from mlxft.data.readers import _hub_id, detect_source
    from mlxft.errors import MlxftError

    try:
        return [_hub_id(data_path)] if detect_source(data_path) == "hub" else []
    except MlxftError:
        return []


def gather_facts(run: RunDir, recipe, base_override: str | None = None) -> RunFacts:
    from mlxft.events import EvalReport, RunFinished, RunStarted, StepReport

    problems: list[str] = []
    events = run.events(problems)
    model_json = _json(run.model_json_path)
    facts = RunFacts(name=run.path.name, kind=recipe.kind, model=recipe.model, base_id=base_model_id(recipe.model, recipe.kind, base_override),
                     license=base_license(base_override or recipe.model, recipe.kind, None if base_override else model_json.get("model_path")),
                     datasets=dataset_ids(recipe.data.path), problems=problems)
    finished_seconds = 0.0
    for e in events:
        if isinstance(e, RunStarted):
            facts.train_samples, facts.valid_samples = e.train_samples, e.valid_samples
            facts.trainable_parameters, facts.total_parameters = e.trainable_parameters, e.total_parameters
            facts.compute_dtype, facts.device, facts.steps = e.compute_dtype, e.device, e.total_steps
        elif isinstance(e, StepReport):
            facts.final_train_loss, facts.seconds = e.loss, e.elapsed_s
            facts.peak_memory_gb = max(facts.peak_memory_gb or 0.0, e.peak_memory_gb)
        elif isinstance(e, EvalReport):
            facts.final_val_loss = e.val_loss
            if facts.best_val_loss is None or e.val_loss < facts.best_val_loss:
                facts.best_val_loss, facts.best_step = e.val_loss, e.step
        elif isinstance(e, RunFinished):
            facts.status, facts.steps = e.status, e.step
            finished_seconds += e.seconds
            if e.final_train_loss is not None:
                facts.final_train_loss = e.final_train_loss
    if facts.seconds is None and finished_seconds:
        facts.seconds = finished_seconds
    facts.evals = read_evals(run, problems)
    return facts


# -- what `mlxft eval` found ----------------------------------------------------------------------------
@dataclass
class EvalFinding:
    """One evaluation report of the run: lines for the card and the results for the Hub's model-index."""

    source: str                 # the summary.json, relative to the run
    lines: list[str]
    results: list               # huggingface_hub EvalResult
    verdict: str | None = None


def _pct(value) -> str:
    return f"{value:.1%}" if isinstance(value, (int, float)) else "-"


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def read_evals(run: RunDir, problems: list[str]) -> list[EvalFinding]:
    """Every summary `mlxft eval` left in RUN/eval (the base-vs-tuned comparison, or a classifier's split reports)."""
    folder = run.eval_dir
    if not folder.is_dir():
        return []
    found = []
    for summary in [folder / "summary.json", *sorted(folder.glob("*/summary.json"))]:
        if not summary.is_file():
            continue
        data = _json(summary)
        rel = str(summary.relative_to(run.path))
        try:
            finding = _compare_finding(data, rel) if "verdict" in data and "target" in data else _classifier_finding(data, rel, run)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            finding = None
            problems.append(f"{rel}: not a summary mlxft eval writes ({type(exc).__name__}: {exc}); left out of the card")
        if finding is not None:
            found.append(finding)
    return found


def _compare_finding(s: dict, rel: str) -> EvalFinding:
    from huggingface_hub import EvalResult

    bench = Path(str(s.get("bench", "benchmark")))
    rows = [("target" if s.get("targets") else "whole benchmark", s["target"]), ("rest", s.get("rest") or {})]
    lines = [f"Base vs fine-tuned on the benchmark `{bench.name}` (greedy decoding, graded answers):", "",
             "| | items | base | tuned | change | fixes | regressions |", "|---|---:|---:|---:|---:|---:|---:|"]
    results = []
    for name, g in rows:
        if not g or not g.get("size"):
            continue
        change = g.get("change")
        change_text = f"{change * 100:+.1f} pts" if _number(change) else "-"
        label = s.get("target_name", name) if name != "rest" else "rest"
        lines.append(f"| {label} | {g['size']} | {_pct(g.get('base_accuracy'))} | {_pct(g.get('tuned_accuracy'))} | {change_text} | {g.get('fixes', 0)} | {g.get('regressions', 0)} |")
        if _number(g.get("tuned_accuracy")):
            results.append(EvalResult(task_type="text-generation", dataset_type=bench.stem, dataset_name=bench.name, metric_type="accuracy",
                                      metric_value=round(float(g["tuned_accuracy"]), 4), metric_name=f"accuracy ({label})"))
    lines += ["", f"**Verdict: {s['verdict']}**" + (f" — {s['verdict_text']}" if s.get("verdict_text") else "")]
    held = s.get("heldout")
    if isinstance(held, dict) and isinstance(held.get("tuned"), dict) and _number(held["tuned"].get("loss")):
        lines += ["", f"Held-out loss ({held.get('split', 'test')}, {held.get('samples', '?')} samples): base {held['base']['loss']:.4f} -> tuned {held['tuned']['loss']:.4f}."]
        if _number(held["tuned"].get("perplexity")):
            results.append(EvalResult(task_type="text-generation", dataset_type=Path(str(held.get("data", "heldout"))).name, dataset_name=Path(str(held.get("data", "heldout"))).name,
                                      dataset_split=held.get("split"), metric_type="perplexity", metric_value=round(float(held["tuned"]["perplexity"]), 4)))
    return EvalFinding(rel, lines, results, verdict=s["verdict"])


def _classifier_finding(s: dict, rel: str, run: RunDir) -> EvalFinding | None:
    from huggingface_hub import EvalResult

    if not _number(s.get("accuracy")):
        return None
    split = str(s.get("split", Path(rel).parent.name))
    task = "image-classification" if "images" in s else "text-classification"
    count = s.get("images", s.get("texts", "?"))
    try:
        data = run.load_recipe().data.path
    except Exception:
        data = "data"
    ids = dataset_ids(data)
    dataset = ids[0] if ids else Path(data).name
    lines = [f"On the `{split}` split ({count} {'images' if task == 'image-classification' else 'texts'}): accuracy {_pct(s['accuracy'])}"
             + (f", macro F1 {s['macro_f1']:.3f}" if _number(s.get("macro_f1")) else "")
             + (f", AUC {s['auc']:.3f}" if _number(s.get("auc")) else "")
             + (f", ECE {s['ece']:.3f}" if _number(s.get("ece")) else "") + "."]
    base = s.get("base")
    if isinstance(base, dict) and _number(base.get("accuracy")):
        lines += ["", f"The untrained base, scoring the label words zero-shot: accuracy {_pct(base['accuracy'])}."]
    results = [EvalResult(task_type=task, dataset_type=dataset, dataset_name=dataset, dataset_split=split, metric_type="accuracy",
                          metric_value=round(float(s["accuracy"]), 4))]
    if _number(s.get("macro_f1")):
        results.append(EvalResult(task_type=task, dataset_type=dataset, dataset_name=dataset, dataset_split=split, metric_type="f1",
                                  metric_value=round(float(s["macro_f1"]), 4), metric_name="macro F1"))
    verdict = None
    for comparison in sorted(Path(run.path / rel).parent.glob("compare-*.json")):  # an image run compared with an earlier one
        c = _json(comparison)
        if c.get("verdict"):
            verdict = c["verdict"]
            before = (c.get("before") or {}).get("name", "the earlier run")
            lines += ["", f"Against the run `{before}` on the same images: accuracy {_pct((c.get('before') or {}).get('accuracy'))} -> {_pct((c.get('after') or {}).get('accuracy'))}. "
                         f"**Verdict: {verdict}**" + (f" — {c['verdict_text']}" if c.get("verdict_text") else "")]
    return EvalFinding(rel, lines, results, verdict=verdict)


# -- the card --------------------------------------------------------------------------------------------
def _home_relative(text: str) -> str:
    """Local paths in the recipe, with the home folder as ~ (a public card need not carry a user name)."""
    home = str(Path.home())
    return text.replace(home + "/", "~/") if home not in ("/", "") else text


def card_recipe(recipe) -> str:
    """The recipe as the card shows it: the resolved YAML without the tracking section (a server's address is no one's business)."""
    import yaml

    data = recipe.to_dict()
    data.pop("tracking", None)
    return _home_relative(yaml.safe_dump(data, sort_keys=False))


def _sentence_start(text: str) -> str:
    return text[:1].upper() + text[1:]


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h} h {m:02d} min" if h else (f"{m} min {s:02d} s" if m else f"{s} s")


def _hardware(facts: RunFacts) -> str:
    from mlxft.backend import GB, cpu_name, machine_memory

    backend = {"cpu": "MLX CPU backend", "metal": "MLX Metal (Apple GPU)", "gpu": "MLX CUDA GPU"}.get(facts.device or "", facts.device or "MLX")
    try:
        machine = f"{cpu_name()}, {machine_memory()[0] / GB:.0f} GB memory"
    except Exception:  # facts about the machine are a courtesy; a push must not fail on them
        machine = "this machine"
    gb = facts.peak_memory_gb
    peak = (f"; peak memory {gb:.2f} GB" if gb >= 1 else f"; peak memory {gb * 1000:.0f} MB") if gb else ""
    return f"{backend} ({machine}){peak}"


def _usage(layout: Layout, facts: RunFacts, repo: str, folder: Path) -> list[str]:
    """How to use the pushed folder: only the tools that read this format."""
    base = facts.base_id or "BASE_MODEL"
    local = repo.split("/")[-1]
    get = [f"hf download {repo} --local-dir {local}"]
    lines: list[str] = []
    if facts.base_id is None and layout.adapter:
        lines += [f"This adapter was trained on `{Path(facts.model).name}` (a local model, not on the Hub): use it in place of BASE_MODEL below.", ""]
    if layout.kind == "mlx-adapter" and facts.kind == "lm-classify":
        lines += ["With mlxft (the classifier's head and labels are in this folder; it needs the base model):", "", "```bash",
                  *get, f"mlxft predict {local} \"some text\"", "```"]
    elif layout.kind == "mlx-adapter":
        lines += ["With [mlx-lm](https://github.com/ml-explore/mlx-lm):", "", "```bash", "pip install mlx-lm", *get,
                  f"mlx_lm.generate --model {base} --adapter-path {local} --prompt \"Hello\"", "```", "", "```python",
                  "from huggingface_hub import snapshot_download", "from mlx_lm import generate, load", "",
                  f"model, tokenizer = load(\"{base}\", adapter_path=snapshot_download(\"{repo}\"))",
                  "print(generate(model, tokenizer, prompt=\"Hello\", max_tokens=100))", "```", "",
                  f"With mlxft: `mlxft chat --model {base} --adapter {local}`."]
    elif layout.kind == "mlx-image":
        lines += ["With mlxft:", "", "```bash", *get, f"mlxft predict {local} image.jpg", "```", "", "```python",
                  "import mlxft", "", f"classify = mlxft.image_classifier(\"{local}\")", "print(classify(\"image.jpg\"))", "```"]
    elif layout.kind == "peft":
        auto = "AutoPeftModelForSequenceClassification" if layout.task == "SEQ_CLS" else "AutoPeftModelForCausalLM"
        lines += ["With [PEFT](https://github.com/huggingface/peft) and transformers:", "", "```python", f"from peft import {auto}",
                  "from transformers import AutoTokenizer", "", f"model = {auto}.from_pretrained(\"{repo}\")",
                  f"tokenizer = AutoTokenizer.from_pretrained(\"{base}\")", "```"]
    elif layout.kind == "gguf":
        first = layout.gguf[0]
        if layout.adapter:
            lines += ["With [Ollama](https://ollama.com) (the Modelfile names the base model and this adapter):", "", "```bash", *get,
                      f"cd {local} && ollama create {local} -f Modelfile && ollama run {local}", "```", "",
                      f"With llama.cpp: `llama-cli -m BASE_MODEL.gguf --lora {first}`."]
        else:
            lines += ["With [Ollama](https://ollama.com):", "", "```bash", f"ollama run hf.co/{repo}", "```", "",
                      "or with the Modelfile in this repository (chat template and parameters):", "", "```bash", *get,
                      f"cd {local} && ollama create {local} -f Modelfile && ollama run {local}", "```", "",
                      f"With llama.cpp: `llama-cli -hf {repo}` or `llama-cli -m {first}`."]
    elif layout.kind in ("transformers", "mlx-model") and facts.kind not in ("lm-classify", "image-classify"):
        lines += ["With [mlx-lm](https://github.com/ml-explore/mlx-lm):", "", "```bash", "pip install mlx-lm",
                  f"mlx_lm.generate --model {repo} --prompt \"Hello\"", "```"]
        if layout.kind == "transformers":
            lines += ["", "With transformers:", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
                      f"model = AutoModelForCausalLM.from_pretrained(\"{repo}\")", f"tokenizer = AutoTokenizer.from_pretrained(\"{repo}\")", "```"]
    elif layout.kind == "transformers" and facts.kind == "image-classify":
        lines += ["With transformers:", "", "```python", "from transformers import pipeline", "",
                  f"classify = pipeline(\"image-classification\", model=\"{repo}\")", "print(classify(\"image.jpg\"))", "```"]
    elif layout.kind == "transformers":
        lines += ["With transformers:", "", "```python", "from transformers import pipeline", "",
                  f"classify = pipeline(\"text-classification\", model=\"{repo}\")", "print(classify(\"some text\"))", "```"]
    elif layout.kind == "timm":
        lines += ["With [timm](https://github.com/huggingface/pytorch-image-models):", "", "```python", "import timm", "",
                  f"model = timm.create_model(\"hf-hub:{repo}\", pretrained=True).eval()", "```"]
    else:
        lines += ["Download it with:", "", "```bash", *get, "```"]
    return lines


def build_card(run: RunDir, recipe, folder: Path, fmt: str, repo: str, base_override: str | None = None, facts: RunFacts | None = None,
               export_notes: list[str] = ()):
    """The ModelCard for the export in `folder` of `run`, to be pushed to `repo`."""
    from huggingface_hub import ModelCard, ModelCardData

    facts = facts or gather_facts(run, recipe, base_override)
    layout = read_layout(folder, fmt)
    tags = ["mlxft", "mlx" if layout.library != "mlx" else None, recipe.kind, recipe.method if recipe.method != recipe.kind else None,
            "gguf" if layout.kind == "gguf" else None, "lora" if recipe.method in ("lora", "dora") and layout.adapter else None]
    extra = {}
    if facts.base_id:
        relation = "adapter" if layout.adapter else "finetune"
        tags.append(f"base_model:{relation}:{facts.base_id}")
        extra["base_model_relation"] = relation
    results = [r for finding in facts.evals for r in finding.results]
    data = ModelCardData(
        base_model=facts.base_id, library_name=layout.library, pipeline_tag=PIPELINES.get(recipe.kind, "text-generation"),
        license=facts.license, datasets=facts.datasets or None, tags=list(dict.fromkeys(t for t in tags if t)),
        model_name=repo.split("/")[-1], eval_results=results or None, **extra,
    )
    content = f"---\n{data.to_yaml()}\n---\n\n" + card_body(facts, layout, recipe, repo, folder, export_notes) + "\n"
    return ModelCard(content, ignore_metadata_errors=False)


def card_body(facts: RunFacts, layout: Layout, recipe, repo: str, folder: Path, export_notes: list[str] = ()) -> str:
    """The card's Markdown: every line escaped, since names, paths and eval texts come from the user."""
    from mlxft.textsafe import escape_lines

    base_text = f"[{facts.base_id}](https://huggingface.co/{facts.base_id})" if facts.base_id else f"`{Path(facts.model).name}`"
    lines = [f"# {repo.split('/')[-1]}", "",
             f"{_sentence_start(KIND_WORDS.get(facts.kind, facts.kind))} of {base_text}, trained with [mlxft]({MLXFT_URL}) on MLX. "
             f"This repository holds {layout.what}.", ""]
    lines += ["## Results", ""]
    rows = [("final training loss", facts.final_train_loss), ("final validation loss", facts.final_val_loss),
            ("best validation loss", facts.best_val_loss)]
    shown = [(k, v) for k, v in rows if v is not None]
    if shown:
        lines += ["| | |", "|---|---:|", *(f"| {k} | {v:.4f}" + (f" (step {facts.best_step})" if k.startswith("best") and facts.best_step is not None else "") + " |" for k, v in shown), ""]
    else:
        lines += ["No losses were recorded (metrics.jsonl holds none).", ""]
    if (folder / LOSS_PNG).is_file():
        lines += [f"![Training and validation loss]({LOSS_PNG})", ""]
    if facts.evals:
        lines += ["## Evaluation", ""]
        for finding in facts.evals:
            lines += [*finding.lines, ""]
    lines += ["## How to use it", "", *_usage(layout, facts, repo, folder), ""]
    if export_notes:  # what the export measured or had to say (e.g. how much of a fine-tune survived a fuse into a quantized base)
        lines += ["## About this export", "", *(f"- {_home_relative(note)}" for note in export_notes), ""]
    lines += ["## Training", ""]
    data_text = ", ".join(f"[{d}](https://huggingface.co/datasets/{d})" for d in facts.datasets) or "a local data set"
    counts = f" ({facts.train_samples} training, {facts.valid_samples} validation samples)" if facts.train_samples is not None else ""
    params = (f"- Trainable parameters: {facts.trainable_parameters:,} of {facts.total_parameters:,}"
              if facts.trainable_parameters is not None and facts.total_parameters else None)
    lines += [f"- Data: {data_text}{counts}", f"- Steps: {facts.steps if facts.steps is not None else 'unknown'}"
              + (f" ({facts.status})" if facts.status and facts.status != "completed" else ""),
              *([params] if params else []),
              f"- Training time: {_duration(facts.seconds)}", f"- Hardware: {_hardware(facts)}",
              *([f"- Compute dtype: {facts.compute_dtype}"] if facts.compute_dtype else []),
              f"- License: {facts.license or 'not known (the base model’s own licence applies)'}", "",
              "The recipe (`mlxft train recipe.yaml` trains it again):", "", "```yaml", *card_recipe(recipe).rstrip().splitlines(), "```", ""]
    return escape_lines(lines)


def write_card(run: RunDir, recipe, folder: Path, fmt: str, repo: str, base_override: str | None = None, export_notes: list[str] = ()) -> list[str]:
    """README.md (the model card) and loss_curve.png in `folder`; returns notes (what was left out, and why).

    `export_notes` are the export's own notes (what it measured); the card repeats them for the people who download it."""
    from mlxft.eval.curves import draw_loss_curve, loss_curve

    notes = []
    problems: list[str] = []
    curve = loss_curve(run.events(problems))
    if curve:
        draw_loss_curve(curve, Path(folder) / LOSS_PNG, title=f"{run.path.name}: loss")
    else:
        notes.append("no losses in metrics.jsonl: the card has no loss curve")
    facts = gather_facts(run, recipe, base_override)
    notes += facts.problems
    recorded = _json(Path(folder) / "adapter_config.json").get("base_model_name_or_path")
    if facts.base_id is None and isinstance(recorded, str) and HUB_ID.match(recorded) and not Path(recorded).exists():
        facts.base_id = recorded  # what the export itself recorded as the base (e.g. a PEFT export given --base)
    if facts.base_id is None:
        notes.append(f"the base `{recipe.model}` has no known Hub id: the card has no base_model (pass --base OWNER/NAME to name it)")
    card = build_card(run, recipe, folder, fmt, repo, base_override, facts=facts, export_notes=list(export_notes))
    atomic_write_text(Path(folder) / CARD_NAME, str(card))
    return notes
