"""vidtag's layers, checked: a module imports its own layer and the layers below, never one above.

:data:`LAYERS` lists them from the bottom up.  Every import counts, at the
top of a module or inside a function (a lazy import is a dependency too).
``import vidtag`` and ``from vidtag import __version__`` read the package's
metadata and are allowed everywhere; the package root's other names are the
public API and belong to the api layer.

tools/ and benchmarks/ are scripts on top of the package: they import vidtag,
the standard library and third-party packages, never tests/, each other or
another script.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[1]

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (  # bottom up: (layer, its modules and packages)
    ("types", ("vidtag.types", "vidtag.errors", "vidtag.coco_classes", "vidtag.heap", "vidtag.timing")),
    ("ops", ("vidtag.ops",)),
    ("io", ("vidtag.io", "vidtag.weights", "vidtag.degrade", "vidtag.synth", "vidtag.testclip")),
    ("shots", ("vidtag.shots", "vidtag.stride", "vidtag.carry")),
    ("models", ("vidtag.models",)),
    ("linking", ("vidtag.linking", "vidtag.seqnms_reference")),
    ("formats", ("vidtag.formats",)),
    ("eval", ("vidtag.eval",)),
    ("pipeline", ("vidtag.pipeline", "vidtag.train")),
    ("batch", ("vidtag.batch", "vidtag.parallel", "vidtag.cluster", "vidtag.export")),
    ("api", ("vidtag.api", "vidtag")),  # "vidtag": the package root itself (vidtag/__init__.py), not its submodules
    ("cli", ("vidtag.cli",)),
)
LAYER_NAMES = [name for name, _ in LAYERS]
SCRIPT_FOLDERS = ("tools", "benchmarks")


def module_name(path: Path) -> str:
    """``vidtag/models/psla.py`` -> ``vidtag.models.psla``; ``vidtag/io/__init__.py`` -> ``vidtag.io``."""
    parts = path.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    """Every module of the package: dotted name -> path relative to the repository."""
    return {module_name(p.relative_to(REPO)): p.relative_to(REPO) for p in sorted((REPO / "vidtag").rglob("*.py"))}


def layer_of(module: str) -> int | None:
    """Index into :data:`LAYERS` of ``module`` (its longest entry there); None if it has none."""
    if module == "vidtag":
        return LAYER_NAMES.index("api")
    best, best_len = None, 0
    for index, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            if entry != "vidtag" and (module == entry or module.startswith(entry + ".")) and len(entry) > best_len:
                best, best_len = index, len(entry)
    return best


def imports(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import in ``tree``, however deep.

    ``from a import b`` names ``a.b`` when that is a module of ``known``, else
    ``a``; relative imports are resolved against ``module``.  Reading the
    package's metadata (``import vidtag``, ``from vidtag import __version__``)
    is not listed.
    """
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name != "vidtag":
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".") if is_package else module.split(".")[:-1]
                parent = parent[: len(parent) - (node.level - 1)]
                base = ".".join(parent + ([node.module] if node.module else []))
            for alias in node.names:
                if f"{base}.{alias.name}" in known:
                    yield node.lineno, f"{base}.{alias.name}"
                elif not (base == "vidtag" and alias.name.startswith("__")):
                    yield node.lineno, base


def layer_violations(path: Path, source: str, known: set[str]) -> list[str]:
    """``path:LINE imports vidtag.y (layer A imports higher layer B)`` for each import of a
    higher layer by the package module at ``path`` (relative to the repository)."""
    module = module_name(path)
    own = layer_of(module)
    if own is None:
        return [f"{path}: {module} is in no layer of tests/test_layers.py's LAYERS"]
    found = []
    for line, target in imports(ast.parse(source, str(path)), module, path.name == "__init__.py", known):
        if target != "vidtag" and not target.startswith("vidtag."):
            continue
        layer = layer_of(target)
        if layer is None:
            found.append(f"{path}:{line} imports {target} (in no layer)")
        elif layer > own:
            found.append(f"{path}:{line} imports {target} (layer {LAYER_NAMES[own]} imports higher layer {LAYER_NAMES[layer]})")
    return found


