"""Container HEALTHCHECK: GET /healthz of the service this container runs (`sarafan run NAME`).

Liveness: 503 (its event loop has not run for 5 s) or no answer within TIMEOUT (a loop blocked
for good answers nothing) is a failure. TIMEOUT stays under the HEALTHCHECK's own 3 s, so the
script says why rather than being killed. docs/operations.md, "Probes: liveness and readiness".
"""

import os
import sys
import urllib.error
import urllib.request

# The image's virtualenv runs this script: the ports come from the one topology module.
from shared.topology import PORTS as DEFAULT_PORTS

TIMEOUT = 2

# PID 1 is `sarafan run <service>` (or `python -m services.<service>`): find the name there.
with open("/proc/1/cmdline", "rb") as cmdline:
    words = cmdline.read().decode(errors="replace").split("\0")
service = next((w.rsplit(".", 1)[-1] for w in words if w.rsplit(".", 1)[-1] in DEFAULT_PORTS), "")
if not service:
    sys.exit(f"healthcheck: no service in the command line {words}")
port = os.environ.get(f"SARAFAN_{service.upper()}_PORT") or DEFAULT_PORTS[service]
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=TIMEOUT) as response:
        sys.exit(0 if response.status == 200 else 1)
except urllib.error.HTTPError as exc:
    sys.exit(f"healthcheck: {service} answers {exc.code}: {exc.read()[:200]!r}")
except OSError as exc:  # refused, or no answer in time: a stuck event loop
    sys.exit(f"healthcheck: {service} does not answer /healthz within {TIMEOUT} s ({exc})")
