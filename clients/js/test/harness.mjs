// Test harness: real redis-server (with the roomcast module) and real roomcast-edge
// processes on loopback, plus a tiny RESP client for backend commands.
//
// Binaries: <repo>/target/release/libroomcast.so and roomcast-edge (override with
// ROOMCAST_MODULE / ROOMCAST_EDGE). Build them with
// `cargo build --release -p roomcast-module -p roomcast-edge`.

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(here, '../../..');
export const MODULE = process.env.ROOMCAST_MODULE || path.join(REPO, 'target/release/libroomcast.so');
export const EDGE = process.env.ROOMCAST_EDGE || path.join(REPO, 'target/release/roomcast-edge');

const children = new Set();
process.on('exit', () => {
  for (const child of children) {
    try { child.kill('SIGKILL'); } catch { /* gone */ }
  }
});

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `fn` until it returns a truthy value, or throws after `timeoutMs`. */
export async function waitFor(fn, { timeoutMs = 5000, intervalMs = 10, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

/** A free loopback TCP port (bound then released). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function requireBinaries() {
  for (const file of [MODULE, EDGE]) {
    if (!existsSync(file)) {
      throw new Error(`${file} is missing: build it with `
        + '`cargo build --release -p roomcast-module -p roomcast-edge`');
    }
  }
}

function track(child, name) {
  children.add(child);
  child.exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      children.delete(child);
      resolve({ code, signal });
    });
  });
  child.on('error', (err) => { child.spawnError = err; });
  child.log = '';
  const keep = (chunk) => {
    child.log += chunk.toString();
    if (child.log.length > 200_000) child.log = child.log.slice(-100_000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  child.name = name;
  return child;
}

// ------------------------------------------------------------------ RESP

function encodeCommand(args) {
  const parts = [`*${args.length}\r\n`];
  for (const arg of args) {
    const buf = Buffer.isBuffer(arg) ? arg : Buffer.from(String(arg));
    parts.push(`$${buf.length}\r\n`, buf, '\r\n');
  }
  return Buffer.concat(parts.map((p) => (Buffer.isBuffer(p) ? p : Buffer.from(p))));
}

/** Parses one RESP2 value at `pos`; returns [value, next] or null if incomplete. */
function parseResp(buf, pos) {
  if (pos >= buf.length) return null;
  const end = buf.indexOf('\r\n', pos);
  if (end < 0) return null;
  const type = String.fromCharCode(buf[pos]);
  const line = buf.toString('utf8', pos + 1, end);
  const next = end + 2;
  switch (type) {
    case '+': return [line, next];
    case '-': return [new RespError(line), next];
    case ':': return [Number(line), next];
    case '$': {
      const len = Number(line);
      if (len < 0) return [null, next];
      if (buf.length < next + len + 2) return null;
      return [buf.toString('utf8', next, next + len), next + len + 2];
    }
    case '*': {
      const n = Number(line);
      if (n < 0) return [null, next];
      const items = [];
      let p = next;
      for (let i = 0; i < n; i++) {
        const r = parseResp(buf, p);
        if (!r) return null;
        items.push(r[0]);
        p = r[1];
      }
      return [items, p];
    }
    default: throw new Error(`bad RESP type ${type}`);
  }
}

export class RespError extends Error {}

/** A minimal Redis client: `await r.command('RC.PUBLISH', room, data)`. */
export class Resp {
  static connect(port) {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: '127.0.0.1', port }, () => resolve(new Resp(socket)));
      socket.once('error', reject);
    });
  }

  constructor(socket) {
    this.socket = socket;
    this.buf = Buffer.alloc(0);
    this.queue = [];
    socket.setNoDelay(true);
    socket.on('data', (chunk) => {
      this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
      let pos = 0;
      for (;;) {
        const r = parseResp(this.buf, pos);
        if (!r) break;
        pos = r[1];
        const waiter = this.queue.shift();
        if (waiter) waiter(r[0]);
      }
      this.buf = this.buf.subarray(pos);
    });
    const fail = () => {
      for (const waiter of this.queue.splice(0)) waiter(new RespError('connection closed'));
    };
    socket.on('close', fail);
    socket.on('error', fail);
  }

  /** Sends a command; resolves with the reply, rejects with a RespError. */
  command(...args) {
    return new Promise((resolve, reject) => {
      this.queue.push((value) => (value instanceof RespError ? reject(value) : resolve(value)));
      this.socket.write(encodeCommand(args));
    });
  }

  close() {
    this.socket.destroy();
  }
}

