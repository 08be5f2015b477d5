#!/usr/bin/env bash
# A stand-in for the warren binary that runs a local RabbitMQ 3.x instead, so the suite's
# expectations can be checked against the broker Warren imitates:
#
#   WARREN_BIN=tests/interop/reference-rabbitmq.sh tests/interop/run.sh
#
# Needs RabbitMQ installed (Debian: apt-get install rabbitmq-server). Takes the same flags as
# warren, starts a private node under --data-dir with the STOMP plugin enabled, and prints
# warren's listening lines on stderr (`listening protocol=amqp addr=...`, then `protocol=stomp`)
# once each port accepts connections. SIGTERM stops the node. RabbitMQ also starts epmd,
# Erlang's port mapper, as a daemon that outlives the node.
#
# The MQTT plugin is off, so the MQTT tests skip, unless WARREN_REFERENCE_MQTT is set to
# anything but 0 (broker.py then waits for the MQTT listening line too). It is opt-in because
# five MQTT tests expect answers that RabbitMQ 3.10.8 gives differently: the CONNACK code for
# an anonymous CONNECT, the QoS of a transient AMQP message, retained messages for a wildcard
# subscription, and a CONNECT with an unknown protocol level.
#
# --config FILE: the Warren settings with a RabbitMQ equivalent are translated (see
# translate_config); any other setting is refused, so a test cannot pass by being ignored.
set -euo pipefail

port=0
stomp_port=0
mqtt_port=0
bind=127.0.0.1
data_dir=
config=
while [ $# -gt 0 ]; do
    case "$1" in
        --amqp-port) port=$2; shift 2 ;;
        --stomp-port) stomp_port=$2; shift 2 ;;
        --mqtt-port) mqtt_port=$2; shift 2 ;;
        --http-port) shift 2 ;;
        --bind) bind=$2; shift 2 ;;
        --data-dir) data_dir=$2; shift 2 ;;
        --log-level) shift 2 ;;
        --config) config=$2; shift 2 ;;
        *) echo "reference-rabbitmq: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -n "$data_dir" ] || { echo "reference-rabbitmq: --data-dir is required" >&2; exit 2; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
[ "$port" != 0 ] || port=$(free_port)
[ "$stomp_port" != 0 ] || stomp_port=$(free_port)
mqtt=${WARREN_REFERENCE_MQTT:-0}
[ "$mqtt" = 0 ] || [ "$mqtt_port" != 0 ] || mqtt_port=$(free_port)

mkdir -p "$data_dir"
# The plugins' listeners go in rabbitmq.conf rather than as `-rabbitmq_stomp tcp_listeners
# [...]` among the Erlang arguments: rabbitmq-server expands those unquoted, so a term with
# brackets would be open to the shell's globbing in the work directory.
echo "stomp.listeners.tcp.1 = $bind:$stomp_port" > "$data_dir/rabbitmq.conf"
if [ "$mqtt" = 0 ]; then
    echo "[rabbitmq_stomp]." > "$data_dir/enabled_plugins"
else
    echo "[rabbitmq_stomp,rabbitmq_mqtt]." > "$data_dir/enabled_plugins"
    # Warren refuses anonymous MQTT by default; RabbitMQ would log it in as guest.
    printf '%s\n' "mqtt.listeners.tcp.1 = $bind:$mqtt_port" "mqtt.allow_anonymous = false" \
        >> "$data_dir/rabbitmq.conf"
fi
export RABBITMQ_CONFIG_FILE="$data_dir/rabbitmq.conf"
export RABBITMQ_NODE_PORT=$port
export RABBITMQ_NODE_IP_ADDRESS=$bind
export RABBITMQ_DIST_PORT=$(free_port)
export RABBITMQ_NODENAME="warren-reference-$port@localhost"
export RABBITMQ_MNESIA_BASE="$data_dir/mnesia"
export RABBITMQ_LOG_BASE="$data_dir/log"
export RABBITMQ_PID_FILE="$data_dir/rabbitmq.pid"
export RABBITMQ_ENABLED_PLUGINS_FILE="$data_dir/enabled_plugins"
export RABBITMQ_LOGS=-
# Warren's TOML settings as `-rabbit key value` arguments for the Erlang VM.
translate_config() {
    python3 - "$1" <<'PYTHON'
import sys
import tomllib

with open(sys.argv[1], "rb") as file:
    config = tomllib.load(file)
arguments = []
amqp = config.pop("amqp", {})
if "consumer_timeout_ms" in amqp:
    # RabbitMQ checks the timeout on each channel tick (once a minute by default); Warren
    # checks about once a second.
    arguments += ["-rabbit consumer_timeout", str(amqp.pop("consumer_timeout_ms"))]
    arguments += ["-rabbit channel_tick_interval 1000"]
untranslated = list(config) + [f"amqp.{key}" for key in amqp]
if untranslated:
    sys.exit(f"reference-rabbitmq: no translation for config {', '.join(untranslated)}")
print(" ".join(arguments))
PYTHON
}
erl_config_args=
[ -z "$config" ] || erl_config_args=$(translate_config "$config")

# One scheduler: the reference only has to be correct, not fast.
export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="+S 1:1 $erl_config_args"

# The Debian wrapper in /usr/sbin switches to the rabbitmq user; the real script does not.
/usr/lib/rabbitmq/bin/rabbitmq-server >&2 &
server=$!
trap 'kill -TERM "$server" 2>/dev/null; wait "$server"; exit 0' TERM INT

deadline=$((SECONDS + 60))
# Prints warren's listening line for `protocol` once `listen_port` accepts connections.
announce_when_listening() {
    local protocol=$1 listen_port=$2
    local probe="import socket; socket.create_connection(('$bind', $listen_port), 1)"
    until python3 -c "$probe" 2>/dev/null; do
        if ! kill -0 "$server" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
            echo "reference-rabbitmq: RabbitMQ did not start its $protocol listener" >&2
            exit 1
        fi
        sleep 0.2  # polling a port that has no other way to announce itself
    done
    echo "reference-rabbitmq: listening protocol=$protocol addr=$bind:$listen_port" >&2
}
announce_when_listening amqp "$port"
announce_when_listening stomp "$stomp_port"
[ "$mqtt" = 0 ] || announce_when_listening mqtt "$mqtt_port"
wait "$server"
