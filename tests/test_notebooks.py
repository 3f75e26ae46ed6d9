"""Notebook hygiene that nbval alone does not check."""
import json

import pytest

from vstlib import paths
from vstlib.config import DEFAULT_PROFILE
from vstlib.reproduce import notebooks

NBS = notebooks()


def test_numbered_in_order_and_complete():
    assert [nb.name[:2] for nb in NBS] == ["01", "02", "03", "04", "05", "06"]


@pytest.mark.parametrize("nb", NBS, ids=lambda p: p.name)
def test_one_cheap_parameters_cell_and_clean_outputs(nb):
    cells = json.loads(nb.read_text())["cells"]
    params = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1 and "".join(params[0]["source"]).startswith(f'profile = "{DEFAULT_PROFILE}"')
    outputs = [o for c in cells if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert outputs, "stored outputs of a default-profile run are missing: run `make reproduce`"
    assert not [o for o in outputs if o.get("name") == "stderr" or o["output_type"] == "error"]
    # outputs must not depend on where the repository was cloned
    assert str(paths.ROOT) not in json.dumps(outputs)
    # notebooks stay thin: no function or class definitions (library code lives in vstlib)
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    assert "\ndef " not in "\n" + code and "\nclass " not in "\n" + code


def _code(nb) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]


def unused_imports(source: str) -> list[str]:
    """Names bound by an import statement in ``source`` and never read anywhere in it."""
    import ast

    tree = ast.parse(source)
    imported = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for a in node.names:
                imported[a.asname or a.name.split(".")[0]] = node.lineno
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    return sorted(set(imported) - used)


def test_unused_import_finder():
    assert unused_imports("import os\nfrom a import b, c as d\nimport x.y\nprint(b, x.y)") == ["d", "os"]


@pytest.mark.parametrize("nb", NBS, ids=lambda p: p.name)
def test_no_unused_imports(nb):
    assert unused_imports("\n".join(_code(nb))) == []


@pytest.mark.parametrize("nb", NBS, ids=lambda p: p.name)
def test_parameters_take_overrides_and_config_resolves_once(nb):
    cells = json.loads(nb.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    i = next(i for i, c in enumerate(code) if "parameters" in c.get("metadata", {}).get("tags", []))
    params = "".join(code[i]["source"])
    assert "\noverrides = []" in params
    import papermill  # and papermill can read both
    assert set(papermill.inspect_notebook(str(nb))) == {"profile", "overrides"}
    # the cell after the parameters resolves the config once, through the library (banner included)
    assert "".join(code[i + 1]["source"]).startswith("cfg = report.start(profile, overrides)")
    body = "\n".join(_code(nb))
    assert body.count("report.start(") == 1 and "get_config(" not in body and "load(" not in body
