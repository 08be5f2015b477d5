#!/usr/bin/env python3
"""Side-by-side benchmark: Warren and RabbitMQ, measured in one run by the same lean client.

Usage: scripts/bench [--seconds S] [--out BENCHMARKS.md]

Builds the release binaries, installs Debian's rabbitmq-server if it is missing, starts Warren
and a private RabbitMQ node on free ports, runs every scenario against both, and prints a table
with throughput, latency, the client's and the broker's CPU, and the Warren/RabbitMQ ratio.
With --out it rewrites the results section of that file.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "target" / "release" / "warren-bench"
WARREN = REPO / "target" / "release" / "warren"
RABBIT = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
CLK_TCK = os.sysconf("SC_CLK_TCK")

# (label, client arguments). Throughput runs use the in-flight window; latency runs a fixed rate.
SCENARIOS = [
    ("16 B, auto-ack", ["--size", "16", "--ack", "auto"]),
    ("16 B, manual ack, prefetch 100", ["--size", "16", "--ack", "manual", "--prefetch", "100"]),
    ("1 KiB, auto-ack", ["--size", "1024", "--ack", "auto"]),
    ("1 KiB, manual ack, prefetch 100", ["--size", "1024", "--ack", "manual", "--prefetch", "100"]),
]
LATENCY_RATE = 5000


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
        self.log = open(workdir / "warren.log", "w")
        self.process = subprocess.Popen(
            [str(WARREN), "--amqp-port", str(self.port), "--mqtt-port", "0", "--stomp-port", "0", "--http-port", "0", "--bind", "127.0.0.1",
             "--data-dir", str(workdir / "warren-data"), "--log-level", "warn"],
            stderr=self.log)
        wait_for_port(self.port, self.process, 20)
        self.pid = self.process.pid

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(15)


class RabbitMQ:
    name = "RabbitMQ"

    def __init__(self, workdir):
        self.port = free_port()
        data = workdir / "rabbitmq"
        data.mkdir()
        (data / "enabled_plugins").write_text("[].")
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
        }
        self.log = open(workdir / "rabbitmq.log", "w")
        self.process = subprocess.Popen([str(RABBIT)], env=env, stdout=self.log, stderr=self.log)
        try:
            wait_for_port(self.port, self.process, 90)
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


def run_client(broker, arguments, seconds):
    before = cpu_seconds(broker.pid)
    result = subprocess.run(
        [str(BENCH), "--addr", f"127.0.0.1:{broker.port}", "--seconds", str(seconds), *arguments],
        capture_output=True, text=True, timeout=seconds + 60)
    after = cpu_seconds(broker.pid)
    if result.returncode != 0:
        raise RuntimeError(f"client failed against {broker.name}: {result.stderr.strip()}")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    # The broker's CPU over the whole client run (warm-up and drain included), per measured second.
    figures["broker_cpu_s"] = after - before
    return figures


def measure(broker, seconds):
    results = {}
    for label, arguments in SCENARIOS:
        throughput = run_client(broker, arguments, seconds)
        latency = run_client(broker, arguments + ["--rate", str(LATENCY_RATE)], max(2.0, seconds / 2))
        results[label] = (throughput, latency)
        print(f"  {broker.name:8} {label:34} {throughput['msgs_per_s']:>10,.0f} msg/s  "
              f"p50 {latency['p50_us']:7.1f} us  p99 {latency['p99_us']:7.1f} us", file=sys.stderr)
    return results


def table(warren, rabbit, seconds):
    lines = [
        f"Throughput: one producer and one consumer connection, one queue, {seconds:g} s measured "
        f"after 1 s of warm-up, at most 20,000 messages in flight. Latency: publish-to-deliver at a "
        f"fixed {LATENCY_RATE:,} msg/s. CPU: seconds of CPU over the throughput run (client: "
        f"measured interval; broker: whole run).",
        "",
        "| scenario | Warren msg/s | RabbitMQ msg/s | ratio | Warren p50 / p99 µs | RabbitMQ p50 / p99 µs "
        "| Warren CPU (client / broker) s | RabbitMQ CPU (client / broker) s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, _ in SCENARIOS:
        (w, wl), (r, rl) = warren[label], rabbit[label]
        ratio = w["msgs_per_s"] / r["msgs_per_s"] if r["msgs_per_s"] else float("inf")
        lines.append(
            f"| {label} | {w['msgs_per_s']:,.0f} | {r['msgs_per_s']:,.0f} | {ratio:.2f}x "
            f"| {wl['p50_us']:.0f} / {wl['p99_us']:.0f} | {rl['p50_us']:.0f} / {rl['p99_us']:.0f} "
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
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "warren", "-p", "warren-bench"],
                   cwd=REPO, check=True)
    ensure_rabbitmq()
    workdir = Path(tempfile.mkdtemp(prefix="warren-bench-"))
    results = {}
    try:
        for kind in (Warren, RabbitMQ):
            broker = kind(workdir)
            try:
                results[kind.name] = measure(broker, args.seconds)
            finally:
                broker.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    host = f"{os.cpu_count()} cores, {subprocess.run(['uname', '-sr'], capture_output=True, text=True).stdout.strip()}"
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rabbit_version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "rabbitmq-server"],
                                    capture_output=True, text=True).stdout.strip()
    text = (f"Measured {when} on {host}; RabbitMQ {rabbit_version} (Debian package, default "
            f"settings); Warren release build.\n\n" + table(results["Warren"], results["RabbitMQ"], args.seconds))
    print(text)
    if args.out:
        write_results(args.out, text)


if __name__ == "__main__":
    main()
