// Debian's Chromium, driven by playwright-core (Playwright's own browser download is not needed),
// shared by the browser tests.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';
// Chromium's background services try to reach the internet, which this closed network refuses.
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
// The first start of a freshly installed Chromium on a cold 2-core CI machine has taken more
// than 15 s (it builds its caches), so a launch gets a minute, and one more try after a timeout.
const LAUNCH_TIMEOUT_MS = 60_000;
const LAUNCH_ATTEMPTS = 2;
/** What a `before` hook that launches Chromium needs as its own deadline. */
export const LAUNCH_BUDGET_MS = LAUNCH_TIMEOUT_MS * LAUNCH_ATTEMPTS;

/**
 * Headless Chromium with a profile of its own in a temporary directory. Resolves with
 * `{ context, close() }`; `close()` ends the browser and removes the profile.
 */
export async function launchChromium(options = {}) {
  let lastError;
  for (let attempt = 1; attempt <= LAUNCH_ATTEMPTS; attempt += 1) {
    const userDataDir = mkdtempSync(join(tmpdir(), 'warren-chromium-'));
    try {
      const context = await chromium.launchPersistentContext(userDataDir, {
        executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: LAUNCH_TIMEOUT_MS,
        ...options,
      });
      return {
        context,
        async close() {
          await context.close().catch(() => {});
          rmSync(userDataDir, { recursive: true, force: true });
        },
      };
    } catch (error) {
      rmSync(userDataDir, { recursive: true, force: true });
      lastError = error;
      if (error?.name !== 'TimeoutError') break;
      console.error(`# Chromium did not start within ${LAUNCH_TIMEOUT_MS} ms (attempt ${attempt})`);
    }
  }
  throw lastError;
}
