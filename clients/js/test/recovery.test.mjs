// Reconnect and gapless recovery against real edges: SIGKILL, SIGTERM drain, a frozen
// edge (heartbeat), lost history (resync) and explicit `since`.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Roomcast, parseOffset } from '../roomcast.js';
import {
  Resp, backendPublisher, chooseWebSocket, killAll, record, startEdge, startRedis, waitFor,
} from './harness.mjs';

/** Asserts that `messages` carry exactly n = 1..count, in order, with consecutive offsets. */
function assertContiguous(messages, count) {
  const ns = messages.map((m) => m.data.n);
  const missing = [];
  for (let i = 1; i <= count; i++) if (!ns.includes(i)) missing.push(i);
  const dups = ns.filter((n, i) => ns.indexOf(n) !== i);
  assert.deepEqual({ missing, dups }, { missing: [], dups: [] }, 'no gap, no duplicate');
  assert.deepEqual(ns, Array.from({ length: count }, (_, i) => i + 1), 'in order');
  const offsets = messages.map((m) => parseOffset(m.offset));
  for (let i = 1; i < offsets.length; i++) {
    assert.equal(offsets[i].epoch, offsets[0].epoch);
    assert.equal(offsets[i].seq, offsets[i - 1].seq + 1, `offset after ${messages[i - 1].offset}`);
  }
}

