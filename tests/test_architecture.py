"""DESIGN.md's arrows point one way (inside the engine `export -> train -> llm|vision -> data`, never back; nothing
below export/ imports it), and the run directory has one author."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mlxft"

# Modules of the key's package may import nothing from the packages it lists.
FORBIDDEN = {
    "mlxft.llm": ("mlxft.train", "mlxft.export"),
    "mlxft.vision": ("mlxft.export",),
    "mlxft.data": ("mlxft.train", "mlxft.llm", "mlxft.vision", "mlxft.export"),
    "mlxft.train": ("mlxft.export",),
    "mlxft.eval": ("mlxft.export", "mlxft.train"),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, list[str]]]:
    """(line, what one import may bring in, as absolute names) for every import in a file, lazy ones inside functions included."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, [alias.name]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from mlxft import train` imports mlxft.train as surely as `import mlxft.train` does.
            found.append((node.lineno, [base] + [f"{base}.{alias.name}" for alias in node.names]))
    return sorted(found)


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def arrow_violations() -> list[str]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        for owner, banned in FORBIDDEN.items():
            if not _within(module, owner):
                continue
            for line, names in _imports(path):
                hits = [(name, b) for name in names for b in banned if _within(name, b)]
                if hits:
                    name, hit = hits[0]
                    out.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {owner} imports {name} ({owner} must not import {hit})")
    return out


def test_llm_and_data_never_import_what_is_built_on_them():
    problems = arrow_violations()
    assert not problems, "arrows pointing back (DESIGN.md: train -> llm -> data):\n" + "\n".join(problems)


def test_the_check_sees_lazy_and_relative_imports(tmp_path, monkeypatch):
    fake = tmp_path / "mlxft"
    (fake / "data").mkdir(parents=True)
    (fake / "data" / "x.py").write_text("import os\nfrom mlxft import errors\n\ndef f():\n    from ..train import loop\n    import mlxft.llm.memory\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert arrow_violations() == [
        "mlxft/data/x.py:5: mlxft.data imports mlxft.train (mlxft.data must not import mlxft.train)",
        "mlxft/data/x.py:6: mlxft.data imports mlxft.llm.memory (mlxft.data must not import mlxft.llm)",
    ]


# The names inside a run directory; `mlxft/runs.py` (RunDir) spells them, everyone else asks it.
RUN_LAYOUT = {"recipe.yaml", "metrics.jsonl", "README.md", "model.json", "STOP", ".lock", "checkpoints", "best", "adapter", "eval",
              "state.json", "optimizer.safetensors"}


def test_only_rundir_spells_out_the_run_layout():
    spelled = []
    for path in sorted([*PACKAGE.rglob("*.py"), *(ROOT / "tui").rglob("*.py")]):
        if path == PACKAGE / "runs.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant) and node.right.value in RUN_LAYOUT:
                spelled.append((str(path.relative_to(ROOT)), node.lineno, node.right.value))
    assert not spelled, "the run layout spelled out by hand (ask RunDir, or use mlxft.runs' names):\n" + "\n".join(
        f"{file}:{line}: ... / {name!r}" for file, line, name in sorted(spelled))
