#!/usr/bin/env python3
"""Backlog soak: a durable queue far larger than the broker's memory share, across a crash.

Usage: scripts/soak-backlog [--count 10000000] [--size 1024] [--out BENCHMARKS.md]

Builds the release binaries, starts Warren on a fresh data directory, publishes --count
persistent messages of --size bytes to one durable queue with publisher confirms and no
consumer, kills the broker with SIGKILL, restarts it (timing the recovery), and consumes the
whole backlog, checking that every message arrives once and in order. The broker's RSS is
sampled throughout and the data directory's size measured after each phase. With --out it
rewrites the backlog section of that file.
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
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "target" / "release" / "warren-bench"
WARREN = REPO / "target" / "release" / "warren"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_kib(pid):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def du_kib(path):
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total // 1024


class Broker:
    def __init__(self, data_dir, log):
        self.port = free_port()
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [str(WARREN), "--amqp-port", str(self.port), "--mqtt-port", "0", "--stomp-port", "0",
             "--http-port", "0", "--bind", "127.0.0.1", "--data-dir", str(data_dir), "--log-level", "info"],
            stderr=log)
        deadline = time.monotonic() + 3600
        while True:
            if self.process.poll() is not None:
                raise RuntimeError("warren exited during start")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("warren did not start")
                time.sleep(0.05)
        self.ready_after = time.monotonic() - self.started
        self.peak = rss_kib(self.process.pid)
        self.sampling = True
        self.sampler = threading.Thread(target=self.sample, daemon=True)
        self.sampler.start()

    def sample(self):
        while self.sampling:
            self.peak = max(self.peak, rss_kib(self.process.pid))
            time.sleep(0.2)

    def reset_peak(self):
        self.peak = rss_kib(self.process.pid)

    def kill(self):
        self.sampling = False
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self):
        self.sampling = False
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)


def client(broker, *arguments):
    result = subprocess.run([str(BENCH), "--addr", f"127.0.0.1:{broker.port}", *arguments],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"client failed: {result.stderr.strip()}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def write_results(path, text):
    begin, end = "<!-- backlog:begin -->", "<!-- backlog:end -->"
    content = path.read_text() if path.exists() else "# Benchmarks\n"
    if begin not in content:
        content += f"\n{begin}\n{end}\n"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    path.write_text(pattern.sub(lambda _: f"{begin}\n{text}\n{end}", content))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=10_000_000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--dir", type=Path, default=None, help="where the data directory goes (default: a temp dir)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "warren", "-p", "warren-bench"],
                   cwd=REPO, check=True)
    workdir = Path(tempfile.mkdtemp(prefix="warren-backlog-", dir=args.dir))
    data_dir = workdir / "data"
    log = open(workdir / "warren.log", "w")
    backlog_kib = args.count * args.size // 1024
    try:
        broker = Broker(data_dir, log)
        baseline = rss_kib(broker.process.pid)
        print(f"publishing {args.count:,} x {args.size} B ...", file=sys.stderr)
        published = client(broker, "--count", str(args.count), "--size", str(args.size), "--queue", "backlog")
        after_publish = rss_kib(broker.process.pid)
        publish_peak = broker.peak
        disk_after_publish = du_kib(data_dir)
        broker.kill()
        print("killed with SIGKILL; restarting ...", file=sys.stderr)
        broker = Broker(data_dir, log)
        recovery_seconds = broker.ready_after
        after_recovery = rss_kib(broker.process.pid)
        broker.reset_peak()
        print(f"recovered in {recovery_seconds:.1f} s; consuming ...", file=sys.stderr)
        consumed = client(broker, "--consume-count", str(args.count), "--queue", "backlog")
        consume_peak = broker.peak
        time.sleep(2)
        disk_after_consume = du_kib(data_dir)
        broker.stop()
    finally:
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)
    mib = lambda kib: f"{kib / 1024:,.0f} MiB"
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    text = "\n".join([
        f"### Backlog larger than memory: {args.count:,} persistent messages of {args.size} B",
        "",
        f"Measured {when} with `scripts/soak-backlog --count {args.count}`: one durable queue, "
        f"publisher confirms, no consumer; then `kill -9`, a restart, and one consumer (prefetch "
        f"2,000) reading the whole backlog, every message checked to arrive once and in order. "
        f"Warren's default memory share per queue (`storage.queue_memory_bytes`, 64 MiB).",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| backlog (bodies) | {mib(backlog_kib)} |",
        f"| publish (with confirms) | {published['msgs_per_s']:,.0f} msg/s ({published['seconds']:.0f} s) |",
        f"| broker RSS: at start / peak while publishing / after publishing | {mib(baseline)} / {mib(publish_peak)} / {mib(after_publish)} |",
        f"| data directory after publishing | {mib(disk_after_publish)} |",
        f"| recovery after `kill -9` (start to AMQP listening) | {recovery_seconds:.1f} s |",
        f"| broker RSS after recovery / peak while consuming | {mib(after_recovery)} / {mib(consume_peak)} |",
        f"| consume (in order, acked) | {consumed['msgs_per_s']:,.0f} msg/s ({consumed['seconds']:.0f} s) |",
        f"| data directory after consuming | {mib(disk_after_consume)} |",
    ])
    print(text)
    if args.out:
        write_results(args.out, text)


if __name__ == "__main__":
    main()
