// The client on Node's own (undici) WebSocket, straight to the edges: undici is strict
// about the upgrade response (`Connection: upgrade` exactly), so this guards it.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Roomcast } from '../roomcast.js';
import { killAll, probeGlobalWebSocket, record, startEdge, startRedis, waitFor } from './harness.mjs';

describe("Node's global WebSocket", { timeout: 60000 }, () => {
  let redis;
  let e1;
  let e2;
  let url1;
  let url2;
  const clients = [];

  before(async () => {
    redis = await startRedis(['history-len', '1000']);
    [e1, e2] = await Promise.all([startEdge(redis, 'g1'), startEdge(redis, 'g2')]);
    const probe = await probeGlobalWebSocket(e1);
    assert.ok(probe.ok, `Node's WebSocket cannot connect to the edge: ${probe.error}`);
    [url1, url2] = [e1.url, e2.url];
  });

  after(async () => {
    for (const rc of clients) rc.close();
    await killAll();
  });

  it('publishes, receives, recovers after SIGKILL and stops on a kick', { timeout: 30000 }, async () => {
    const a = new Roomcast([url1, url2], { user: 'una', backoff: { initialMs: 50, maxMs: 300 } });
    const b = new Roomcast(url2, { user: 'vic' });
    clients.push(a, b);
    const la = record(a);
    const lb = record(b);
    await Promise.all([a.connect(), b.connect()]);
    assert.equal(a.welcome.node, 'g1-w0');
    await a.join('g');
    await b.join('g');
    const { offset } = await b.publish('g', { n: 1 });
    await waitFor(() => la.messages.length === 1, { what: 'message' });
    assert.deepEqual(la.messages[0], { room: 'g', from: 'vic', data: { n: 1 }, offset });

    e1.signal('SIGKILL');
    await waitFor(() => la.states.some((s) => s.state === 'reconnecting'), { what: 'reconnecting' });
    for (let n = 2; n <= 20; n++) await redis.command('RC.PUBLISH', 'g', JSON.stringify({ n }));
    await waitFor(() => la.messages.length === 20, { timeoutMs: 10000, what: 'all messages' });
    assert.deepEqual(la.messages.map((m) => m.data.n), Array.from({ length: 20 }, (_, i) => i + 1));
    assert.equal(a.welcome.node, 'g2-w0');

    await redis.command('RC.KICK', 'una');
    await waitFor(() => a.state === 'closed', { what: 'closed' });
    assert.deepEqual(a.closeInfo, { code: 1008, reason: 'kicked' });
    assert.equal(lb.messages.length, 19);
  });
});
