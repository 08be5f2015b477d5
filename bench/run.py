#!/usr/bin/env python3
"""Side-by-side benchmark: Warren against RabbitMQ (AMQP, STOMP) and Mosquitto (MQTT), measured
in one run by the same lean client.

Usage: scripts/bench [--seconds S] [--out BENCHMARKS.md]

Builds the release binaries, installs Debian's rabbitmq-server and mosquitto if missing, starts
Warren, a private RabbitMQ node (with its STOMP plugin) and a private Mosquitto on free ports,
runs every scenario against Warren and its counterpart, measures broker memory for 10,000 idle
MQTT connections, and prints tables with throughput, latency, CPU and ratios. With --out it
rewrites the results section of that file.
"""

import argparse
import asyncio
import json
import resource
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "target" / "release" / "warren-bench"
WARREN = REPO / "target" / "release" / "warren"
RABBIT = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
CLK_TCK = os.sysconf("SC_CLK_TCK")

MOSQUITTO = Path("/usr/sbin/mosquitto")

# (label, client arguments, measure latency). Throughput runs use the in-flight window; latency
# runs a fixed rate. Fan-out runs count deliveries (one publish reaches every subscriber).
AMQP_SCENARIOS = [
    ("16 B, auto-ack", ["--protocol", "amqp", "--size", "16", "--ack", "auto"], True),
    ("16 B, manual ack, prefetch 100", ["--protocol", "amqp", "--size", "16", "--ack", "manual", "--prefetch", "100"], True),
    ("1 KiB, auto-ack", ["--protocol", "amqp", "--size", "1024", "--ack", "auto"], True),
    ("1 KiB, manual ack, prefetch 100", ["--protocol", "amqp", "--size", "1024", "--ack", "manual", "--prefetch", "100"], True),
]
# Persistent messages on a durable queue, with publisher confirms and manual acks: both brokers
# fsync before confirming (RabbitMQ 3.10's classic queues do).
PERSISTENT = ["--persistent", "--confirm", "--ack", "manual", "--prefetch", "100"]
AMQP_PERSISTENT_SCENARIOS = [
    ("16 B, persistent, confirms, manual ack", ["--protocol", "amqp", "--size", "16", *PERSISTENT], True),
    ("1 KiB, persistent, confirms, manual ack", ["--protocol", "amqp", "--size", "1024", *PERSISTENT], True),
]
MQTT_FANOUT = ["--subscribers", "100", "--window", "2000"]
MQTT_SCENARIOS = [
    ("16 B, QoS 0, 1 to 1", ["--protocol", "mqtt", "--size", "16", "--qos", "0"], True),
    ("16 B, QoS 1, 1 to 1", ["--protocol", "mqtt", "--size", "16", "--qos", "1"], True),
    ("1 KiB, QoS 0, 1 to 1", ["--protocol", "mqtt", "--size", "1024", "--qos", "0"], True),
    ("1 KiB, QoS 1, 1 to 1", ["--protocol", "mqtt", "--size", "1024", "--qos", "1"], True),
    ("16 B, QoS 0, 1 to 100", ["--protocol", "mqtt", "--size", "16", "--qos", "0", *MQTT_FANOUT], False),
    ("16 B, QoS 1, 1 to 100", ["--protocol", "mqtt", "--size", "16", "--qos", "1", *MQTT_FANOUT], False),
    ("1 KiB, QoS 0, 1 to 100", ["--protocol", "mqtt", "--size", "1024", "--qos", "0", *MQTT_FANOUT], False),
    ("1 KiB, QoS 1, 1 to 100", ["--protocol", "mqtt", "--size", "1024", "--qos", "1", *MQTT_FANOUT], False),
]
STOMP_SCENARIOS = [
    ("16 B, ack auto", ["--protocol", "stomp", "--size", "16", "--ack", "auto"], True),
    ("16 B, client-individual, prefetch 100", ["--protocol", "stomp", "--size", "16", "--ack", "manual", "--prefetch", "100"], True),
    ("1 KiB, ack auto", ["--protocol", "stomp", "--size", "1024", "--ack", "auto"], True),
]
LATENCY_RATE = 5000
IDLE_CONNECTIONS = 10_000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, process, deadline_s):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"broker exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.2)  # a port has no other way to announce itself
    raise RuntimeError(f"port {port} did not open")


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def ensure_mosquitto():
    if MOSQUITTO.exists():
        return
    print("installing mosquitto (Debian package)", file=sys.stderr)
    subprocess.run(["apt-get", "install", "-y", "-qq", "mosquitto"], check=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    # The package starts a system broker on 1883; stop it so ports stay ours.
    subprocess.run(["systemctl", "stop", "mosquitto"], check=False, capture_output=True)
    subprocess.run(["service", "mosquitto", "stop"], check=False, capture_output=True)


def ensure_rabbitmq():
    if RABBIT.exists():
        return
    print("installing rabbitmq-server (Debian package)", file=sys.stderr)
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "rabbitmq-server"], check=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    # The package starts a system node on 5672; stop it so ports stay ours.
    subprocess.run(["systemctl", "stop", "rabbitmq-server"], check=False, capture_output=True)
    subprocess.run(["service", "rabbitmq-server", "stop"], check=False, capture_output=True)


