"""The layers of the package, checked: higher layers use lower ones, never the reverse
(cli -> study -> recipes -> tasks / peft -> model -> data), and the analysis reads results through
the store alone: it loads neither torch nor the recipes. Every import statement counts, those inside
functions too."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "vlpeft"
UTILITIES = {"vlpeft", "vlpeft.errors", "vlpeft.io", "vlpeft.validate", "vlpeft.faults", "vlpeft.runrecord",
             "vlpeft.convergence", "vlpeft.lock", "vlpeft.catalogue", "vlpeft.store"}
# package -> the vlpeft packages (or modules) it may import, besides itself and the utilities
ALLOWED = {
    "data": set(),
    "model": {"data"},
    "peft": {"model", "data"},
    "tasks": {"model", "data"},
    "recipes": {"tasks", "peft", "model", "data"},
    "analysis": {"data.subsets"},
    "study": {"recipes", "tasks", "peft", "model", "data", "analysis"},
    "cli": {"study", "recipes", "tasks", "peft", "model", "data", "analysis"},
    "utilities": set(),
}


def layer_of(module: str) -> str:
    if module in UTILITIES:
        return "utilities"
    return module.split(".")[1]


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}  # `from vlpeft.study import runner`
    return {m for m in found if m == "vlpeft" or m.startswith("vlpeft.")}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def allowed(importer: str, imported: str) -> bool:
    mine, theirs = layer_of(importer), layer_of(imported)
    if theirs == "utilities" or mine == theirs:
        return True
    rest = imported.removeprefix("vlpeft.")
    return any(rest == a or rest.startswith(a + ".") for a in ALLOWED[mine]) or (
        "." not in rest and any(a.startswith(rest + ".") for a in ALLOWED[mine]))  # the package of an allowed module


def test_no_module_imports_a_layer_above_its_own():
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        importer = module_name(path)
        for imported in sorted(imports_of(path)):
            if imported.count(".") >= 2 and imported.rsplit(".", 1)[0] in imports_of(path) and not (
                    SRC.parent / (imported.replace(".", "/") + ".py")).exists() and not (
                    SRC.parent / imported.replace(".", "/")).is_dir():
                continue  # `from vlpeft.x import name`: a name, not a module
            if importer == "vlpeft" and imported.startswith("vlpeft.model"):
                continue  # the top-level vlpeft.load_model shortcut
            if not allowed(importer, imported):
                wrong.append(f"{importer} imports {imported}")
    assert wrong == []


def test_the_analysis_loads_neither_torch_nor_the_recipes():
    code = ("import sys; import vlpeft.analysis.report, vlpeft.analysis.results, vlpeft.analysis.advise, "
            "vlpeft.analysis.claims, vlpeft.analysis.figures, vlpeft.analysis.stats, vlpeft.analysis.consistency; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith(('vlpeft.recipes', 'vlpeft.model', "
            "'vlpeft.tasks', 'vlpeft.peft', 'vlpeft.study'))))")  # the store is vlpeft.store, below both
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


@pytest.mark.parametrize("importer, imported", [("vlpeft.model.blip", "vlpeft.peft.base"),
                                                ("vlpeft.analysis.report", "vlpeft.recipes.config"),
                                                ("vlpeft.tasks.vqa", "vlpeft.study.spec"),
                                                ("vlpeft.analysis.report", "vlpeft.study.runner"),
                                                ("vlpeft.analysis.results", "vlpeft.study.runner"),
                                                ("vlpeft.analysis.results", "vlpeft.study")])
def test_the_check_would_catch_an_upward_import(importer, imported):
    assert not allowed(importer, imported)