def local_names() -> set[str]:
    """Top-level names a script could import from this repository instead of the package:
    the folders beside vidtag and every script in tools/ and benchmarks/."""
    names = {"tests", *SCRIPT_FOLDERS}
    for folder in SCRIPT_FOLDERS:
        names.update(p.stem for p in (REPO / folder).glob("*.py"))
    return names


def script_violations(path: Path, source: str, local: set[str]) -> list[str]:
    """``path:LINE imports NAME (...)`` for each import of anything in the repository but vidtag."""
    found = []
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = ["." * node.level + (node.module or "")]
        else:
            continue
        for name in names:
            if name.startswith(".") or name.split(".")[0] in local:
                found.append(f"{path}:{node.lineno} imports {name} (tools and benchmarks import only the vidtag package)")
    return found


def test_every_module_is_in_one_layer_and_every_entry_exists():
    modules = package_modules()
    unplaced = [f"{path}: {name}" for name, path in modules.items() if layer_of(name) is None]
    entries = [entry for _, layer in LAYERS for entry in layer]
    stale = [e for e in entries if not any(m == e or m.startswith(e + ".") for m in modules)]
    assert not unplaced, "modules in no layer (add them to LAYERS):\n" + "\n".join(unplaced)
    assert not stale, "LAYERS names modules that do not exist:\n" + "\n".join(stale)
    assert len(entries) == len(set(entries)), "a module is in two layers"


def test_no_module_imports_a_higher_layer():
    modules = package_modules()
    known = set(modules)
    found = [v for path in modules.values() for v in layer_violations(path, (REPO / path).read_text(), known)]
    assert not found, "imports of a higher layer (" + " -> ".join(LAYER_NAMES) + "):\n" + "\n".join(found)


def test_tools_and_benchmarks_import_only_the_package():
    local = local_names()
    found = [
        v
        for folder in SCRIPT_FOLDERS
        for path in sorted((REPO / folder).glob("*.py"))
        for v in script_violations(path.relative_to(REPO), path.read_text(), local)
    ]
    assert not found, "\n".join(found)


def test_the_checks_report_what_they_should():
    known = set(package_modules())
    lazy_upward = "import numpy\n\n\ndef f():\n    from vidtag.cli import main\n    from vidtag import api\n"
    assert layer_violations(Path("vidtag/types.py"), lazy_upward, known) == [
        "vidtag/types.py:5 imports vidtag.cli (layer types imports higher layer cli)",
        "vidtag/types.py:6 imports vidtag.api (layer types imports higher layer api)",
    ]
    assert layer_violations(Path("vidtag/shots.py"), "from vidtag.models.preprocess import letterbox\n", known) == [
        "vidtag/shots.py:1 imports vidtag.models.preprocess (layer shots imports higher layer models)"
    ]
    relative = "from ..pipeline import detect_video\nfrom . import boxes\n"
    assert layer_violations(Path("vidtag/ops/sampling.py"), relative, known) == [
        "vidtag/ops/sampling.py:1 imports vidtag.pipeline (layer ops imports higher layer pipeline)"
    ]
    allowed = "import vidtag\nfrom vidtag import __version__\nfrom vidtag.types import Detections\nfrom vidtag.ops import boxes\n"
    assert layer_violations(Path("vidtag/models/nanodet.py"), allowed, known) == []
    assert layer_violations(Path("vidtag/new.py"), "", known) == [
        "vidtag/new.py: vidtag.new is in no layer of tests/test_layers.py's LAYERS"
    ]

    local = local_names() | {"helpers"}
    script = "import numpy\nimport vidtag.api\nimport robustness\n\n\ndef main():\n    from tests.clips import make_clip\n    from .helpers import x\n"
    assert script_violations(Path("tools/x.py"), script, local) == [
        "tools/x.py:3 imports robustness (tools and benchmarks import only the vidtag package)",
        "tools/x.py:7 imports tests.clips (tools and benchmarks import only the vidtag package)",
        "tools/x.py:8 imports .helpers (tools and benchmarks import only the vidtag package)",
    ]
