// roomcast.js — a small, dependency-free client for roomcast edges.
//
// Works in browsers and in Node 20+ (`node --experimental-websocket` gives Node 20 its
// global WebSocket; Node 22+ has it by default) or with any WHATWG-compatible WebSocket
// passed as `options.WebSocket`.
//
// Protocol: JSON text frames, see the roomcast README ("Client protocol") and
// shared/DESIGN.md. This client adds what a browser needs on top of it: request ids and
// promises, automatic reconnect with exponential backoff and full jitter, re-joining
// rooms with the last delivered offset (gapless recovery when the room has history),
// duplicate suppression, and an application-level heartbeat (browsers cannot see
// WebSocket pings).

/** Close codes the edge uses. */
export const CloseCode = Object.freeze({
  NORMAL: 1000,
  ABNORMAL: 1006,
  POLICY: 1008,
  TOO_BIG: 1009,
  INTERNAL: 1011,
  DRAINING: 1012,
});

/** Connection states, as emitted by the `state` event. */
export const State = Object.freeze({
  CONNECTING: 'connecting',
  OPEN: 'open',
  RECONNECTING: 'reconnecting',
  CLOSED: 'closed',
});

/**
 * 1008 reasons after which reconnecting cannot help (the server said "go away").
 * Any other 1008 reason is terminal too (custom kick reasons), except the transient
 * ones in TRANSIENT_POLICY_REASONS.
 */
const TRANSIENT_POLICY_REASONS = ['slow consumer', 'ping timeout', 'too many connections'];

/** An error from the edge (`{"op":"error"}`) or from the client itself. */
export class RoomcastError extends Error {
  /**
   * @param {string} code  `bad_request`, `forbidden`, `not_member`, `rate_limited`,
   *   `too_large`, `unavailable`, `internal` (edge codes), or a client code:
   *   `disconnected`, `timeout`, `closed`, `not_connected`.
   * @param {string} message
   * @param {{retryAfterMs?: number, request?: object}} [extra]
   */
  constructor(code, message, extra = {}) {
    super(message);
    this.name = 'RoomcastError';
    /** @type {string} */
    this.code = code;
    /** @type {number|undefined} milliseconds to wait, for `rate_limited` */
    this.retryAfterMs = extra.retryAfterMs;
    /** @type {object|undefined} the request that failed */
    this.request = extra.request;
  }
}

/**
 * Parses an offset `"<epoch>:<seq>"`.
 * @param {string|null|undefined} offset
 * @returns {{epoch: string, seq: number}|null}
 */
export function parseOffset(offset) {
  if (typeof offset !== 'string') return null;
  const i = offset.lastIndexOf(':');
  if (i <= 0) return null;
  const seq = Number(offset.slice(i + 1));
  if (!Number.isSafeInteger(seq) || seq < 0) return null;
  return { epoch: offset.slice(0, i), seq };
}

/**
 * The reconnect delay for a given attempt: full jitter,
 * `random(0, min(maxMs, initialMs * 2^attempt))`.
 * @param {number} attempt  0 for the first retry
 * @param {number} initialMs
 * @param {number} maxMs
 * @param {() => number} [random]  returns [0, 1)
 * @returns {number}
 */
export function backoffDelay(attempt, initialMs, maxMs, random = Math.random) {
  const cap = Math.min(maxMs, initialMs * 2 ** Math.min(attempt, 52));
  return Math.floor(random() * cap);
}

/** Decodes a JWT's `exp` (seconds) without verifying it; undefined if not a JWT. */
function jwtExpiry(token) {
  try {
    const part = token.split('.')[1];
    if (!part) return undefined;
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const json = typeof atob === 'function'
      ? atob(b64 + '==='.slice((b64.length + 3) % 4))
      : Buffer.from(b64, 'base64').toString('binary');
    const exp = JSON.parse(json).exp;
    return typeof exp === 'number' ? exp : undefined;
  } catch {
    return undefined;
  }
}

function reportListenerError(err) {
  if (typeof globalThis.reportError === 'function') globalThis.reportError(err);
  else setTimeout(() => { throw err; }, 0);
}

