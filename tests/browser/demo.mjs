// Browser end-to-end test of the demo chat page, driven by tests/tests/demo_browser.rs.
//
//   node tests/browser/demo.mjs <edgeA host:port> <edgeB host:port> <artifact dir>
//
// Two headless Chromium pages (Debian's /usr/bin/chromium through playwright-core, or
// $ROOMCAST_CHROMIUM): alice on edge A, bob on edge B, both in room `lobby`, each with
// the other edge as its fallback. Checks live delivery and presence, then prints
// READY_FOR_KILL on stdout and waits for a line on stdin: the Rust test SIGKILLs edge A
// and answers. Alice's page must go to "reconnecting…", bob publishes 3 messages while
// alice is away, and alice must come back through edge B and show those 3 messages
// exactly once (history replay). Screenshots go to the artifact dir. Prints DEMO_OK on
// success; any failure exits non-zero with the reason and both pages' state.
//
// While alice is away, her page's WebSocket constructor is gated by the test (an init
// script): new sockets go to a closed loopback port until bob's 3 messages are acked, so
// the messages are always published while she is disconnected, whatever the client's
// backoff timing. The gate only delays her reconnection; it does not touch the client.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const [edgeA, edgeB, artifacts] = process.argv.slice(2);
if (!edgeA || !edgeB || !artifacts) {
  console.error('usage: node demo.mjs <edgeA host:port> <edgeB host:port> <artifact dir>');
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });

const STEP_MS = 10_000;
const started = Date.now();
const log = (...args) => console.error(`[demo ${((Date.now() - started) / 1000).toFixed(1)}s]`, ...args);

// The whole script is bounded, whatever hangs.
const watchdog = setTimeout(() => {
  console.error('demo.mjs: gave up after 50 s');
  process.exit(3);
}, 50_000);

const stdinLines = createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve, reject) => {
  stdinLines.once('line', resolve);
  stdinLines.once('close', () => reject(new Error('stdin closed before the kill was confirmed')));
});

const browser = await chromium.launch({
  executablePath: process.env.ROOMCAST_CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync',
    '--disable-dev-shm-usage',
  ],
});

const problems = [];

