// Publish / receive, presence, direct, joined/left, errors: two clients on two edges.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Roomcast, RoomcastError, backoffDelay, parseOffset } from '../roomcast.js';
import { chooseWebSocket, killAll, record, startEdge, startRedis, waitFor } from './harness.mjs';

describe('roomcast client basics', { timeout: 60000 }, () => {
  let redis;
  let e1;
  let e2;
  let ws;
  const clients = [];
  const client = (url, opts) => {
    const rc = new Roomcast(url, { WebSocket: ws.WebSocket, backoff: { initialMs: 50, maxMs: 500 }, ...opts });
    clients.push(rc);
    return rc;
  };

  before(async () => {
    redis = await startRedis(['history-len', '1000']);
    [e1, e2] = await Promise.all([startEdge(redis, 'b1'), startEdge(redis, 'b2')]);
    ws = await chooseWebSocket(e1);
  });

  it("uses Node's global WebSocket", () => {
    assert.ok(ws.global, "the tests run on Node's own WebSocket");
  });

  after(async () => {
    for (const rc of clients) rc.close();
    await killAll();
  });

  it('publishes and receives across two edges, with acks and offsets', { timeout: 15000 }, async () => {
    const ann = client(e1.url, { user: 'ann' });
    const bob = client(e2.url, { user: 'bob' });
    const annLog = record(ann);
    const bobLog = record(bob);
    const [wa, wb] = await Promise.all([ann.connect(), bob.connect()]);
    assert.equal(wa.user, 'ann');
    assert.equal(wb.user, 'bob');
    assert.equal(wa.node, 'b1-w0');
    assert.equal(wb.node, 'b2-w0');
    assert.equal(ann.state, 'open');
    assert.deepEqual(annLog.states.map((s) => s.state), ['connecting', 'open']);

    const ja = await ann.join('lobby');
    assert.ok('offset' in ja, `join ack has an offset: ${JSON.stringify(ja)}`);
    await bob.join('lobby');
    await waitFor(() => annLog.joined.some((j) => j.user === 'bob' && j.room === 'lobby'), { what: 'joined event' });

    const acks = [];
    for (let i = 1; i <= 5; i++) acks.push(await ann.publish('lobby', { i, text: `hello ${i}` }));
    for (const ack of acks) assert.ok(parseOffset(ack.offset), `offset ${ack.offset} is <epoch>:<seq>`);
    const seqs = acks.map((a) => parseOffset(a.offset).seq);
    assert.deepEqual(seqs, seqs.map((_, i) => seqs[0] + i), 'publish offsets are consecutive');

    await waitFor(() => bobLog.messages.length === 5, { what: 'five messages' });
    assert.deepEqual(bobLog.messages.map((m) => m.data.i), [1, 2, 3, 4, 5]);
    assert.deepEqual(bobLog.messages.map((m) => m.offset), acks.map((a) => a.offset));
    assert.equal(bobLog.messages[0].from, 'ann');
    assert.equal(bobLog.messages[0].room, 'lobby');
    assert.equal(annLog.messages.length, 0, 'the publisher does not get its own messages');
    assert.equal(bob.lastOffset('lobby'), acks[4].offset);
    assert.equal(ann.lastOffset('lobby'), acks[4].offset, 'own publishes advance the offset');

    // Backend publish: from is null.
    await redis.command('RC.PUBLISH', 'lobby', '"from the backend"');
    await waitFor(() => bobLog.messages.length === 6 && annLog.messages.length === 1, { what: 'backend message' });
    assert.equal(annLog.messages[0].from, null);
    assert.equal(annLog.messages[0].data, 'from the backend');
  });

  it('reports presence, with join({presence}) and presence()', { timeout: 15000 }, async () => {
    const cat = client(e1.url, { user: 'cat' });
    const dan = client(e2.url, { user: 'dan' });
    await Promise.all([cat.connect(), dan.connect()]);
    await dan.join('den');
    const ack = await cat.join('den', { presence: true });
    assert.deepEqual(ack.users, ['cat', 'dan']);
    assert.deepEqual(await dan.presence('den'), ['cat', 'dan']);

    const danLog = record(dan);
    await cat.leave('den');
    await waitFor(() => danLog.left.some((l) => l.user === 'cat' && l.room === 'den'), { what: 'left event' });
    assert.deepEqual(await dan.presence('den'), ['dan']);
    assert.deepEqual(cat.rooms(), []);
  });

  it('sends direct messages to every connection of a user', { timeout: 15000 }, async () => {
    const eve = client(e1.url, { user: 'eve' });
    const fay1 = client(e1.url, { user: 'fay' });
    const fay2 = client(e2.url, { user: 'fay' });
    const l1 = record(fay1);
    const l2 = record(fay2);
    await Promise.all([eve.connect(), fay1.connect(), fay2.connect()]);
    await eve.send('fay', { secret: 42 });
    await waitFor(() => l1.directs.length === 1 && l2.directs.length === 1, { what: 'direct messages' });
    assert.deepEqual(l1.directs[0], { from: 'eve', data: { secret: 42 } });
    assert.deepEqual(l2.directs[0], { from: 'eve', data: { secret: 42 } });
  });

  it('rejects requests with the server error', { timeout: 15000 }, async () => {
    const gus = client(e1.url, { user: 'gus' });
    await gus.connect();
    await assert.rejects(gus.publish('nowhere', 1), (err) => err instanceof RoomcastError && err.code === 'not_member');
    await assert.rejects(gus.join('{bad'), (err) => err.code === 'bad_request');
    assert.deepEqual(gus.rooms(), [], 'a refused room is not re-joined');
    await assert.rejects(gus.send('', 1), (err) => err.code === 'bad_request');
  });

  it('returns room history', { timeout: 15000 }, async () => {
    const hal = client(e2.url, { user: 'hal' });
    await hal.connect();
    await hal.join('hist');
    const offsets = [];
    for (let i = 1; i <= 4; i++) offsets.push((await hal.publish('hist', { i })).offset);
    const all = await hal.history('hist', {});
    assert.deepEqual(all.messages.map((m) => m.data.i), [1, 2, 3, 4]);
    assert.deepEqual(all.messages.map((m) => m.offset), offsets);
    assert.equal(all.messages[0].from, 'hal');
    assert.equal(all.offset, offsets[3]);
    const page = await hal.history('hist', { since: offsets[0], limit: 2 });
    assert.deepEqual(page.messages.map((m) => m.data.i), [2, 3]);
    assert.equal(page.complete, false);
    const rest = await hal.history('hist', { since: offsets[2] });
    assert.deepEqual(rest.messages.map((m) => m.data.i), [4]);
    assert.equal(rest.complete, true);
  });

  it('rejects pending requests and then reconnects when the socket drops', { timeout: 15000 }, async () => {
    const ida = client(e1.url, { user: 'ida' });
    const log = record(ida);
    await ida.connect();
    await ida.join('drop');
    const conn = ida.welcome.conn;
    const pending = ida.presence('drop');
    // Kick only this connection from the backend? RC.KICK closes with 1008 (terminal),
    // so drop the TCP connection instead by closing the socket under the client.
    ida._ws.close(4000, 'test');
    await assert.rejects(pending, (err) => ['disconnected', 'timeout'].includes(err.code) || err.code === undefined);
    await waitFor(() => ida.state === 'open' && ida.welcome.conn !== conn, { what: 'reconnect' });
    assert.ok(log.states.some((s) => s.state === 'reconnecting'));
    assert.deepEqual(await ida.presence('drop'), ['ida'], 're-joined after reconnect');
  });

  it('computes full-jitter backoff', () => {
    assert.equal(backoffDelay(0, 100, 1000, () => 0.999999), 99);
    assert.equal(backoffDelay(3, 100, 1000, () => 0.5), 400);
    assert.equal(backoffDelay(10, 100, 1000, () => 0.5), 500);
    assert.equal(backoffDelay(5, 100, 1000, () => 0), 0);
    for (let i = 0; i < 100; i++) {
      const d = backoffDelay(2, 100, 1000);
      assert.ok(d >= 0 && d < 400);
    }
  });
});
