"""Cloudera ML Application launcher for cml-lora-serve: `deploy-cml --application` runs this file.

A CML Application is a long-lived process that must listen on 127.0.0.1:$CDSW_APP_PORT; the server
does so when that variable is set, and serves the playground at /. Applications have no build step:
run `bash cdsw-build.sh` once in a session of the project first (it installs Node and the addon).
"""

import os
import sys

sys.path.insert(0, os.path.join(os.getcwd(), "scripts"))
if "__file__" in globals():
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ["CML_LORA_SERVE_LAZY"] = "1"  # import the helpers only: this process becomes the server
import cml_model_predict_script as helpers  # noqa: E402

node = helpers._find_node()
entry = os.path.join(helpers._find_root(), helpers.ENTRY)
os.execv(node, [node, entry, "serve"])