/**
 * @typedef {object} RoomcastOptions
 * @property {string|(() => string|Promise<string>)} [token]  JWT sent as `?token=`;
 *   a function is called before every connection attempt (refresh it there).
 * @property {string} [user]  anonymous user name (`?user=`, edges with `--allow-anonymous`)
 * @property {typeof WebSocket} [WebSocket]  WebSocket implementation (default: global)
 * @property {{initialMs?: number, maxMs?: number}} [backoff]  reconnect backoff
 *   (default 500 ms doubling up to 30 s, full jitter)
 * @property {number} [heartbeatMs]  client ping interval; default: the welcome's
 *   `heartbeat_ms`, else 25000. No frame within 2× this closes and reconnects.
 * @property {number} [requestTimeoutMs]  reject a request without answer (default 15000)
 * @property {number} [stableMs]  a connection open this long resets the backoff (default 5000)
 * @property {number} [maxFailedOpens]  attempts in a row that close before a welcome,
 *   before the client has ever been welcomed, after which it gives up (default 3;
 *   a refused token looks like that in browsers)
 * @property {number} [connectTimeoutMs]  an attempt without welcome is abandoned after
 *   this long (default 10000)
 */

/**
 * A roomcast connection that survives disconnects.
 *
 * @example
 * const rc = new Roomcast('ws://localhost:8080/ws', { user: 'ann' });
 * rc.on('message', (m) => console.log(m.room, m.from, m.data));
 * await rc.connect();
 * await rc.join('lobby');
 * await rc.publish('lobby', { text: 'hi' });
 */
export class Roomcast {
  /**
   * @param {string|string[]|((attempt: number) => string|Promise<string>)} url
   *   `ws://host:port/ws`; a list is rotated on every reconnect; a function gets the
   *   number of the connection attempt (0, 1, …) and returns the URL.
   * @param {RoomcastOptions} [options]
   */
  constructor(url, options = {}) {
    if (Array.isArray(url)) {
      if (url.length === 0) throw new TypeError('Roomcast: empty URL list');
      const list = url.slice();
      this._pickUrl = (n) => list[n % list.length];
    } else if (typeof url === 'function') {
      this._pickUrl = url;
    } else if (typeof url === 'string') {
      this._pickUrl = () => url;
    } else {
      throw new TypeError('Roomcast: url must be a string, a list, or a function');
    }
    this.options = options;
    this._WebSocket = options.WebSocket || globalThis.WebSocket;
    if (typeof this._WebSocket !== 'function') {
      throw new TypeError('Roomcast: no WebSocket implementation (pass options.WebSocket; '
        + 'Node 20 needs --experimental-websocket)');
    }
    this._backoff = {
      initialMs: options.backoff?.initialMs ?? 500,
      maxMs: options.backoff?.maxMs ?? 30000,
    };
    this._requestTimeoutMs = options.requestTimeoutMs ?? 15000;
    this._stableMs = options.stableMs ?? 5000;
    this._maxFailedOpens = options.maxFailedOpens ?? 3;
    this._connectTimeoutMs = options.connectTimeoutMs ?? 10000;

    /** @type {string} current state: connecting, open, reconnecting, closed */
    this.state = State.CLOSED;
    /** @type {{code: number, reason: string}|null} why the client is closed */
    this.closeInfo = null;
    /** @type {object|null} the last welcome (conn, user, node, heartbeat_ms) */
    this.welcome = null;
    /** @type {string|null} URL of the current / last attempt */
    this.url = null;

    this._listeners = new Map();
    this._ws = null;
    this._nextId = 1;
    this._pending = new Map(); // id -> {resolve, reject, timer, msg}
    // room -> {lastOffset: string|null, presence: bool, waiters: [{resolve, reject}], inFlight: bool}
    this._rooms = new Map();
    this._attempt = 0; // consecutive failures (backoff exponent)
    this._connectCount = 0; // connection attempts made (URL rotation)
    this._failedOpens = 0; // attempts in a row that ended before a welcome
    this._everWelcomed = false;
    this._wanted = false; // the user wants to be connected
    this._timers = new Set();
    this._heartbeat = null;
    this._lastRx = 0;
    this._openWaiters = [];
    this._generation = 0; // bumped by close(): stale async opens give up
  }

  // ---------------------------------------------------------------- events

