"""Cloudera ML model script for cml-lora-serve (standard library only).

Build a CML Model with file `scripts/cml_model_predict_script.py` and function `api_wrapper`, as Fine
Tuning Studio does with its own `ft/scripts/cml_model_predict_script.py`, and the same environment
(FINE_TUNING_STUDIO_BASE_MODEL_HF_NAME, FINE_TUNING_STUDIO_ADAPTER_LOCATION,
FINE_TUNING_STUDIO_GEN_CONFIG_STRING). On import it starts our server once per replica on a free
loopback port; each call forwards `args` to POST /predict and returns the bare continuation string.
"""

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NODE = os.environ.get("CML_LORA_SERVE_NODE", "node")
START_TIMEOUT_S = float(os.environ.get("CML_LORA_SERVE_START_TIMEOUT", "900"))
REQUEST_TIMEOUT_S = float(os.environ.get("CML_LORA_SERVE_REQUEST_TIMEOUT", "600"))

_lock = threading.Lock()
_server = None
_base_url = None


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start():
    """Starts the server if it is not running; returns its base URL once /health says ready."""
    global _server, _base_url
    with _lock:
        if _server is None or _server.poll() is not None:
            port = _free_port()
            # The server drains and exits once this process is gone, however it went (SIGKILL too).
            env = dict(os.environ, PORT=str(port), HOST="127.0.0.1", CML_LORA_SERVE_PARENT_PID=str(os.getpid()))
            cmd = [NODE, os.path.join(ROOT, "bin", "cml-lora-serve.mjs"), "serve"]
            # The server's log goes to stderr, so the caller's stdout carries only its own output.
            _server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=sys.stderr.fileno())
            _base_url = "http://127.0.0.1:%d" % port
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            code = _server.poll()
            if code is not None:
                raise RuntimeError("cml-lora-serve exited with code %d before it was ready (see its log above)" % code)
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


# Start loading at import, as the original script loads its model at import.
if os.environ.get("CML_LORA_SERVE_LAZY") != "1":
    threading.Thread(target=lambda: _start() and None, daemon=True).start()

if __name__ == "__main__":
    print(api_wrapper(json.loads(sys.argv[1]) if len(sys.argv) > 1 else {"prompt": sys.stdin.read()}))
