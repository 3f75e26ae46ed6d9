"""Imports run one way: the import graph of ``vstlib`` (module-level AND function-level imports,
read with ``ast``) has no cycle."""
import ast

from vstlib import paths


def _module_name(path) -> str:
    rel = path.relative_to(paths.PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """vstlib module -> the vstlib modules it imports anywhere in its body."""
    files = {_module_name(p): p for p in paths.PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:                                   # relative: from . / from .x
                    up = package.split(".")
                    up = up[:len(up) - (node.level - 1)]
                    base = ".".join(up + ([base] if base else []))
                # `from vstlib import clips` imports the module vstlib.video.clips
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for t in targets:
                while t and t not in files:                      # vstlib.x.y -> vstlib.x
                    t = t.rpartition(".")[0]
                if t and t != mod and t != "vstlib":
                    graph[mod].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]):
    """One cycle as a list of modules, or None (iterative DFS, white/grey/black)."""
    colour = {m: 0 for m in graph}
    for start in sorted(graph):
        if colour[start]:
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        colour[start] = 1
        while stack:
            node, children = stack[-1]
            for child in children:
                if colour[child] == 1:
                    return path[path.index(child):] + [child]
                if colour[child] == 0:
                    colour[child] = 1
                    path.append(child)
                    stack.append((child, iter(sorted(graph[child]))))
                    break
            else:
                colour[node] = 2
                path.pop()
                stack.pop()
    return None


def test_the_checker_finds_a_known_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_function_level_and_relative_imports():
    g = import_graph()
    assert "vstlib.flow" in g["vstlib.video.clips"]                    # `from .flow import ...` at module level
    assert "vstlib.backbones" in g["vstlib.rl.episodes"]             # inside make_stylizer


def test_vstlib_imports_run_one_way():
    g = import_graph()
    cycle = find_cycle(g)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
    # flow is pure maths; only the entry points import the trainer (checkpoints live apart):
    # the CLI's `vst train`, report's ablation table (notebook 04 trains every grid cell) and
    # compare's learners table (it trains the seeds and controls it scores)
    assert g["vstlib.flow"] <= {"vstlib.utils"}
    assert {m for m, deps in g.items() if "vstlib.rl.train" in deps} == {"vstlib.cli", "vstlib.report", "vstlib.evaluation.compare"}
    assert not {m for m, deps in g.items() if "vstlib.report" in deps}     # nothing below imports it
