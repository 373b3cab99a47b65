"""Container HEALTHCHECK: GET /healthz of the service this container runs (`sarafan run NAME`)."""

import os
import sys
import urllib.request

# The image's virtualenv runs this script: the ports come from the one topology module.
from shared.topology import PORTS as DEFAULT_PORTS

# PID 1 is `sarafan run <service>` (or `python -m services.<service>`): find the name there.
with open("/proc/1/cmdline", "rb") as cmdline:
    words = cmdline.read().decode(errors="replace").split("\0")
service = next((w.rsplit(".", 1)[-1] for w in words if w.rsplit(".", 1)[-1] in DEFAULT_PORTS), "")
if not service:
    sys.exit(f"healthcheck: no service in the command line {words}")
port = os.environ.get(f"SARAFAN_{service.upper()}_PORT") or DEFAULT_PORTS[service]
with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
    sys.exit(0 if response.status == 200 else 1)