class Warren:
    name = "Warren"

    def __init__(self, workdir):
        self.port = free_port()
        self.ports = {"amqp": self.port, "mqtt": free_port(), "stomp": free_port()}
        self.http_port = free_port()
        self.log = open(workdir / "warren.log", "w")
        self.process = subprocess.Popen(
            [str(WARREN), "--amqp-port", str(self.port), "--mqtt-port", str(self.ports["mqtt"]),
             "--stomp-port", str(self.ports["stomp"]), "--http-port", str(self.http_port), "--bind", "127.0.0.1",
             "--data-dir", str(workdir / "warren-data"), "--log-level", "warn"],
            stderr=self.log)
        for port in self.ports.values():
            wait_for_port(port, self.process, 20)
        self.pid = self.process.pid

    def metrics(self):
        """The message store's counters, from the Prometheus endpoint."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        return {name: float(value) for name, value in
                (line.split() for line in text.splitlines() if line and not line.startswith("#"))}

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(15)


class RabbitMQ:
    name = "RabbitMQ"

    def __init__(self, workdir):
        self.port = free_port()
        self.ports = {"amqp": self.port, "stomp": free_port()}
        data = workdir / "rabbitmq"
        data.mkdir()
        (data / "enabled_plugins").write_text("[rabbitmq_stomp].")
        # TCP_NODELAY on the STOMP listener, as RabbitMQ has on AMQP's by default: without it,
        # small frames stall on Nagle's algorithm against delayed acks (about 40 ms each).
        (data / "rabbitmq.conf").write_text(f"stomp.listeners.tcp.1 = 127.0.0.1:{self.ports['stomp']}\n"
                                            "stomp.tcp_listen_options.nodelay = true\n")
        node = f"warren-bench-{self.port}@localhost"
        env = {
            **os.environ,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_NODENAME": node,
            "RABBITMQ_MNESIA_BASE": str(data / "mnesia"),
            "RABBITMQ_LOG_BASE": str(data / "log"),
            "RABBITMQ_PID_FILE": str(data / "rabbitmq.pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(data / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(data / "rabbitmq.conf"),
        }
        self.log = open(workdir / "rabbitmq.log", "w")
        self.process = subprocess.Popen([str(RABBIT)], env=env, stdout=self.log, stderr=self.log)
        try:
            wait_for_port(self.port, self.process, 90)
            wait_for_port(self.ports["stomp"], self.process, 60)
            # The Erlang VM (beam.smp) writes its pid here; measure its CPU.
            pid_file = data / "rabbitmq.pid"
            deadline = time.monotonic() + 30
            while not pid_file.exists() or not pid_file.read_text().strip():
                if time.monotonic() > deadline:
                    raise RuntimeError("RabbitMQ wrote no pid file")
                time.sleep(0.2)
            self.pid = int(pid_file.read_text().strip())
        except Exception:
            self.stop()
            raise

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        # The VM can outlive its start script; make sure this node is gone.
        if getattr(self, "pid", None):
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class Mosquitto:
    name = "Mosquitto"

    def __init__(self, workdir):
        port = free_port()
        self.ports = {"mqtt": port}
        config = workdir / "mosquitto.conf"
        # Defaults otherwise, but no persistence and no per-client queue cap (Warren's queues are
        # bounded by bytes instead), so fan-out runs lose nothing on either broker.
        config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                          "max_queued_messages 0\nlog_type error\n")
        self.log = open(workdir / "mosquitto.log", "w")
        self.process = subprocess.Popen([str(MOSQUITTO), "-c", str(config)], stdout=self.log, stderr=self.log)
        wait_for_port(port, self.process, 20)
        self.pid = self.process.pid

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()


def run_client(broker, arguments, seconds):
    protocol = arguments[arguments.index("--protocol") + 1]
    metrics_before = broker.metrics() if hasattr(broker, "metrics") else None
    before = cpu_seconds(broker.pid)
    result = subprocess.run(
        [str(BENCH), "--addr", f"127.0.0.1:{broker.ports[protocol]}", "--seconds", str(seconds), *arguments],
        capture_output=True, text=True, timeout=seconds + 60)
    after = cpu_seconds(broker.pid)
    if metrics_before is not None:
        metrics_after = broker.metrics()
        # Over the whole run (warm-up and drain included), like the broker's CPU.
        figures_syncs = metrics_after["warren_store_syncs_total"] - metrics_before["warren_store_syncs_total"]
        figures_synced = (metrics_after["warren_store_synced_publishes_total"]
                          - metrics_before["warren_store_synced_publishes_total"])
    else:
        figures_syncs = figures_synced = None
    if result.returncode != 0:
        raise RuntimeError(f"client failed against {broker.name}: {result.stderr.strip()}")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    # The broker's CPU over the whole client run (warm-up and drain included), per measured second.
    figures["broker_cpu_s"] = after - before
    figures["fsyncs"], figures["synced_messages"] = figures_syncs, figures_synced
    return figures


def measure(broker, scenarios, seconds):
    results = {}
    for label, arguments, with_latency in scenarios:
        throughput = run_client(broker, arguments, seconds)
        latency = (run_client(broker, arguments + ["--rate", str(LATENCY_RATE)], max(2.0, seconds / 2))
                   if with_latency else None)
        results[label] = (throughput, latency)
        tail = f"p50 {latency['p50_us']:7.1f} us  p99 {latency['p99_us']:7.1f} us" if latency else ""
        print(f"  {broker.name:9} {label:38} {throughput['msgs_per_s']:>10,.0f} msg/s  {tail}", file=sys.stderr)
    return results


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def mqtt_connect_packet(client_id):
    def string(text):
        data = text.encode()
        return len(data).to_bytes(2, "big") + data
    # MQTT 3.1.1 CONNECT: username, password and clean session set; keep-alive 0 (idle forever).
    variable = string("MQTT") + bytes([4, 0xC2, 0, 0])
    payload = string(client_id) + string("guest") + string("guest")
    remaining = len(variable) + len(payload)
    length = bytearray()
    while True:
        byte, remaining = remaining % 128, remaining // 128
        length.append(byte | (0x80 if remaining else 0))
        if not remaining:
            break
    return bytes([0x10]) + bytes(length) + variable + payload


async def open_idle_connections(port, count):
    limit = asyncio.Semaphore(256)
    writers = []

    async def one(index):
        async with limit:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(mqtt_connect_packet(f"idle-{index}"))
            await writer.drain()
            connack = await asyncio.wait_for(reader.readexactly(4), 30)
            if connack[3] != 0:
                raise RuntimeError(f"CONNECT refused: {connack!r}")
            writers.append(writer)

    await asyncio.gather(*(one(index) for index in range(count)))
    return writers


def idle_connection_memory(broker):
    """Broker memory per idle MQTT connection: RSS with 10,000 connected clients minus before."""
    before = rss_kib(broker.pid)

    async def run():
        writers = await open_idle_connections(broker.ports["mqtt"], IDLE_CONNECTIONS)
        await asyncio.sleep(1)  # let the broker settle after the burst before reading its RSS
        after = rss_kib(broker.pid)
        for writer in writers:
            writer.close()
        return after

    after = asyncio.run(run())
    per_connection = (after - before) / IDLE_CONNECTIONS
    print(f"  {broker.name:9} {IDLE_CONNECTIONS:,} idle MQTT connections: {per_connection:.1f} KiB each "
          f"({before:,} -> {after:,} KiB)", file=sys.stderr)
    return {"before_kib": before, "after_kib": after, "per_connection_kib": per_connection}


def table(title, scenarios, warren, other, other_name):
    lines = [
        f"### {title}",
        "",
        f"| scenario | Warren msg/s | {other_name} msg/s | ratio | Warren p50 / p99 µs | {other_name} p50 / p99 µs "
        f"| Warren CPU (client / broker) s | {other_name} CPU (client / broker) s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, _, _ in scenarios:
        (w, wl), (r, rl) = warren[label], other[label]
        ratio = w["msgs_per_s"] / r["msgs_per_s"] if r["msgs_per_s"] else float("inf")
        latency = lambda figures: f"{figures['p50_us']:.0f} / {figures['p99_us']:.0f}" if figures else "-"
        lines.append(
            f"| {label} | {w['msgs_per_s']:,.0f} | {r['msgs_per_s']:,.0f} | {ratio:.2f}x "
            f"| {latency(wl)} | {latency(rl)} "
            f"| {w['client_cpu_s']:.1f} / {w['broker_cpu_s']:.1f} "
            f"| {r['client_cpu_s']:.1f} / {r['broker_cpu_s']:.1f} |")
    return "\n".join(lines)


def persistent_table(title, scenarios, warren, other, other_name, seconds):
    lines = [
        f"### {title}",
        "",
        f"| scenario | Warren msg/s | {other_name} msg/s | ratio | Warren fsyncs/s | Warren msgs per fsync "
        f"| Warren p50 / p99 µs | {other_name} p50 / p99 µs "
        f"| Warren CPU (client / broker) s | {other_name} CPU (client / broker) s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, _, _ in scenarios:
        (w, wl), (r, rl) = warren[label], other[label]
        ratio = w["msgs_per_s"] / r["msgs_per_s"] if r["msgs_per_s"] else float("inf")
        latency = lambda figures: f"{figures['p50_us']:.0f} / {figures['p99_us']:.0f}" if figures else "-"
        # The client runs 1 s of warm-up before the measured interval, and drains after it.
        run_seconds = w["seconds"] + 1
        fsyncs_per_s = w["fsyncs"] / run_seconds if w["fsyncs"] else 0
        per_fsync = w["synced_messages"] / w["fsyncs"] if w["fsyncs"] else 0
        lines.append(
            f"| {label} | {w['msgs_per_s']:,.0f} | {r['msgs_per_s']:,.0f} | {ratio:.2f}x "
            f"| {fsyncs_per_s:,.0f} | {per_fsync:,.1f} "
            f"| {latency(wl)} | {latency(rl)} "
            f"| {w['client_cpu_s']:.1f} / {w['broker_cpu_s']:.1f} "
            f"| {r['client_cpu_s']:.1f} / {r['broker_cpu_s']:.1f} |")
    return "\n".join(lines)


def write_results(path, text):
    begin, end = "<!-- results:begin -->", "<!-- results:end -->"
    content = path.read_text() if path.exists() else f"# Benchmarks\n\n{begin}\n{end}\n"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    path.write_text(pattern.sub(lambda _: f"{begin}\n{text}\n{end}", content))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    # 10,000 idle connections need as many descriptors, in the brokers (who inherit this) and here.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "warren", "-p", "warren-bench"],
                   cwd=REPO, check=True)
    ensure_rabbitmq()
    ensure_mosquitto()
    workdir = Path(tempfile.mkdtemp(prefix="warren-bench-"))
    results, memory = {}, {}
    plan = [
        (Warren, [("AMQP", AMQP_SCENARIOS), ("AMQP persistent", AMQP_PERSISTENT_SCENARIOS),
                  ("MQTT", MQTT_SCENARIOS), ("STOMP", STOMP_SCENARIOS)]),
        (RabbitMQ, [("AMQP", AMQP_SCENARIOS), ("AMQP persistent", AMQP_PERSISTENT_SCENARIOS),
                    ("STOMP", STOMP_SCENARIOS)]),
        (Mosquitto, [("MQTT", MQTT_SCENARIOS)]),
    ]
    try:
        for kind, groups in plan:
            broker = kind(workdir)
            try:
                for protocol, scenarios in groups:
                    results[(kind.name, protocol)] = measure(broker, scenarios, args.seconds)
            finally:
                broker.stop()
        # Idle memory on fresh processes: after the throughput runs, an allocator's retained free
        # memory would absorb the new connections and hide their cost.
        for kind in (Warren, Mosquitto):
            fresh = workdir / f"idle-{kind.name}"
            fresh.mkdir()
            broker = kind(fresh)
            try:
                memory[kind.name] = idle_connection_memory(broker)
            finally:
                broker.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    host = f"{os.cpu_count()} cores, {subprocess.run(['uname', '-sr'], capture_output=True, text=True).stdout.strip()}"
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    version = lambda package: subprocess.run(["dpkg-query", "-W", "-f=${Version}", package],
                                             capture_output=True, text=True).stdout.strip()
    sections = [
        f"Measured {when} on {host}; RabbitMQ {version('rabbitmq-server')} and Mosquitto "
        f"{version('mosquitto')} (Debian packages, defaults but for private ports, RabbitMQ's STOMP "
        f"plugin, and Mosquitto without persistence or a per-client queue cap); Warren release "
        f"build. {args.seconds:g} s measured per throughput run after 1 s of warm-up, at most 20,000 "
        f"messages in flight (2,000 per subscriber for fan-out); latency at a fixed "
        f"{LATENCY_RATE:,} msg/s; fan-out rows count deliveries. CPU: seconds over the throughput "
        f"run (client: measured interval; broker: whole run).",
        table("AMQP 0-9-1: Warren and RabbitMQ", AMQP_SCENARIOS, results[("Warren", "AMQP")],
              results[("RabbitMQ", "AMQP")], "RabbitMQ"),
        persistent_table("AMQP 0-9-1, persistent: Warren and RabbitMQ, both fsyncing before every confirm",
                         AMQP_PERSISTENT_SCENARIOS, results[("Warren", "AMQP persistent")],
                         results[("RabbitMQ", "AMQP persistent")], "RabbitMQ", args.seconds),
        table("MQTT 3.1.1: Warren and Mosquitto", MQTT_SCENARIOS, results[("Warren", "MQTT")],
              results[("Mosquitto", "MQTT")], "Mosquitto"),
        table("STOMP 1.2: Warren and RabbitMQ's STOMP plugin", STOMP_SCENARIOS, results[("Warren", "STOMP")],
              results[("RabbitMQ", "STOMP")], "RabbitMQ"),
        "### Memory for idle MQTT connections\n\n| broker | RSS before | RSS with 10,000 idle "
        "connections | per connection |\n|---|---:|---:|---:|\n" + "\n".join(
            f"| {name} | {figures['before_kib']:,} KiB | {figures['after_kib']:,} KiB | "
            f"{figures['per_connection_kib']:.1f} KiB |" for name, figures in memory.items()),
    ]
    text = "\n\n".join(sections)
    print(text)
    if args.out:
        write_results(args.out, text)


if __name__ == "__main__":
    main()