  /**
   * Subscribes to an event: `message` ({room, from, data, offset}), `direct`
   * ({from, data}), `joined` / `left` ({room, user}), `welcome` (the welcome),
   * `state` (state, {code, reason}?), `resync` (room, reason, ack), `ratelimited`
   * ({retryAfterMs, code, message, request}), `error` (RoomcastError).
   * @param {string} event
   * @param {Function} fn
   * @returns {() => void} unsubscribes
   */
  on(event, fn) {
    let set = this._listeners.get(event);
    if (!set) this._listeners.set(event, (set = new Set()));
    set.add(fn);
    return () => this.off(event, fn);
  }

  /**
   * Unsubscribes.
   * @param {string} event
   * @param {Function} fn
   */
  off(event, fn) {
    this._listeners.get(event)?.delete(fn);
  }

  _emit(event, ...args) {
    const set = this._listeners.get(event);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(...args);
      } catch (err) {
        reportListenerError(err);
      }
    }
  }

  _setState(state, info) {
    if (this.state === state) return;
    this.state = state;
    this._emit('state', state, info);
  }

  // ---------------------------------------------------------------- lifecycle

  /**
   * Starts connecting (and keeps reconnecting until {@link Roomcast#close} or a
   * terminal close). Resolves with the welcome once open; rejects if the client
   * closes for good first.
   * @returns {Promise<object>}
   */
  connect() {
    const promise = new Promise((resolve, reject) => {
      if (this.state === State.OPEN && this.welcome) resolve(this.welcome);
      else this._openWaiters.push({ resolve, reject });
    });
    if (!this._wanted) {
      this._wanted = true;
      this.closeInfo = null;
      this._attempt = 0;
      this._failedOpens = 0;
      this._everWelcomed = false;
      this._setState(State.CONNECTING);
      this._open();
    }
    return promise;
  }

  /**
   * Closes the connection and stops reconnecting. Pending requests reject with
   * `closed`; room subscriptions are kept, so a later `connect()` re-joins them.
   */
  close() {
    this._shutdown(CloseCode.NORMAL, 'client closed');
  }

  async _open() {
    const n = this._connectCount++;
    const generation = this._generation;
    const stale = () => !this._wanted || generation !== this._generation;
    let url;
    try {
      url = await this._pickUrl(n);
      if (stale()) return;
      url = new URL(url);
      let token = this.options.token;
      if (typeof token === 'function') token = await token();
      if (stale()) return;
      if (token) {
        const exp = jwtExpiry(token);
        if (exp !== undefined && exp * 1000 <= Date.now()) {
          this._shutdown(CloseCode.POLICY, 'token expired');
          return;
        }
        url.searchParams.set('token', token);
      } else if (this.options.user) {
        url.searchParams.set('user', this.options.user);
      }
    } catch (err) {
      this._emit('error', new RoomcastError('internal', `cannot build the URL: ${err.message}`));
      this._reconnect(CloseCode.ABNORMAL, 'bad url');
      return;
    }
    this.url = url.toString();
    let ws;
    try {
      ws = new this._WebSocket(this.url);
    } catch (err) {
      this._emit('error', new RoomcastError('internal', `cannot open ${this.url}: ${err.message}`));
      this._reconnect(CloseCode.ABNORMAL, 'cannot open');
      return;
    }
    this._ws = ws;
    const conn = { ws, welcomed: false, done: false };
    this._conn = conn;
    this._lastRx = Date.now();
    const connectTimer = this._timer(() => {
      if (!conn.welcomed && !conn.done) this._lost(conn, CloseCode.ABNORMAL, 'connect timeout');
    }, this._connectTimeoutMs);
    ws.onmessage = (ev) => {
      if (conn.done) return;
      this._lastRx = Date.now();
      this._onFrame(conn, ev.data);
    };
    ws.onclose = (ev) => {
      this._clearTimer(connectTimer);
      this._lost(conn, ev.code, ev.reason || '');
    };
    ws.onerror = (ev) => {
      // The connection failed. A close event (with its code) normally follows, but not
      // every implementation sends one when the handshake fails: wait a little for it.
      const reason = conn.welcomed ? 'connection error' : (ev?.message || 'connection failed');
      this._timer(() => this._lost(conn, CloseCode.ABNORMAL, reason), 250);
    };
  }

  /** The connection `conn` is over (close event, heartbeat, timeout). */
  _lost(conn, code, reason) {
    if (conn.done) return;
    conn.done = true;
    if (this._conn === conn) {
      this._conn = null;
      this._ws = null;
    }
    this._stopHeartbeat();
    for (const r of this._rooms.values()) r.joined = false;
    try {
      conn.ws.onmessage = conn.ws.onclose = conn.ws.onerror = null;
      if (conn.ws.readyState === 0 || conn.ws.readyState === 1) conn.ws.close();
    } catch { /* already closing */ }
    this._rejectPending('disconnected', `disconnected (${code}${reason ? ` ${reason}` : ''})`);
    if (!this._wanted) return;

    if (conn.welcomed) {
      this._failedOpens = 0;
    } else {
      this._failedOpens++;
    }
    if (code === CloseCode.POLICY && !TRANSIENT_POLICY_REASONS.some((r) => reason.startsWith(r))) {
      // banned, token expired, kicked (or a custom kick reason): do not loop.
      this._shutdown(code, reason || 'policy violation');
      return;
    }
    if (!conn.welcomed && !this._everWelcomed && this._failedOpens >= this._maxFailedOpens) {
      this._shutdown(code, reason
        || `connection refused ${this._failedOpens} times before a welcome (bad token or URL?)`);
      return;
    }
    if (code === CloseCode.DRAINING) {
      // The server is draining: go elsewhere at once.
      this._setState(State.RECONNECTING, { code, reason });
      this._open();
      return;
    }
    this._reconnect(code, reason);
  }

  _reconnect(code, reason) {
    if (!this._wanted) return;
    this._setState(State.RECONNECTING, { code, reason });
    const delay = backoffDelay(this._attempt, this._backoff.initialMs, this._backoff.maxMs);
    this._attempt++;
    this._timer(() => {
      if (this._wanted && !this._conn) this._open();
    }, delay);
  }

  _shutdown(code, reason) {
    this._wanted = false;
    this._generation++;
    for (const t of this._timers) clearTimeout(t);
    this._timers.clear();
    this._stopHeartbeat();
    const conn = this._conn;
    this._conn = null;
    this._ws = null;
    if (conn && !conn.done) {
      conn.done = true;
      try {
        conn.ws.onmessage = conn.ws.onclose = conn.ws.onerror = null;
        conn.ws.close(CloseCode.NORMAL);
      } catch { /* ignore */ }
    }
    this._rejectPending('closed', `closed: ${reason}`);
    this.closeInfo = { code, reason };
    for (const room of this._rooms.values()) {
      for (const w of room.waiters.splice(0)) w.reject(new RoomcastError('closed', `closed: ${reason}`));
      room.inFlight = false;
    }
    for (const w of this._openWaiters.splice(0)) w.reject(new RoomcastError('closed', `closed: ${reason}`));
    this._setState(State.CLOSED, { code, reason });
  }

  _timer(fn, ms) {
    const t = setTimeout(() => {
      this._timers.delete(t);
      fn();
    }, ms);
    this._timers.add(t);
    return t;
  }

  _clearTimer(t) {
    clearTimeout(t);
    this._timers.delete(t);
  }

  // ---------------------------------------------------------------- heartbeat

  _startHeartbeat(conn, serverMs) {
    this._stopHeartbeat();
    const every = Math.max(50, this.options.heartbeatMs ?? serverMs ?? 25000);
    const tick = Math.max(25, Math.floor(every / 4));
    let lastPing = Date.now();
    this._heartbeat = setInterval(() => {
      if (conn.done) return;
      const now = Date.now();
      if (now - this._lastRx > 2 * every) {
        this._lost(conn, CloseCode.ABNORMAL, 'heartbeat timeout');
        return;
      }
      if (now - lastPing >= every) {
        lastPing = now;
        this._sendRaw(conn, { op: 'ping' });
      }
    }, tick);
  }

  _stopHeartbeat() {
    if (this._heartbeat) clearInterval(this._heartbeat);
    this._heartbeat = null;
  }

  // ---------------------------------------------------------------- frames

  _sendRaw(conn, msg) {
    try {
      conn.ws.send(JSON.stringify(msg));
      return true;
    } catch {
      return false;
    }
  }

  _onFrame(conn, data) {
    let msg;
    try {
      msg = JSON.parse(typeof data === 'string' ? data : new TextDecoder().decode(data));
    } catch {
      this._emit('error', new RoomcastError('bad_request', 'the server sent a malformed frame'));
      return;
    }
    switch (msg.op) {
      case 'welcome': return this._onWelcome(conn, msg);
      case 'message': return this._onMessage(msg);
      case 'direct': return this._emit('direct', { from: msg.from, data: msg.data });
      case 'joined':
      case 'left': return this._emit(msg.op, { room: this._roomFor(msg.room), user: msg.user });
      case 'ack': return this._onAck(msg);
      case 'error': return this._onError(msg);
      case 'pong': return undefined;
      default: return undefined; // newer server ops are ignored
    }
  }

  _onWelcome(conn, msg) {
    conn.welcomed = true;
    this._everWelcomed = true;
    this._failedOpens = 0;
    this.welcome = msg;
    const stableTimer = this._timer(() => {
      if (!conn.done) this._attempt = 0;
    }, this._stableMs);
    void stableTimer;
    this._startHeartbeat(conn, msg.heartbeat_ms);
    this._setState(State.OPEN);
    this._emit('welcome', msg);
    for (const w of this._openWaiters.splice(0)) w.resolve(msg);
    for (const room of this._rooms.keys()) this._sendJoin(room);
  }

  /**
   * Records `offset` as delivered for `room`. Returns false for a duplicate (seq not
   * above the last delivered one in the same epoch), else the previous offset's epoch
   * if it differs (history was lost), else true.
   */
  _advance(room, offset) {
    const r = this._rooms.get(room);
    if (!r) return true;
    const next = parseOffset(offset);
    if (!next) return true;
    const last = parseOffset(r.lastOffset);
    if (last && last.epoch === next.epoch && next.seq <= last.seq) return false;
    r.lastOffset = offset;
    if (last && last.epoch !== next.epoch) {
      r.own.clear();
      return { epochChanged: last.epoch };
    }
    this._consumeOwn(r, next);
    return true;
  }

  /** Skips over this connection's own publishes that directly follow the last offset. */
  _consumeOwn(r, pos) {
    if (r.own.size === 0) return;
    let seq = pos.seq;
    while (r.own.delete(seq + 1)) seq++;
    if (seq !== pos.seq) r.lastOffset = `${pos.epoch}:${seq}`;
    for (const s of r.own) if (s <= seq) r.own.delete(s);
  }

  /**
   * The joined room a server frame is about: the server names rooms without their
   * partition tag, while an app may have joined `{tag}room`.
   */
  _roomFor(name) {
    if (typeof name !== 'string' || this._rooms.has(name)) return name;
    for (const room of this._rooms.keys()) {
      if (room.startsWith('{') && room.slice(room.indexOf('}') + 1) === name) return room;
    }
    return name;
  }

  _onMessage(msg) {
    const room = this._roomFor(msg.room);
    if (!this._rooms.has(room)) return; // left already (a straggler)
    const previous = this._rooms.get(room).lastOffset;
    const advanced = this._advance(room, msg.offset);
    if (!advanced) return; // already delivered
    if (advanced.epochChanged) {
      this._emit('resync', room, 'epoch changed', { from: previous, offset: msg.offset });
    }
    this._emit('message', { room, from: msg.from ?? null, data: msg.data, offset: msg.offset ?? null });
  }

  _onAck(msg) {
    const p = this._pending.get(msg.id);
    if (!p) return;
    this._pending.delete(msg.id);
    clearTimeout(p.timer);
    p.resolve(msg);
  }

  _onError(msg) {
    const err = new RoomcastError(msg.code || 'internal', msg.message || 'error', {
      retryAfterMs: msg.retry_after_ms,
    });
    const p = msg.id !== undefined ? this._pending.get(msg.id) : undefined;
    if (p) {
      this._pending.delete(msg.id);
      clearTimeout(p.timer);
      err.request = p.msg;
    }
    if (err.code === 'rate_limited') {
      this._emit('ratelimited', {
        retryAfterMs: err.retryAfterMs, code: err.code, message: err.message, request: err.request,
      });
    }
    if (p) p.reject(err);
    else this._emit('error', err);
  }

  _rejectPending(code, message) {
    const pending = [...this._pending.values()];
    this._pending.clear();
    for (const p of pending) {
      clearTimeout(p.timer);
      p.reject(new RoomcastError(code, message, { request: p.msg }));
    }
  }

  /** Sends a request on the open connection; resolves with the ack. */
  _request(msg) {
    return new Promise((resolve, reject) => {
      const conn = this._conn;
      if (!conn || !conn.welcomed || this.state !== State.OPEN) {
        reject(new RoomcastError('not_connected', `not connected (${this.state})`, { request: msg }));
        return;
      }
      const id = this._nextId++;
      const full = { ...msg, id };
      const timer = setTimeout(() => {
        if (this._pending.delete(id)) {
          reject(new RoomcastError('timeout', `no answer to ${msg.op} within ${this._requestTimeoutMs} ms`, { request: full }));
        }
      }, this._requestTimeoutMs);
      this._pending.set(id, { resolve, reject, timer, msg: full });
      if (!this._sendRaw(conn, full)) {
        this._pending.delete(id);
        clearTimeout(timer);
        reject(new RoomcastError('disconnected', 'the connection is closing', { request: full }));
      }
    });
  }

  // ---------------------------------------------------------------- rooms

  /**
   * Joins a room, now or as soon as the connection opens, and keeps it joined across
   * reconnects (re-joining with the last delivered offset, so that with room history
   * nothing is lost or repeated; otherwise a `resync` event tells the room lost
   * messages). Resolves with the ack (`offset`: the room's position at the join; with
   * `presence`, `users` too) once joined; survives reconnects; rejects on a server
   * error (`forbidden`, `bad_request`, …) or when the client closes for good.
   * @param {string} room
   * @param {{presence?: boolean, since?: string}} [opts]  `presence`: also fetch the
   *   room's users into `ack.users`; `since`: an offset to recover from (e.g. stored
   *   by the app).
   * @returns {Promise<{offset: string|null, recovered?: boolean, users?: string[]}>}
   */
  join(room, opts = {}) {
    return new Promise((resolve, reject) => {
      let r = this._rooms.get(room);
      if (!r) {
        r = { lastOffset: opts.since ?? null, presence: !!opts.presence, waiters: [], inFlight: false, joined: false, own: new Set() };
        this._rooms.set(room, r);
      } else if (opts.presence) {
        r.presence = true;
      }
      if (r.joined && !r.inFlight && !opts.presence) {
        resolve({ op: 'ack', offset: r.lastOffset });
        return;
      }
      r.waiters.push({ resolve, reject, presence: !!opts.presence });
      if (this.state === State.OPEN && !r.inFlight) this._sendJoin(room);
    });
  }

  async _sendJoin(room) {
    const r = this._rooms.get(room);
    if (!r) return;
    const conn = this._conn;
    r.inFlight = true;
    r.joined = false;
    const since = r.lastOffset;
    const msg = { op: 'join', room };
    if (since) msg.since = since;
    let ack;
    try {
      ack = await this._request(msg);
    } catch (err) {
      if (this._rooms.get(room) !== r) return;
      r.inFlight = false;
      if (err.code === 'disconnected' || err.code === 'not_connected' || err.code === 'closed') {
        return; // re-joined on the next welcome (or rejected by close())
      }
      if (err.code === 'unavailable' || err.code === 'timeout' || err.code === 'rate_limited') {
        // Transient: try again on this connection a little later.
        const wait = err.retryAfterMs ?? Math.max(this._backoff.initialMs, 250);
        this._timer(() => {
          if (this._rooms.get(room) === r && !r.inFlight && this._conn === conn && this.state === State.OPEN) this._sendJoin(room);
        }, wait);
        if (r.waiters.length === 0) this._emit('error', err);
        return;
      }
      // forbidden, bad_request, …: the room cannot be joined.
      this._rooms.delete(room);
      const waiters = r.waiters.splice(0);
      if (waiters.length) for (const w of waiters) w.reject(err);
      else this._emit('error', err);
      return;
    }
    if (this._rooms.get(room) !== r || conn !== this._conn) return;
    r.inFlight = false;
    r.joined = true;
    if (since && ack.recovered === false) {
      r.lastOffset = ack.offset ?? null;
      r.own.clear();
      this._emit('resync', room, ack.reason || (ack.offset ? 'history lost or too old' : 'no history'), ack);
    } else if (ack.offset) {
      // Keep the newest of what was delivered and the cut.
      const cut = parseOffset(ack.offset);
      const last = parseOffset(r.lastOffset);
      if (!last || !cut || last.epoch !== cut.epoch || cut.seq > last.seq) {
        r.lastOffset = ack.offset;
        r.own.clear();
      }
    }
    const waiters = r.waiters.splice(0);
    if (waiters.length === 0) return;
    let result = { ...ack };
    delete result.id;
    delete result.op;
    if (waiters.some((w) => w.presence)) {
      try {
        result.users = await this.presence(room);
      } catch (err) {
        for (const w of waiters) w.reject(err);
        return;
      }
    }
    for (const w of waiters) w.resolve(result);
  }

  /**
   * Leaves a room (and stops re-joining it).
   * @param {string} room
   * @returns {Promise<void>}
   */
  async leave(room) {
    const r = this._rooms.get(room);
    this._rooms.delete(room);
    if (r) for (const w of r.waiters.splice(0)) w.reject(new RoomcastError('closed', `left ${room}`));
    if (this.state !== State.OPEN) return;
    try {
      await this._request({ op: 'leave', room });
    } catch (err) {
      if (err.code !== 'not_member' && err.code !== 'disconnected') throw err;
    }
  }

  /**
   * The rooms this client is in (or will re-join).
   * @returns {string[]}
   */
  rooms() {
    return [...this._rooms.keys()];
  }

  /**
   * The last offset delivered for a room (store it to recover later with
   * `join(room, {since})`).
   * @param {string} room
   * @returns {string|null}
   */
  lastOffset(room) {
    return this._rooms.get(room)?.lastOffset ?? null;
  }

  // ---------------------------------------------------------------- requests

  /**
   * Publishes `data` (any JSON value) to a room this client has joined. The publishing
   * connection does not receive its own message; the ack confirms it.
   * @param {string} room
   * @param {*} data
   * @returns {Promise<{offset: string|null}>}  rejects with a RoomcastError
   *   (`rate_limited` with `retryAfterMs`, `not_member`, `too_large`, `disconnected`, …)
   */
  async publish(room, data) {
    const ack = await this._request({ op: 'publish', room, data });
    const offset = ack.offset ?? null;
    // Our own message will not come back; count it as delivered.
    this._advanceOwn(room, offset);
    return { offset };
  }

  _advanceOwn(room, offset) {
    const r = this._rooms.get(room);
    const next = parseOffset(offset);
    if (!r || !next) return;
    const last = parseOffset(r.lastOffset);
    if (!last && r.joined && next.seq === 1) {
      // The room had no history when we joined: this is its first message.
      r.lastOffset = offset;
      this._consumeOwn(r, next);
      return;
    }
    if (!last || last.epoch !== next.epoch || next.seq <= last.seq) return;
    // Messages before it may still be on their way: remember it until they are in.
    r.own.add(next.seq);
    this._consumeOwn(r, last);
  }

  /**
   * Sends `data` directly to every connection of `user`.
   * @param {string} user
   * @param {*} data
   * @returns {Promise<void>}
   */
  async send(user, data) {
    await this._request({ op: 'send', user, data });
  }

  /**
   * The distinct users in a room.
   * @param {string} room
   * @returns {Promise<string[]>}
   */
  async presence(room) {
    const ack = await this._request({ op: 'presence', room });
    return ack.users || [];
  }

  /**
   * Retained messages of a room (needs room history on the server): after `since`, or
   * the newest ones. Page forward with `since` = the last offset until `complete`.
   * @param {string} room
   * @param {{since?: string, limit?: number}} [opts]
   * @returns {Promise<{messages: {room: string, from: string|null, data: *, offset: string}[],
   *   offset: string|null, complete: boolean}>}
   */
  async history(room, opts = {}) {
    const msg = { op: 'history', room };
    if (opts.since != null) msg.since = opts.since;
    if (opts.limit != null) msg.limit = opts.limit;
    const ack = await this._request(msg);
    return {
      messages: (ack.messages || []).map((m) => ({
        room: m.room ?? room, from: m.from ?? null, data: m.data, offset: m.offset ?? null,
      })),
      offset: ack.offset ?? null,
      complete: !!ack.complete,
      recovered: ack.recovered,
    };
  }
}

export default Roomcast;
