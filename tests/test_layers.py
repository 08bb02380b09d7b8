"""The house rules of docs/architecture.md, checked on the source: the package's layers import only their own
layer and those below, there are no import circles, and imports of the package's own modules sit at the top of
modules except in the command line's ``run`` functions (which keep TensorFlow out of ``ipguard --help``)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ipguard_tf"
#: bottom first
LAYERS = ["core", "io", "models", "methods", "zoo", "verification", "evaluation", "protect", "owner", "cli"]


def _imports():
    """(module file, importing line, imported ipguard_tf module, inside a function?) for every import of the
    package's own modules."""
    out = []
    for f in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(f.read_text())
        inner = {
            id(n)
            for fn in ast.walk(tree)
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
            for n in ast.walk(fn)
            if isinstance(n, (ast.Import, ast.ImportFrom))
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{f}:{node.lineno}: relative import"
                names = [node.module] if node.module and node.module.startswith("ipguard_tf") else []
                names = (
                    [
                        f"{node.module}.{a.name}"
                        if (PACKAGE.parent / f"{node.module}.{a.name}".replace(".", "/")).with_suffix(".py").exists()
                        else node.module
                        for a in node.names
                    ]
                    if names
                    else []
                )
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("ipguard_tf")]
            else:
                continue
            out.extend((f, node.lineno, name, id(node) in inner) for name in names)
    return out


def _layer(path_or_module) -> int:
    parts = (
        path_or_module.relative_to(PACKAGE).parts if isinstance(path_or_module, Path) else path_or_module.split(".")[1:]
    )
    return LAYERS.index(parts[0]) if len(parts) > 1 or parts[0] in LAYERS else -1


def test_every_module_belongs_to_a_layer():
    loose = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    assert not loose, f"modules outside the layers: {loose}"
    assert sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()) == sorted(LAYERS)


def test_no_upward_imports():
    up = [
        f"{f.relative_to(PACKAGE)}:{line} imports {mod}"
        for f, line, mod, _ in _imports()
        if f.name != "__init__.py" or f.parent != PACKAGE
        if _layer(mod) > _layer(f)
    ]
    assert not up, up


def test_imports_at_the_top_except_the_cli_runners():
    inside = [
        f"{f.relative_to(PACKAGE)}:{line} imports {mod}"
        for f, line, mod, fn in _imports()
        if fn and _layer(f) != LAYERS.index("cli")
    ]
    assert not inside, inside


def test_no_import_circles():
    edges = {}
    for f, _, mod, _ in _imports():
        rel = f.relative_to(PACKAGE.parent).with_suffix("")
        me = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        if mod != me:
            edges.setdefault(me, set()).add(mod)
    state = {}

    def visit(v, path):
        state[v] = 1
        for w in edges.get(v, ()):
            if state.get(w) == 1:
                raise AssertionError("import circle: " + " -> ".join(path[path.index(w) :] + [w]))
            if w not in state:
                visit(w, path + [w])
        state[v] = 2

    for v in list(edges):
        if v not in state:
            visit(v, [v])


def test_every_public_name_is_importable_from_the_package():
    import ipguard_tf

    missing = [name for name in ipguard_tf.__all__ if getattr(ipguard_tf, name, None) is None]
    assert not missing, missing
    assert {"IPGuard", "verify", "verify_suspects", "load_fingerprint", "aruc", "as_classifier"} <= set(
        ipguard_tf.__all__
    )
