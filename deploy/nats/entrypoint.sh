#!/bin/sh
# The nats container's entrypoint: each NATS user's password from its compose secret file
# (/run/secrets/nats_<user>_password) into the variable accounts.conf refers to
# ($NATS_<USER>_PASSWORD), then nats-server with the arguments compose gives. No password is in
# docker-compose.yml's environment or on nats-server's command line.
set -eu
for file in /run/secrets/nats_*_password; do
  [ -f "$file" ] || continue
  name=$(basename "$file" | tr '[:lower:]' '[:upper:]')
  value=$(cat "$file")
  export "$name=$value"
done
exec nats-server "$@"
