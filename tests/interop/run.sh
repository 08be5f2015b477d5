#!/usr/bin/env bash
# Run the interop suite (pika, paho-mqtt, stomp.py, Mosquitto's clients) against the Warren binary.
#   tests/interop/run.sh [pytest args...]      e.g. tests/interop/run.sh -k topic -x
# The broker is $WARREN_BIN, else target/release/warren, else target/debug/warren.
# A venv at <repo>/.venv is created, and requirements.txt installed, only when pika, pytest,
# paho-mqtt 2.x (paho.mqtt.enums is new in 2.0), stomp.py or redis-py is missing from it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="$repo/.venv"

if ! "$venv/bin/python" -c "import pika, pytest, paho.mqtt.enums, stomp, redis" >/dev/null 2>&1; then
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install --quiet -r "$here/requirements.txt"
fi

cd "$repo"
exec "$venv/bin/python" -m pytest -q tests/interop "$@"