async function openPage(name, url, gated) {
  const context = await browser.newContext({ viewport: { width: 900, height: 560 } });
  if (gated) {
    await context.addInitScript(() => {
      const Real = window.WebSocket;
      window.__hold = false;
      window.__sockets = [];
      window.WebSocket = class extends Real {
        constructor(url, protocols) {
          const held = window.__hold;
          window.__sockets.push({ url: String(url), held });
          // A closed loopback port: the connection is refused at once.
          super(held ? 'ws://127.0.0.1:9/held-by-test' : url, protocols);
        }
      };
    });
  }
  const page = await context.newPage();
  page.on('pageerror', (e) => problems.push(`${name}: page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/held-by-test|ERR_CONNECTION_REFUSED|WebSocket connection/.test(m.text())) {
      problems.push(`${name}: console error: ${m.text()}`);
    }
  });
  await page.goto(url, { timeout: STEP_MS });
  return page;
}

/** What a page shows, for failure messages. */
async function snapshot(page) {
  return page.evaluate(() => ({
    url: location.href,
    status: document.getElementById('status')?.dataset.state,
    presence: [...document.querySelectorAll('#presence li')].map((li) => li.dataset.user),
    messages: [...document.querySelectorAll('#messages li')].map((li) => li.textContent),
    duplicates: document.getElementById('messages')?.dataset.duplicates,
    sockets: window.__sockets,
  })).catch((e) => `unavailable: ${e.message}`);
}

let pageA;
let pageB;

async function waitFor(page, what, fn, arg) {
  try {
    await page.waitForFunction(fn, arg, { timeout: STEP_MS, polling: 50 });
  } catch (e) {
    throw new Error(`timed out waiting for ${what}: ${e.message.split('\n')[0]}`);
  }
}

const texts = (page) => page.$$eval('#messages li.msg .text', (els) => els.map((e) => e.textContent));

async function say(page, text) {
  await page.fill('#input', text);
  await page.press('#input', 'Enter');
  // Acked: the pending style goes away (a failed send is marked .failed instead).
  await waitFor(page, `the ack of "${text}"`, (t) => [...document.querySelectorAll('#messages li.mine')]
    .some((li) => li.querySelector('.text').textContent === t && !li.classList.contains('pending')), text);
  const failed = await page.$$eval('#messages li.failed', (els) => els.map((e) => e.textContent));
  if (failed.length) throw new Error(`publish failed: ${failed.join(' | ')}`);
}

const shot = (page, file) => page.screenshot({ path: join(artifacts, file) });
const presenceIs = (users) => [...document.querySelectorAll('#presence li')]
  .map((li) => li.dataset.user).sort().join(',') === users;
const statusIs = (state) => document.getElementById('status').dataset.state === state;

try {
  pageA = await openPage('alice', `http://${edgeA}/demo?user=alice&edges=${edgeA},${edgeB}`, true);
  pageB = await openPage('bob', `http://${edgeB}/demo?user=bob&edges=${edgeB},${edgeA}`, false);

  // Both connected, in lobby, and each sees both users.
  for (const [name, page] of [['alice', pageA], ['bob', pageB]]) {
    await waitFor(page, `${name} connected`, statusIs, 'open');
    await waitFor(page, `${name}'s presence list to show alice and bob`, presenceIs, 'alice,bob');
    const label = await page.textContent('#status');
    if (!/connected/.test(label)) throw new Error(`${name}'s status reads "${label}"`);
  }
  log('both pages connected; presence shows alice and bob on both');

  // Live delivery both ways across the two edges.
  await say(pageA, 'hello from alice');
  await waitFor(pageB, 'bob to see alice\'s message', () => [...document.querySelectorAll('#messages li.msg')]
    .some((li) => li.dataset.from === 'alice' && li.textContent.includes('hello from alice')));
  await say(pageB, 'hi alice');
  await waitFor(pageA, 'alice to see bob\'s reply', () => [...document.querySelectorAll('#messages li.msg')]
    .some((li) => li.dataset.from === 'bob' && li.textContent.includes('hi alice')));
  log('live messages delivered across edges');
  await shot(pageA, 'a-before.png');
  await shot(pageB, 'b-before.png');

  // Edge A dies. Alice's reconnection is held until bob's messages are published.
  await pageA.evaluate(() => { window.__hold = true; });
  console.log('READY_FOR_KILL');
  await nextLine();
  log('edge A killed');
  await waitFor(pageA, 'alice\'s status to show reconnecting', statusIs, 'reconnecting');
  const label = await pageA.textContent('#status');
  if (!/reconnecting/.test(label)) throw new Error(`alice's status reads "${label}" while away`);

  const missed = ['missed 1', 'missed 2', 'missed 3'];
  for (const text of missed) await say(pageB, text);
  log('bob published 3 messages while alice was away');
  if (await pageA.evaluate(() => document.getElementById('status').dataset.state) === 'open') {
    throw new Error('alice reconnected before bob published: the test gate did not hold');
  }
  await shot(pageA, 'a-reconnecting.png');

  // Let alice reconnect: edge A is gone, so she must end up on edge B.
  await pageA.evaluate(() => { window.__hold = false; });
  await waitFor(pageA, 'alice to reconnect', statusIs, 'open');
  const reconnectedVia = await pageA.evaluate(() => window.__sockets.filter((s) => !s.held).at(-1)?.url);
  if (!reconnectedVia?.includes(edgeB)) {
    throw new Error(`alice's last socket went to ${reconnectedVia}, not edge B (${edgeB})`);
  }
  log(`alice reconnected via ${reconnectedVia}`);
  await waitFor(pageA, 'the 3 missed messages on alice\'s page', (want) => {
    const have = [...document.querySelectorAll('#messages li.msg .text')].map((e) => e.textContent);
    return want.every((t) => have.includes(t));
  }, missed);
  // Give late duplicates (a second replay, replay + live overlap) time to show up.
  await pageA.waitForTimeout(500);
  const shown = await texts(pageA);
  for (const text of [...missed, 'hi alice', 'hello from alice']) {
    const n = shown.filter((t) => t === text).length;
    if (n !== 1) throw new Error(`alice's page shows "${text}" ${n} times: ${JSON.stringify(shown)}`);
  }
  const order = missed.map((t) => shown.indexOf(t));
  if (!(order[0] < order[1] && order[1] < order[2] && shown.indexOf('hi alice') < order[0])) {
    throw new Error(`alice's page shows the messages out of order: ${JSON.stringify(shown)}`);
  }
  const duplicates = await pageA.$eval('#messages', (e) => e.dataset.duplicates);
  if (duplicates !== '0') {
    throw new Error(`the client delivered ${duplicates} message(s) alice already had`);
  }
  log('alice shows the 3 missed messages once each, in order');

  // Presence settles: alice is back in bob's list (after the sweep of edge A's node and
  // her rejoin through edge B), and alice's list shows both.
  await waitFor(pageB, 'bob\'s presence list to show alice again', presenceIs, 'alice,bob');
  await waitFor(pageA, 'alice\'s presence list to show alice and bob', presenceIs, 'alice,bob');
  // Alice can talk again, now through edge B.
  await say(pageA, 'back again');
  await waitFor(pageB, 'bob to see alice\'s message after her reconnection', () => [...document.querySelectorAll('#messages li.msg')]
    .some((li) => li.dataset.from === 'alice' && li.textContent.includes('back again')));
  await shot(pageA, 'a-after.png');
  await shot(pageB, 'b-after.png');

  if (problems.length) throw new Error(problems.join('\n'));
  console.log('DEMO_OK');
} catch (e) {
  console.error(`demo.mjs: FAILED: ${e.message}`);
  for (const [name, page] of [['alice', pageA], ['bob', pageB]]) {
    if (!page) continue;
    console.error(`${name}: ${JSON.stringify(await snapshot(page), null, 1)}`);
    await shot(page, `${name}-failure.png`).catch(() => {});
  }
  if (problems.length) console.error(problems.join('\n'));
  process.exitCode = 1;
} finally {
  clearTimeout(watchdog);
  stdinLines.close();
  await browser.close().catch(() => {});
}
