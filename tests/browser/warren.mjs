// The Warren broker process under test: find the binary, start it with every port 0, learn the
// ports it picked from its `listening protocol=NAME addr=HOST:PORT` lines on stderr, stop it.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

const LISTENING_LINE = /listening protocol="?(\w+)"? addr="?([^\s"]+):(\d+)/;
// Guards against a logger that colours its output anyway and so splits `key=value` pairs.
const ANSI_ESCAPE = /\x1b\[[0-9;]*m/g;
// A debug build on a busy 2-core machine can take a few seconds to start.
const STARTUP_TIMEOUT_MS = Number(process.env.WARREN_STARTUP_TIMEOUT_MS ?? 20_000);
// SIGTERM gets this long for a polite shutdown before SIGKILL.
const STOP_TIMEOUT_MS = 10_000;
const PROTOCOLS = ['amqp', 'mqtt', 'stomp', 'http'];

/** `$WARREN_BIN`, else `<repo>/target/debug/warren`. */
export function resolveBinary() {
  const binary = process.env.WARREN_BIN
    ? resolve(process.env.WARREN_BIN)
    : join(REPO_ROOT, 'target', 'debug', 'warren');
  if (!existsSync(binary)) {
    throw new Error(`no broker binary at ${binary}: set WARREN_BIN or run cargo build`);
  }
  return binary;
}

/**
 * Starts the broker on free ports and resolves once every protocol's listening line is in.
 * Returns `{ ports: { amqp, mqtt, stomp, http }, log(), stop() }`.
 */
export async function startBroker() {
  const binary = resolveBinary();
  const workDir = mkdtempSync(join(tmpdir(), 'warren-browser-'));
  const child = spawn(binary, [
    '--amqp-port', '0', '--mqtt-port', '0', '--stomp-port', '0', '--http-port', '0',
    '--bind', '127.0.0.1', '--data-dir', join(workDir, 'data'), '--log-level', 'info',
  ], { cwd: workDir, env: { ...process.env, NO_COLOR: '1' }, stdio: ['ignore', 'ignore', 'pipe'] });

  // Drain stderr for the broker's whole life, so a chatty broker never blocks on a full pipe.
  const lines = [];
  let partial = '';
  const ports = {};
  let onProgress = () => {};
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk) => {
    const pieces = (partial + chunk).split('\n');
    partial = pieces.pop();
    for (const raw of pieces) {
      const line = raw.replace(ANSI_ESCAPE, '');
      lines.push(line);
      const match = LISTENING_LINE.exec(line);
      if (match) ports[match[1]] = Number(match[3]);
    }
    onProgress();
  });
  const exited = new Promise((resolveExit) => child.once('exit', (code, signal) => resolveExit({ code, signal })));
  const log = () => lines.join('\n');

  const broker = {
    ports,
    log,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
        await exited;
        clearTimeout(timer);
      }
      rmSync(workDir, { recursive: true, force: true });
    },
  };

  try {
    await new Promise((resolveReady, rejectReady) => {
      const timer = setTimeout(() => rejectReady(new Error(
        `broker did not log every listening line within ${STARTUP_TIMEOUT_MS} ms; log:\n${log()}`)),
        STARTUP_TIMEOUT_MS);
      const finish = (error) => {
        clearTimeout(timer);
        onProgress = () => {};
        error ? rejectReady(error) : resolveReady();
      };
      onProgress = () => {
        if (PROTOCOLS.every((protocol) => protocol in ports)) finish();
      };
      child.once('error', finish);
      exited.then(({ code, signal }) => finish(new Error(
        `broker exited (code ${code}, signal ${signal}) before listening; log:\n${log()}`)));
      onProgress();
    });
  } catch (error) {
    await broker.stop();
    throw error;
  }
  return broker;
}
