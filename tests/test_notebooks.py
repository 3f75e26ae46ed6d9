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
