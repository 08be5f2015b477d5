// The browser chat example (examples/web-chat) in headless Chromium against a real Warren:
// two pages chat over STOMP-over-WebSocket, and an AMQP queue bound to amq.topic with key `chat`
// sees the same messages. Run with `node --test tests/browser/` after `npm ci` here and in
// examples/web-chat; the broker is $WARREN_BIN, else target/debug/warren. Alice's page ends up
// in test-artifacts/web-chat.png.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import amqp from 'amqplib';
import { LAUNCH_BUDGET_MS, launchChromium } from './chromium.mjs';
import { REPO_ROOT, startBroker } from './warren.mjs';

const EXAMPLE_DIR = join(REPO_ROOT, 'examples', 'web-chat');
const SCREENSHOT = join(REPO_ROOT, 'test-artifacts', 'web-chat.png');
// Deadlines for one step each.
const STEP_TIMEOUT_MS = 15_000;
const TEST_TIMEOUT_MS = 45_000;
// Hooks get deadlines too, so a hung connect fails the run instead of stalling it.
const HOOK_TIMEOUT_MS = 45_000 + LAUNCH_BUDGET_MS;

let broker;
let server;
let amqpConnection;
let inbox;
let browser;
let context;
const pages = {};
const pageErrors = [];

/** Starts `serve.mjs` on a free port; resolves with `{ url, stop() }` once it is listening. */
function startStaticServer() {
  const child = spawn(process.execPath, ['serve.mjs', '0'], {
    cwd: EXAMPLE_DIR, stdio: ['ignore', 'pipe', 'inherit'],
  });
  const stop = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
  };
  return new Promise((resolveServer, rejectServer) => {
    let output = '';
    const timer = setTimeout(() => {
      stop();
      rejectServer(new Error(`serve.mjs did not start within ${STEP_TIMEOUT_MS} ms: ${output}`));
    }, STEP_TIMEOUT_MS);
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk) => {
      output += chunk;
      const match = /serving (http:\/\/\S+)/.exec(output);
      if (match) {
        clearTimeout(timer);
        resolveServer({ url: match[1], stop });
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      rejectServer(new Error(`serve.mjs exited with ${code}: ${output}`));
    });
  });
}

/**
 * Messages consumed from a queue bound to amq.topic with `chat`; `next(predicate)` resolves with
 * the first one that matches, waiting up to the step deadline.
 */
async function bindChatQueue(connection) {
  const channel = await connection.createChannel();
  const { queue } = await channel.assertQueue('', { exclusive: true });
  await channel.bindQueue(queue, 'amq.topic', 'chat');
  const received = [];
  const waiters = new Set();
  await channel.consume(queue, (message) => {
    if (message === null) return;
    received.push(message);
    for (const waiter of waiters) waiter();
  }, { noAck: true });
  return {
    channel,
    next(predicate) {
      return new Promise((resolveNext, rejectNext) => {
        const check = () => {
          const found = received.find(predicate);
          if (!found) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolveNext(found);
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          const bodies = received.map((message) => message.content.toString());
          rejectNext(new Error(`no matching AMQP message within ${STEP_TIMEOUT_MS} ms; got ${JSON.stringify(bodies)}`));
        }, STEP_TIMEOUT_MS);
        waiters.add(check);
        check();
      });
    },
  };
}

async function openChat(name) {
  const brokerUrl = `ws://127.0.0.1:${broker.ports.http}/ws`;
  const page = await context.newPage();
  page.on('pageerror', (error) => pageErrors.push(`${name}: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error') pageErrors.push(`${name} console: ${message.text()}`);
  });
  const query = new URLSearchParams({ broker: brokerUrl, name });
  await page.goto(`${server.url}?${query}`, { timeout: STEP_TIMEOUT_MS });
  return page;
}

/** Waits until the page's STOMP session is up: chat.js sets <body data-connected="true">. */
async function waitConnected(page) {
  await page.waitForSelector('body[data-connected="true"]', { timeout: STEP_TIMEOUT_MS });
}

/** Waits until the page lists a message from `name` saying `text`. */
async function waitForChatLine(page, name, text) {
  await page.locator('#messages li', { hasText: text })
    .filter({ has: page.locator('.name', { hasText: name }) })
    .waitFor({ timeout: STEP_TIMEOUT_MS });
}

async function say(page, text) {
  await page.fill('#text', text);
  await page.click('#send');
}

before(async () => {
  broker = await startBroker();
  server = await startStaticServer();
  amqpConnection = await amqp.connect(`amqp://guest:guest@127.0.0.1:${broker.ports.amqp}`);
  inbox = await bindChatQueue(amqpConnection);
  browser = await launchChromium({ viewport: { width: 800, height: 500 } });
  ({ context } = browser);
  pages.alice = await openChat('alice');
  pages.bob = await openChat('bob');
  await Promise.all([waitConnected(pages.alice), waitConnected(pages.bob)]);
}, { timeout: HOOK_TIMEOUT_MS });

after(async () => {
  try {
    // Taken here rather than in a test so that a failed run leaves one too.
    if (pages.alice) {
      mkdirSync(join(REPO_ROOT, 'test-artifacts'), { recursive: true });
      await pages.alice.screenshot({ path: SCREENSHOT, timeout: STEP_TIMEOUT_MS });
    }
  } finally {
    // Each step runs even if an earlier one failed, so nothing outlives the test.
    await browser?.close();
    await amqpConnection?.close().catch(() => {});
    server?.stop();
    await broker?.stop();
  }
}, { timeout: HOOK_TIMEOUT_MS });

test('stomp_ws_to_stomp_ws_and_amqp_chat_message', { timeout: TEST_TIMEOUT_MS }, async () => {
  const text = `hello from alice ${Date.now()}`;
  const fromAmqp = inbox.next((message) => message.content.toString().includes(text));
  await say(pages.alice, text);

  await waitForChatLine(pages.bob, 'alice', text);
  await waitForChatLine(pages.alice, 'alice', text);
  const message = await fromAmqp;
  assert.deepEqual(JSON.parse(message.content.toString()), { name: 'alice', text });
  assert.equal(message.fields.exchange, 'amq.topic');
  assert.equal(message.fields.routingKey, 'chat');
  assert.equal(message.properties.contentType, 'application/json');

  const reply = 'hi alice, bob here';
  await say(pages.bob, reply);
  await waitForChatLine(pages.alice, 'bob', reply);
  await inbox.next((message) => message.content.toString().includes(reply));
  assert.deepEqual(pageErrors, []);
});

test('amqp_to_stomp_ws_chat_message', { timeout: TEST_TIMEOUT_MS }, async () => {
  const text = `hello from amqp ${Date.now()}`;
  inbox.channel.publish('amq.topic', 'chat', Buffer.from(JSON.stringify({ name: 'amqp', text })),
    { contentType: 'application/json' });
  await Promise.all([
    waitForChatLine(pages.alice, 'amqp', text),
    waitForChatLine(pages.bob, 'amqp', text),
  ]);
  assert.deepEqual(pageErrors, []);
});
