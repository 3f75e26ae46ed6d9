"""`make lab` serves the notebooks, and only to this machine, behind its token.

JupyterLab is one of the three ways into the notebooks (with papermill and nbval). It refuses to
start as root without --allow-root, which is how this project's machines run it; the easy fixes
(--ip=0.0.0.0, an empty token) would open a code-execution server to the network. So the test
starts the server with the very command `make -n lab` prints (plus a free port, a known token
and throwaway Jupyter dirs), and checks it through the REST API and a kernel's websocket: the six
notebooks are listed, requests without the token are refused, it listens on 127.0.0.1 only, and
a kernel of the same environment imports vstlib and runs a cell.
"""
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest
import requests
import websocket

from vstlib import paths

START_TIMEOUT = 90      # s; a cold JupyterLab start takes ~5 s, more on a loaded 2-core machine
KERNEL_TIMEOUT = 120    # s; kernel start + `import vstlib`


def lab_command() -> list[str]:
    """The recipe of `make lab`, with this test's environment as the venv and no install step."""
    out = subprocess.run(["make", "-C", str(paths.ROOT), "-n", "-s", "--no-print-directory", "lab",
                          "STAMP=", f"VENV={sys.prefix}"],
                         capture_output=True, text=True, check=True).stdout
    lines = [ln for ln in out.replace("\\\n", " ").splitlines() if ln.strip()]
    assert len(lines) == 1, f"`make -n lab` should run one command: {out!r}"
    argv = shlex.split(lines[0])
    assert argv[:2] == [f"{sys.prefix}/bin/jupyter", "lab"], argv
    return argv


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A running `make lab` server: (base url, token, server pid)."""
    tmp = tmp_path_factory.mktemp("lab")
    token = secrets.token_hex(24)
    env = dict(os.environ,
               JUPYTER_TOKEN=token,  # the server masks a token it did not generate in its log
               JUPYTER_CONFIG_DIR=str(tmp / "config"), JUPYTER_DATA_DIR=str(tmp / "data"),
               JUPYTER_RUNTIME_DIR=str(tmp / "runtime"), IPYTHONDIR=str(tmp / "ipython"))
    # added for the test only: port 0 (the OS picks a free one, the server writes it to its
    # runtime file) and no browser
    argv = lab_command() + ["--ServerApp.port=0", "--ServerApp.port_retries=0", "--no-browser"]
    log = tmp / "server.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(argv, cwd=paths.ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)   # its own process group: nothing outlives it
    kernels = []    # started in sessions of their own (jupyter_client), so not in the group
    try:
        info = wait_until_up(proc, tmp / "runtime", token, log)
        yield f"http://127.0.0.1:{info['port']}", token, info["pid"]
        kernels = psutil.Process(proc.pid).children(recursive=True)
        proc.terminate()            # SIGTERM: the server shuts its kernels down and exits
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            kernels = kernels or psutil.Process(proc.pid).children(recursive=True)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for p in psutil.wait_procs(kernels, timeout=30)[1]:
            p.kill()


def wait_until_up(proc, runtime: Path, token: str, log: Path) -> dict:
    """The server's runtime info once GET /api/status answers; fails with the log if it exits."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"jupyter lab exited ({proc.returncode}):\n{log.read_text()}"
        for f in runtime.glob("jpserver-*.json"):
            info = json.loads(f.read_text())
            try:
                if requests.get(f"http://127.0.0.1:{info['port']}/api/status", timeout=5,
                                headers={"Authorization": f"token {token}"}).ok:
                    return info
            except requests.ConnectionError:
                pass
        time.sleep(0.5)
    pytest.fail(f"jupyter lab did not answer within {START_TIMEOUT} s:\n{log.read_text()}")


def test_lab_lists_the_six_notebooks(lab):
    url, token, _ = lab
    r = requests.get(f"{url}/api/contents/", headers={"Authorization": f"token {token}"}, timeout=30)
    r.raise_for_status()
    names = sorted(c["name"] for c in r.json()["content"] if c["type"] == "notebook")
    assert [n[:3] for n in names] == ["01_", "02_", "03_", "04_", "05_", "06_"], names
    assert names == sorted(nb.name for nb in paths.NOTEBOOKS.glob("*.ipynb"))


def test_lab_refuses_requests_without_the_token(lab):
    url = lab[0]
    assert requests.get(f"{url}/api/contents/", timeout=30).status_code == 403
    assert requests.get(f"{url}/api/contents/", headers={"Authorization": "token wrong"},
                        timeout=30).status_code == 403
    r = requests.get(f"{url}/lab", allow_redirects=False, timeout=30)
    assert r.status_code in (302, 403) and "token" not in r.headers.get("Location", "")


def test_lab_listens_on_localhost_only(lab):
    url, _, pid = lab
    listening = {(c.laddr.ip, c.laddr.port) for c in psutil.Process(pid).net_connections("inet")
                 if c.status == psutil.CONN_LISTEN}
    assert listening == {("127.0.0.1", int(url.rsplit(":", 1)[1]))}, listening


def test_lab_kernel_runs_vstlib_in_this_environment(lab):
    url, token, _ = lab
    auth = {"Authorization": f"token {token}"}
    r = requests.post(f"{url}/api/kernels", json={"name": "python3"}, headers=auth, timeout=KERNEL_TIMEOUT)
    r.raise_for_status()
    kernel = r.json()["id"]
    try:
        out = execute(f"{url.replace('http', 'ws', 1)}/api/kernels/{kernel}/channels?token={token}",
                      "import sys\nfrom vstlib import paths\n"
                      "print(paths.NOTEBOOKS.name, 6 * 7)\nprint(sys.prefix)")
    finally:
        requests.delete(f"{url}/api/kernels/{kernel}", headers=auth, timeout=60).raise_for_status()
    first, prefix = out.splitlines()
    assert first == "notebooks 42"
    assert Path(prefix).resolve() == Path(sys.prefix).resolve()   # the lab's kernels run in .venv


def execute(channels_url: str, code: str) -> str:
    """Run ``code`` through a kernel's websocket (Jupyter messaging protocol): its stdout."""
    ws = websocket.create_connection(channels_url, timeout=KERNEL_TIMEOUT)
    try:
        msg_id = uuid.uuid4().hex
        ws.send(json.dumps({
            "channel": "shell", "buffers": [], "metadata": {}, "parent_header": {},
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "session": uuid.uuid4().hex,
                       "username": "test", "date": "", "version": "5.3"},
            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True}}))
        out, deadline = [], time.monotonic() + KERNEL_TIMEOUT
        while time.monotonic() < deadline:
            msg = json.loads(ws.recv())
            if msg.get("channel") != "iopub" or msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out.append(content["text"])
            elif kind == "error":
                pytest.fail("\n".join(content["traceback"]))
            elif kind == "status" and content["execution_state"] == "idle":
                return "".join(out)
        pytest.fail(f"the cell did not finish within {KERNEL_TIMEOUT} s")
    finally:
        ws.close()