// ------------------------------------------------------------------ processes

/**
 * Starts redis-server with the module on a free loopback port.
 * @param {string[]} moduleArgs  e.g. ['history-len', '1000']
 */
export async function startRedis(moduleArgs = ['history-len', '1000']) {
  requireBinaries();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'roomcast-js-'));
  for (let tries = 0; ; tries++) {
    const port = await freePort();
    const child = track(spawn('redis-server', [
      '--port', String(port), '--bind', '127.0.0.1', '--dir', dir,
      '--save', '', '--appendonly', 'no',
      '--loadmodule', MODULE, ...moduleArgs,
    ], { stdio: ['ignore', 'pipe', 'pipe'] }), 'redis');
    try {
      const client = await waitFor(async () => {
        if (child.exitCode !== null || child.spawnError) throw new Error(`redis-server exited:\n${child.log}`);
        try {
          const c = await Resp.connect(port);
          if ((await c.command('PING')) === 'PONG') return c;
          c.close();
        } catch { /* not up yet */ }
        return null;
      }, { timeoutMs: 10000, what: 'redis-server' });
      return {
        port,
        url: `redis://127.0.0.1:${port}/`,
        process: child,
        client,
        command: (...args) => client.command(...args),
        async stop() {
          client.close();
          child.kill('SIGKILL');
          await child.exited;
          rmSync(dir, { recursive: true, force: true });
        },
      };
    } catch (err) {
      child.kill('SIGKILL');
      if (tries >= 2) throw err;
    }
  }
}

/**
 * Starts roomcast-edge (one worker, 1 s lease, anonymous users, no local rate limit).
 * @param {{port: number}} redis
 * @param {string} node  node id base
 * @param {string[]} [extra]  more flags
 */
