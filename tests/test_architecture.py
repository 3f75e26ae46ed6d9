"""The layering docs/architecture.md states holds in the code: every vstlib import (module-level and
inside functions, read with ``ast``) goes to the same layer or one below, there is no cycle, project
imports sit at module top (but in the CLI), and every module or function the page names exists."""
import ast
import importlib
import re

from vstlib import paths

DOC = (paths.ROOT / "docs" / "architecture.md").read_text()


def _module_name(path) -> str:
    parts = list(path.relative_to(paths.PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(tree, mod: str, is_pkg: bool, files: set) -> list[tuple[str, bool]]:
    """(imported vstlib module, at module level?) of one parsed module."""
    package = mod if is_pkg else mod.rpartition(".")[0]
    top = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")
                base = ".".join(up[:len(up) - (node.level - 1)] + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
        for t in targets:
            while t and t not in files:
                t = t.rpartition(".")[0]
            if t and t != mod and t != "vstlib":
                out.append((t, id(node) in top))
    return out


def import_graph() -> dict[str, list[tuple[str, bool]]]:
    found = {_module_name(p): p for p in paths.PACKAGE.rglob("*.py")}
    return {m: imports(ast.parse(p.read_text(), str(p)), m, p.name == "__init__.py", set(found))
            for m, p in found.items()}


def layers() -> dict[str, int]:
    """vstlib module (or package) -> its layer's rank in the architecture table (0 = ground)."""
    rows = re.findall(r"^\| (\w+) \| ((?:`[\w.]+` ?)+) \|", DOC, flags=re.M)
    assert len(rows) >= 6, "the layer table of docs/architecture.md was not found"
    return {f"vstlib.{m}": rank for rank, (_, mods) in enumerate(rows) for m in re.findall(r"`([\w.]+)`", mods)}


def layer_of(mod: str, table: dict):
    """The layer of a module, of its closest listed parent, or (a package) of its listed modules."""
    inside = [rank for name, rank in table.items() if name.startswith(mod + ".")]
    while mod and mod not in table:
        mod = mod.rpartition(".")[0]
    return table.get(mod, min(inside, default=None))


def find_cycle(graph: dict[str, set[str]]):
    """One cycle as a list of modules, or None (iterative DFS, white/grey/black)."""
    colour = {m: 0 for m in graph}
    for start in sorted(graph):
        if colour[start]:
            continue
        stack, path = [(start, iter(sorted(graph[start])))], [start]
        colour[start] = 1
        while stack:
            node, children = stack[-1]
            for child in children:
                if colour.get(child) == 1:
                    return path[path.index(child):] + [child]
                if colour.get(child) == 0:
                    colour[child] = 1
                    path.append(child)
                    stack.append((child, iter(sorted(graph[child]))))
                    break
            else:
                colour[node] = 2
                path.pop()
                stack.pop()
    return None


def test_the_checkers_find_what_they_look_for():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    tree = ast.parse("from vstlib.rl import step\ndef f():\n    from ..flow import warp\n")
    assert imports(tree, "vstlib.rl.train", False, {"vstlib.rl.step", "vstlib.flow", "vstlib.rl"}) == [
        ("vstlib.rl.step", True), ("vstlib.flow", False)]


def test_every_module_has_a_layer_and_imports_go_down():
    table, graph = layers(), import_graph()
    unplaced = sorted(m for m in graph if layer_of(m, table) is None and m != "vstlib")
    assert not unplaced, f"modules docs/architecture.md does not place: {unplaced}"
    upward = [f"{m} -> {t}" for m, deps in graph.items() for t, _ in deps
              if layer_of(t, table) is not None and layer_of(t, table) > layer_of(m, table)]
    assert not upward, f"imports against the layering: {upward}"


def test_no_import_cycle_and_project_imports_at_module_top():
    graph = import_graph()
    cycle = find_cycle({m: {t for t, _ in deps} for m, deps in graph.items()})
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
    inner = sorted({m for m, deps in graph.items() for t, top in deps if not top} - {"vstlib.cli"})
    assert not inner, f"project imports inside functions (only the CLI may, for start-up time): {inner}"
    # the judge does not import the method's learners or training loop, and the method not the judge
    rl_to_eval = [m for m, deps in graph.items() if m.startswith("vstlib.rl") for t, _ in deps
                  if t.startswith("vstlib.evaluation")]
    assert not rl_to_eval


def test_every_name_the_page_quotes_exists():
    missing = []
    for name in sorted(set(re.findall(r"`((?:[a-z_]+\.)*[a-zA-Z_]+)`", DOC))):
        if "." not in name and not (paths.PACKAGE / f"{name}.py").exists():
            continue                                           # a plain word (a learner's name, a method)
        parts = name.split(".")
        for i in range(len(parts), 0, -1):                     # the longest importable prefix
            try:
                obj = importlib.import_module("vstlib." + ".".join(parts[:i]))
            except ImportError:
                continue
            for attr in parts[i:]:
                obj = getattr(obj, attr, None)
            if obj is None:
                missing.append(name)
            break
        else:
            missing.append(name)
    assert not missing, f"docs/architecture.md names what does not exist: {missing}"
