// mqtt.js (its browser bundle) in headless Chromium against a real Warren, over MQTT-over-
// WebSocket at /mqtt on the HTTP port: MQTT 3.1.1 and MQTT 5 clients subscribe and publish, and
// AMQP (amqplib) is on the other side both ways, through amq.topic. Run with
// `node --test tests/browser/` after `npm ci` here; the broker is $WARREN_BIN, else
// target/debug/warren.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { fileURLToPath } from 'node:url';
import amqp from 'amqplib';
import { LAUNCH_BUDGET_MS, launchChromium } from './chromium.mjs';
import { startBroker } from './warren.mjs';

const MQTT_BUNDLE = fileURLToPath(new URL('./node_modules/mqtt/dist/mqtt.min.js', import.meta.url));
const STEP_TIMEOUT_MS = 15_000;
const TEST_TIMEOUT_MS = 45_000;
const HOOK_TIMEOUT_MS = 45_000 + LAUNCH_BUDGET_MS;

let broker;
let amqpConnection;
let channel;
let browser;
let context;
let pageServer;
let pageUrl;

before(async () => {
  pageServer = createServer((request, response) => {
    response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    response.end('<!doctype html><title>mqtt.js</title>');
  });
  await new Promise((resolve) => pageServer.listen(0, '127.0.0.1', resolve));
  pageUrl = `http://127.0.0.1:${pageServer.address().port}/`;
  broker = await startBroker();
  amqpConnection = await amqp.connect(`amqp://guest:guest@127.0.0.1:${broker.ports.amqp}`);
  channel = await amqpConnection.createChannel();
  browser = await launchChromium();
  ({ context } = browser);
}, { timeout: HOOK_TIMEOUT_MS });

after(async () => {
  await browser?.close();
  await amqpConnection?.close().catch(() => {});
  broker?.stop();
  pageServer?.close();
}, { timeout: HOOK_TIMEOUT_MS });

/** An empty page with mqtt.js loaded (its global `mqtt`). The page is served from 127.0.0.1 by
 * this test (`pageServer`) because Chromium's local network access checks refuse a WebSocket
 * to 127.0.0.1 from a page that is not local itself (about:blank or an intercepted URL). */
async function pageWithMqtt() {
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(error));
  await page.goto(pageUrl, { timeout: STEP_TIMEOUT_MS });
  await page.addScriptTag({ path: MQTT_BUNDLE });
  assert.equal(await page.evaluate(() => typeof mqtt.connect), 'function', 'mqtt.js loaded');
  return { page, errors };
}

/** An AMQP queue bound to amq.topic, and its next message's body, within the step deadline. */
async function amqpInbox(bindingKey) {
  const { queue } = await channel.assertQueue('', { exclusive: true });
  await channel.bindQueue(queue, 'amq.topic', bindingKey);
  return () => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`nothing on ${bindingKey}`)), STEP_TIMEOUT_MS);
    const poll = async () => {
      const message = await channel.get(queue, { noAck: true });
      if (message) {
        clearTimeout(timer);
        resolve(message);
      } else {
        setTimeout(poll, 50);
      }
    };
    poll();
  });
}

for (const protocolVersion of [4, 5]) {
  test(`mqtt.js over WebSocket (MQTT ${protocolVersion === 5 ? '5' : '3.1.1'}) meets AMQP both ways`,
    { timeout: TEST_TIMEOUT_MS }, async () => {
      const { page, errors } = await pageWithMqtt();
      const topic = `browser/v${protocolVersion}`;
      const nextOut = await amqpInbox(`browser.v${protocolVersion}.out`);
      // Connect and subscribe in the page; keep what arrives in window.received.
      const granted = await page.evaluate(({ url, topic, protocolVersion, timeout }) => new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('no CONNACK/SUBACK')), timeout);
        window.received = [];
        const client = mqtt.connect(url, {
          protocolVersion, username: 'guest', password: 'guest', clientId: `browser-v${protocolVersion}`,
          reconnectPeriod: 0,
        });
        window.client = client;
        client.on('error', (error) => reject(new Error(String(error))));
        client.on('message', (received, payload, packet) => {
          window.received.push({
            topic: received,
            payload: new TextDecoder().decode(payload),
            userProperties: packet.properties?.userProperties ?? null,
          });
        });
        client.on('connect', () => {
          client.subscribe(`${topic}/in/#`, { qos: 1 }, (error, grants) => {
            clearTimeout(timer);
            if (error) reject(new Error(String(error)));
            else resolve(grants.map((grant) => grant.qos));
          });
        });
      }), { url: `ws://127.0.0.1:${broker.ports.http}/mqtt`, topic, protocolVersion, timeout: STEP_TIMEOUT_MS });
      assert.deepEqual(granted, [1], 'SUBACK grants QoS 1');

      // AMQP in, the browser out: `browser.vN.in.temp` is `browser/vN/in/temp` there.
      const headers = protocolVersion === 5 ? { headers: { source: 'amqplib' } } : {};
      channel.publish('amq.topic', `browser.v${protocolVersion}.in.temp`, Buffer.from('21.5'), headers);
      await page.waitForFunction(() => window.received.length > 0, null, { timeout: STEP_TIMEOUT_MS });
      const [message] = await page.evaluate(() => window.received);
      assert.equal(message.topic, `${topic}/in/temp`);
      assert.equal(message.payload, '21.5');
      if (protocolVersion === 5) {
        assert.deepEqual(message.userProperties, { source: 'amqplib' }, 'AMQP headers are MQTT 5 user properties');
      }

      // The browser in, AMQP out, at QoS 1 (PUBACK comes back to the page).
      const acked = await page.evaluate(({ topic, timeout }) => new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('no PUBACK')), timeout);
        window.client.publish(`${topic}/out`, 'from the browser', { qos: 1 }, (error) => {
          clearTimeout(timer);
          if (error) reject(new Error(String(error)));
          else resolve(true);
        });
      }), { topic, timeout: STEP_TIMEOUT_MS });
      assert.equal(acked, true);
      const delivered = await nextOut();
      assert.equal(delivered.content.toString(), 'from the browser');
      assert.equal(delivered.fields.routingKey, `browser.v${protocolVersion}.out`);

      await page.evaluate(() => new Promise((resolve) => window.client.end(false, {}, resolve)));
      assert.deepEqual(errors, [], 'no errors in the page');
      await page.close();
    });
}