describe('reconnect and recovery', { timeout: 120000 }, () => {
  let redis;
  let WS;
  const clients = [];
  const client = (url, opts) => {
    const rc = new Roomcast(url, { WebSocket: WS, ...opts });
    clients.push(rc);
    return rc;
  };

  before(async () => {
    redis = await startRedis(['history-len', '1000']);
  });

  after(async () => {
    for (const rc of clients) rc.close();
    await killAll();
  });

  /**
   * Runs a publisher of `count` numbered messages into `room`, calls `disrupt` once
   * `at` of them are out, and checks that the client gets all of them exactly once.
   */
  async function publishThrough(rc, log, room, { count, at, disrupt }) {
    const pub = backendPublisher(redis, room, { count, everyMs: 4 });
    await waitFor(() => pub.sent() >= at, { timeoutMs: 10000, what: `${at} messages published` });
    await disrupt();
    await pub.done;
    await waitFor(() => log.messages.filter((m) => m.room === room).length >= count
      && rc.lastOffset(room) === pub.offsets[count - 1], { timeoutMs: 15000, what: `all ${count} messages`, intervalMs: 20 })
      .catch((err) => {
        const got = log.messages.filter((m) => m.room === room).map((m) => m.data.n);
        throw new Error(`${err.message}; got ${got.length}: ...${got.slice(-5)}; states ${JSON.stringify(log.states.map((s) => [s.state, s.info]))}`);
      });
    assertContiguous(log.messages.filter((m) => m.room === room), count);
    return pub;
  }

  it('recovers without gap or duplicate after SIGKILL of its edge', { timeout: 40000 }, async () => {
    const [k1, k2] = await Promise.all([startEdge(redis, 'k1'), startEdge(redis, 'k2')]);
    WS = (await chooseWebSocket(k1)).WebSocket;
    const rc = client([k1.url, k2.url], { user: 'reader', backoff: { initialMs: 100, maxMs: 1000 } });
    const log = record(rc);
    await rc.connect();
    assert.equal(rc.welcome.node, 'k1-w0');
    await rc.join('feed');
    await publishThrough(rc, log, 'feed', {
      count: 400,
      at: 100,
      disrupt: async () => {
        k1.signal('SIGKILL');
        await waitFor(() => log.states.some((s) => s.state === 'reconnecting'), { what: 'reconnecting' });
      },
    });
    assert.equal(rc.welcome.node, 'k2-w0', 'moved to the other edge');
    assert.deepEqual(log.resyncs, []);
    assert.deepEqual(log.states.map((s) => s.state), ['connecting', 'open', 'reconnecting', 'open']);
    await k2.stop();
  });

  it('reconnects at once to the other edge when its edge drains (1012)', { timeout: 40000 }, async () => {
    const [d1, d2] = await Promise.all([startEdge(redis, 'd1'), startEdge(redis, 'd2')]);
    WS = (await chooseWebSocket(d1)).WebSocket;
    // A long backoff: only an immediate reconnect keeps the pause short.
    const rc = client([d1.url, d2.url], { user: 'drainee', backoff: { initialMs: 20000, maxMs: 20000 } });
    const log = record(rc);
    await rc.connect();
    assert.equal(rc.welcome.node, 'd1-w0');
    await rc.join('feed2');
    await publishThrough(rc, log, 'feed2', {
      count: 400,
      at: 100,
      disrupt: async () => {
        d1.signal('SIGTERM');
        await waitFor(() => log.states.some((s) => s.state === 'reconnecting'), { what: 'reconnecting' });
      },
    });
    const down = log.states.find((s) => s.state === 'reconnecting');
    assert.equal(down.info.code, 1012);
    const up = log.states.filter((s) => s.state === 'open')[1];
    assert.ok(up.at - down.at < 1000, `reopened after ${up.at - down.at} ms`);
    assert.equal(rc.welcome.node, 'd2-w0');
    assert.deepEqual(log.resyncs, []);
    const exit = await d1.process.exited;
    assert.equal(exit.code, 0, 'the drained edge exits cleanly');
    await d2.stop();
  });

  it('detects a frozen edge by heartbeat and recovers on the other one', { timeout: 40000 }, async () => {
    const [h1, h2] = await Promise.all([startEdge(redis, 'h1'), startEdge(redis, 'h2')]);
    WS = (await chooseWebSocket(h1)).WebSocket;
    const rc = client([h1.url, h2.url], { user: 'watcher', heartbeatMs: 200, backoff: { initialMs: 50, maxMs: 500 } });
    const log = record(rc);
    await rc.connect();
    await rc.join('feed3');
    await publishThrough(rc, log, 'feed3', {
      count: 300,
      at: 80,
      disrupt: async () => {
        h1.signal('SIGSTOP');
        await waitFor(() => log.states.some((s) => s.state === 'reconnecting'), { timeoutMs: 3000, what: 'heartbeat timeout' });
      },
    });
    assert.equal(log.states.find((s) => s.state === 'reconnecting').info.reason, 'heartbeat timeout');
    assert.equal(rc.welcome.node, 'h2-w0');
    await h1.stop();
    await h2.stop();
  });

  it('emits resync when the gap is older than the retained history', { timeout: 40000 }, async () => {
    const r1 = await startEdge(redis, 'r1');
    WS = (await chooseWebSocket(r1)).WebSocket;
    const rc = client(r1.url, { user: 'sleeper', backoff: { initialMs: 50, maxMs: 500 } });
    const log = record(rc);
    await rc.connect();
    await rc.join('busy');
    await redis.command('RC.PUBLISH', 'busy', '{"n":1}');
    await waitFor(() => log.messages.length === 1, { what: 'first message' });
    const before = rc.lastOffset('busy');
    rc.close();
    assert.equal(rc.state, 'closed');

    // Far more than history-len (1000) while the client is away, pipelined.
    const c = await Resp.connect(redis.port);
    const replies = [];
    for (let i = 2; i <= 3000; i++) replies.push(c.command('RC.PUBLISH', 'busy', JSON.stringify({ n: i })));
    await Promise.all(replies);
    c.close();

    await rc.connect();
    await waitFor(() => log.resyncs.length === 1, { what: 'resync' });
    assert.equal(log.resyncs[0].room, 'busy');
    assert.equal(log.messages.length, 1, 'nothing replayed when recovery is impossible');
    assert.equal(parseOffset(rc.lastOffset('busy')).seq, parseOffset(before).seq + 2999, 'restarts from the cut');
    // The app can page through history, and live messages continue from the cut.
    const page = await rc.history('busy', { limit: 10 });
    assert.equal(page.messages.at(-1).data.n, 3000);
    await redis.command('RC.PUBLISH', 'busy', '{"n":3001}');
    await waitFor(() => log.messages.length === 2, { what: 'live message after resync' });
    assert.equal(log.messages[1].data.n, 3001);
    await r1.stop();
  });

  it('replays from an explicit since offset, then continues live', { timeout: 20000 }, async () => {
    const s1 = await startEdge(redis, 's1');
    WS = (await chooseWebSocket(s1)).WebSocket;
    const offsets = [];
    for (let i = 1; i <= 10; i++) offsets.push((await redis.command('RC.PUBLISH', 'stored', JSON.stringify({ n: i })))[2]);
    const rc = client(s1.url, { user: 'late' });
    const log = record(rc);
    await rc.connect();
    const ack = await rc.join('stored', { since: offsets[3] });
    assert.equal(ack.recovered, true);
    assert.equal(ack.offset, offsets[9]);
    assert.deepEqual(log.messages.map((m) => m.data.n), [5, 6, 7, 8, 9, 10], 'replayed before the ack');
    await redis.command('RC.PUBLISH', 'stored', '{"n":11}');
    await waitFor(() => log.messages.length === 7, { what: 'live message' });
    assertContiguous(log.messages.map((m) => ({ ...m, data: { n: m.data.n - 4 } })), 7);
    await s1.stop();
  });
});