export async function startEdge(redis, node, extra = []) {
  requireBinaries();
  const child = track(spawn(EDGE, [
    '--redis', `redis://127.0.0.1:${redis.port}/`, '--listen', '127.0.0.1:0',
    '--workers', '1', '--lease-ms', '1000', '--allow-anonymous', '--conn-rate', '0',
    '--node-id', node, ...extra,
  ], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' } }), `edge ${node}`);
  const addr = await waitFor(() => {
    if (child.exitCode !== null || child.spawnError) throw new Error(`roomcast-edge exited:\n${child.log}`);
    const m = /listening on http:\/\/(\S+)/.exec(child.log);
    return m && m[1];
  }, { timeoutMs: 20000, what: 'roomcast-edge to listen' });
  await waitFor(async () => {
    try {
      const res = await fetch(`http://${addr}/readyz`);
      return res.status === 200;
    } catch {
      return false;
    }
  }, { timeoutMs: 20000, what: 'roomcast-edge /readyz' });
  return {
    node,
    addr,
    url: `ws://${addr}/ws`,
    process: child,
    signal(sig) {
      if (child.exitCode === null && child.signalCode === null) child.kill(sig);
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGCONT');
        child.kill('SIGKILL');
      }
      await child.exited;
    },
  };
}

/** Kills every process this harness started (for `after` hooks). */
export async function killAll() {
  const waits = [];
  for (const child of [...children]) {
    try {
      child.kill('SIGCONT');
      child.kill('SIGKILL');
    } catch { /* gone */ }
    waits.push(child.exited);
  }
  await Promise.all(waits);
}

/** Collects a Roomcast client's events for assertions. */
export function record(rc) {
  const log = { messages: [], directs: [], joined: [], left: [], states: [], resyncs: [], ratelimited: [], errors: [], welcomes: [] };
  rc.on('message', (m) => log.messages.push(m));
  rc.on('direct', (m) => log.directs.push(m));
  rc.on('joined', (m) => log.joined.push(m));
  rc.on('left', (m) => log.left.push(m));
  rc.on('state', (s, info) => log.states.push({ state: s, info, at: Date.now() }));
  rc.on('resync', (room, reason) => log.resyncs.push({ room, reason }));
  rc.on('ratelimited', (e) => log.ratelimited.push(e));
  rc.on('error', (e) => log.errors.push(e));
  rc.on('welcome', (w) => log.welcomes.push(w));
  return log;
}

/**
 * Publishes numbered messages 1..count to `room` from the backend, one every
 * `everyMs`; returns {done: Promise, sent: () => number, stop()}.
 */
export function backendPublisher(redis, room, { count, everyMs = 5 }) {
  let n = 0;
  let stopped = false;
  const offsets = [];
  const done = (async () => {
    const c = await Resp.connect(redis.port);
    try {
      while (!stopped && n < count) {
        const next = n + 1;
        const reply = await c.command('RC.PUBLISH', room, JSON.stringify({ n: next }));
        offsets.push(reply[2]);
        n = next;
        if (everyMs > 0) await sleep(everyMs);
      }
    } finally {
      c.close();
    }
    return n;
  })();
  return { done, sent: () => n, offsets, stop() { stopped = true; } };
}

/**
 * Whether Node's global WebSocket completes a handshake with `edge` and gets the
 * welcome: {ok, error}.
 */
export function probeGlobalWebSocket(edge, timeoutMs = 3000) {
  return new Promise((resolve) => {
    if (typeof globalThis.WebSocket !== 'function') {
      resolve({ ok: false, error: 'no global WebSocket (run node with --experimental-websocket)' });
      return;
    }
    let error = 'no welcome';
    const ws = new globalThis.WebSocket(`${edge.url}?user=probe`);
    const timer = setTimeout(() => finish(false), timeoutMs);
    function finish(ok) {
      clearTimeout(timer);
      ws.onmessage = ws.onerror = ws.onclose = null;
      try { ws.close(); } catch { /* ignore */ }
      resolve({ ok, error: ok ? null : error });
    }
    ws.onmessage = (ev) => finish(String(ev.data).includes('"welcome"'));
    ws.onerror = (ev) => { error = ev.message || ev.error?.message || 'error event'; };
    ws.onclose = (ev) => { error += ` (close ${ev.code})`; finish(false); };
  });
}

let chosen;
/**
 * The WebSocket implementation the tests use: Node's global one (run node with
 * --experimental-websocket). The probe fails loudly if it cannot talk to the edge, since
 * strict clients like undici are exactly what the edge must keep working with.
 */
export async function chooseWebSocket(edge) {
  if (!chosen) {
    if (typeof globalThis.WebSocket !== 'function') {
      throw new Error('no global WebSocket: run node with --experimental-websocket');
    }
    const probe = await probeGlobalWebSocket(edge);
    if (!probe.ok) {
      throw new Error(`Node's WebSocket cannot connect to the edge: ${probe.error}`);
    }
    chosen = { WebSocket: globalThis.WebSocket, global: true, probe };
  }
  return chosen;
}

/** Mints an HS256 token with `roomcast-edge token`. */
export async function mintToken(secret, sub, ttlSeconds = 3600, rooms = []) {
  const { execFileSync } = await import('node:child_process');
  const args = ['token', '--secret', secret, '--sub', sub, '--ttl', String(ttlSeconds)];
  for (const r of rooms) args.push('--room', r);
  return execFileSync(EDGE, args, { encoding: 'utf8', timeout: 10000 }).trim();
}

