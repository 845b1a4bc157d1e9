// roomcast demo chat page: one Roomcast client, a few rooms, a message list, a live
// presence list and a connection indicator. Served by `roomcast-edge --demo` at /demo/.
//
// URL parameters:
//   ?user=NAME               connect at once as NAME (anonymous; the edge needs
//                            --allow-anonymous). Without it the page asks for a name.
//   ?token=JWT               connect with a token instead (edges with --jwt-secret).
//   ?room=NAME               first room to join (default: lobby)
//   ?edges=h1:p1,h2:p2       edges to use, in order; the client rotates through them when
//                            it reconnects. Default: the edge that served this page.
//
// Stable element ids (used by tests): #status (data-state = the client's state),
// #messages (data-room, data-duplicates; one <li> per message with data-from,
// data-offset), #presence (one <li> per user, data-user), #rooms (data-room), #input,
// #send, #room, #join, #name.

import { Roomcast } from './roomcast.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const HISTORY_ON_JOIN = 50;

/** Per-room state. */
class Room {
  constructor(name) {
    this.name = name;
    /** Rendered entries, in display order: {kind:'msg'|'note', from, data, offset, …}. */
    this.entries = [];
    /** Offsets already shown (replays and history never show a message twice). */
    this.seen = new Set();
    /** Users present. */
    this.presence = new Set();
    this.unread = 0;
  }
}

const app = {
  client: null,
  user: null,
  /** room name → Room, in join order. */
  rooms: new Map(),
  current: null,
  state: 'closed',
  duplicates: 0,
};
// Handy for poking at the page from the console.
window.roomcastDemo = app;

// ---------------------------------------------------------------- helpers

function randomName() {
  const animals = ['otter', 'heron', 'lynx', 'panda', 'koala', 'gecko', 'puffin', 'yak'];
  const animal = animals[Math.floor(Math.random() * animals.length)];
  return `${animal}-${Math.floor(100 + Math.random() * 900)}`;
}

/** Checks a user or room name the way the server does; returns an error text or ''. */
function nameProblem(name) {
  if (!name) return 'empty';
  if (new TextEncoder().encode(name).length > 256) return 'longer than 256 bytes';
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(name)) return 'has control characters';
  if (name.startsWith('{')) return 'starts with {';
  return '';
}

/** Parses `<epoch>:<seq>`; null if it is not an offset. */
function parseOffset(offset) {
  if (typeof offset !== 'string') return null;
  const i = offset.lastIndexOf(':');
  if (i <= 0) return null;
  const seq = Number(offset.slice(i + 1));
  return Number.isSafeInteger(seq) ? { epoch: offset.slice(0, i), seq } : null;
}

/** True if offset `a` sorts before `b` (same epoch only; otherwise unknown → false). */
function offsetBefore(a, b) {
  const x = parseOffset(a);
  const y = parseOffset(b);
  return !!(x && y && x.epoch === y.epoch && x.seq < y.seq);
}

/** The text of a message payload: `{text}` objects, plain strings, or JSON. */
function payloadText(data) {
  if (typeof data === 'string') return data;
  if (data && typeof data === 'object' && typeof data.text === 'string') return data.text;
  return JSON.stringify(data);
}

function timeText(ts) {
  const d = ts ? new Date(ts) : new Date();
  return Number.isNaN(d.getTime()) ? '' : d.toTimeString().slice(0, 5);
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') node.className = v;
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const child of children) {
    if (child != null) node.append(child);
  }
  return node;
}

function room(name) {
  let r = app.rooms.get(name);
  if (!r) {
    r = new Room(name);
    app.rooms.set(name, r);
  }
  return r;
}

// ---------------------------------------------------------------- rendering

const STATUS_TEXT = {
  connecting: 'connecting…',
  open: 'connected',
  reconnecting: 'reconnecting…',
  closed: 'offline',
};

function renderStatus() {
  const status = $('status');
  status.dataset.state = app.state;
  status.querySelector('.label').textContent = STATUS_TEXT[app.state] ?? app.state;
  $('send').disabled = app.state !== 'open' || !app.current;
  const node = app.client?.welcome?.node;
  $('edge').textContent = app.state === 'open' && node ? `via edge ${node}` : '';
}

function entryNode(entry) {
  if (entry.kind === 'note') {
    return el('li', { class: 'note' }, entry.text);
  }
  const classes = ['msg'];
  if (entry.mine) classes.push('mine');
  if (entry.pending) classes.push('pending');
  if (entry.failed) classes.push('failed');
  const li = el('li', { class: classes.join(' '), dataset: { from: entry.from ?? '' } },
    el('span', { class: 'time' }, timeText(entry.ts)),
    el('span', { class: 'from' }, entry.from ?? '?'),
    el('span', { class: 'text' }, payloadText(entry.data)),
  );
  if (entry.offset != null) li.dataset.offset = entry.offset;
  if (entry.failed) li.title = entry.failed;
  entry.node = li;
  return li;
}

function renderMessages() {
  const list = $('messages');
  const r = app.current && app.rooms.get(app.current);
  list.dataset.room = app.current ?? '';
  list.replaceChildren(...(r ? r.entries.map(entryNode) : []));
  list.scrollTop = list.scrollHeight;
}

function renderRooms() {
  const list = $('rooms');
  list.replaceChildren(...[...app.rooms.values()].map((r) => el('li',
    {
      class: r.name === app.current ? 'current' : '',
      dataset: { room: r.name },
      title: r.name,
      onclick: () => switchRoom(r.name),
    },
    el('span', { class: 'name' }, `# ${r.name}`),
    r.unread ? el('span', { class: 'unread' }, String(r.unread)) : null,
    el('button', {
      class: 'leave',
      title: `leave ${r.name}`,
      'aria-label': `leave ${r.name}`,
      onclick: (e) => { e.stopPropagation(); leaveRoom(r.name); },
    }, '×'),
  )));
  $('room-title').textContent = app.current ? `# ${app.current}` : 'no room';
}

function renderPresence() {
  const r = app.current && app.rooms.get(app.current);
  const users = r ? [...r.presence].sort() : [];
  $('presence').replaceChildren(...users.map((u) => el('li',
    { class: u === app.user ? 'self' : '', dataset: { user: u } },
    u === app.user ? `${u} (you)` : u)));
  $('presence-count').textContent = r ? `(${users.length})` : '';
}

/** Adds an entry to a room, in offset order, and shows it if the room is current. */
function addEntry(name, entry) {
  const r = room(name);
  let at = r.entries.length;
  if (entry.offset != null) {
    // History and replays may arrive after newer live messages: keep offset order.
    while (at > 0 && offsetBefore(entry.offset, r.entries[at - 1].offset)) at -= 1;
  }
  r.entries.splice(at, 0, entry);
  if (r.entries.length > 1000) r.entries.splice(0, r.entries.length - 1000);
  if (name !== app.current) {
    if (entry.kind === 'msg' && !entry.mine) {
      r.unread += 1;
      renderRooms();
    }
    return;
  }
  const list = $('messages');
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  const node = entryNode(entry);
  const next = r.entries[at + 1]?.node;
  if (next && next.parentNode === list) list.insertBefore(node, next);
  else list.append(node);
  if (atBottom || entry.mine) list.scrollTop = list.scrollHeight;
}

function note(name, text) {
  if (name) addEntry(name, { kind: 'note', text });
}

/**
 * A message: from the client (`live`: live or replayed after a reconnect) or from a
 * history request (`history`, which may overlap what arrived live meanwhile).
 */
function receive(msg, source = 'live') {
  if (!msg || !app.rooms.has(msg.room)) return;
  const r = app.rooms.get(msg.room);
  if (msg.offset != null) {
    if (r.seen.has(msg.offset)) {
      if (source === 'live') {
        // The client promises no duplicates: count any, so tests can see them.
        app.duplicates += 1;
        $('messages').dataset.duplicates = String(app.duplicates);
      }
      return;
    }
    r.seen.add(msg.offset);
  }
  addEntry(msg.room, {
    kind: 'msg',
    from: msg.from,
    data: msg.data,
    offset: msg.offset ?? null,
    mine: msg.from === app.user,
    ts: msg.data && typeof msg.data === 'object' ? msg.data.ts : undefined,
  });
}

// ---------------------------------------------------------------- actions

function switchRoom(name) {
  if (!app.rooms.has(name)) return;
  app.current = name;
  app.rooms.get(name).unread = 0;
  renderRooms();
  renderMessages();
  renderPresence();
  renderStatus();
  $('input').focus();
}

function setPresence(name, users) {
  const r = app.rooms.get(name);
  if (!r || !Array.isArray(users)) return;
  r.presence = new Set(users);
  r.presence.add(app.user);
  if (name === app.current) renderPresence();
}

async function refreshPresence(name) {
  try {
    setPresence(name, await app.client.presence(name));
  } catch (e) {
    console.warn('presence', name, e);
  }
}

async function loadHistory(name) {
  let reply;
  try {
    reply = await app.client.history(name, { limit: HISTORY_ON_JOIN });
  } catch (e) {
    // History is off on this server (history-len 0) or unsupported: live only.
    console.info('history', name, e?.message ?? e);
    return;
  }
  for (const m of reply?.messages ?? []) receive({ ...m, room: name }, 'history');
}

async function joinRoom(name) {
  const problem = nameProblem(name);
  if (problem) {
    note(app.current, `cannot join "${name}": the name ${problem}`);
    return;
  }
  const fresh = !app.rooms.has(name);
  room(name).presence.add(app.user);
  switchRoom(name);
  if (!fresh) return;
  let ack;
  try {
    // Resolves once joined (after the connection opens), with the room's users.
    ack = await app.client.join(name, { presence: true });
  } catch (e) {
    note(name, `could not join: ${e?.message ?? e}`);
    return;
  }
  setPresence(name, ack?.users);
  // Recent history, once; after a reconnect the client replays what was missed itself.
  await loadHistory(name);
}

async function leaveRoom(name) {
  app.rooms.delete(name);
  if (app.current === name) app.current = app.rooms.keys().next().value ?? null;
  renderRooms();
  renderMessages();
  renderPresence();
  renderStatus();
  try {
    await app.client.leave(name);
  } catch (e) {
    console.warn('leave', name, e);
  }
}

async function sendMessage() {
  const input = $('input');
  const text = input.value.trim();
  const name = app.current;
  if (!text || !name || app.state !== 'open') return;
  input.value = '';
  const data = { text, ts: Date.now() };
  const entry = { kind: 'msg', from: app.user, data, offset: null, mine: true, pending: true };
  addEntry(name, entry);
  try {
    const offset = await app.client.publish(name, data);
    entry.pending = false;
    entry.node?.classList.remove('pending');
    const off = offset && typeof offset === 'object' ? offset.offset : offset;
    if (off != null) {
      entry.offset = off;
      entry.node && (entry.node.dataset.offset = off);
      app.rooms.get(name)?.seen.add(off);
    }
  } catch (e) {
    entry.pending = false;
    entry.failed = e?.message ?? String(e);
    if (entry.node) {
      entry.node.classList.remove('pending');
      entry.node.classList.add('failed');
      entry.node.title = entry.failed;
      entry.node.querySelector('.text').textContent = `${text} — not sent: ${entry.failed}`;
    }
  }
}

// ---------------------------------------------------------------- connection

function edgeUrls() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const edges = (params.get('edges') ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  const hosts = edges.length ? edges : [location.host];
  return hosts.map((h) => `${scheme}//${h}/ws`);
}

function start(user) {
  app.user = user;
  $('me').textContent = user;
  $('me').hidden = false;
  $('login').hidden = true;
  $('side').hidden = false;
  $('chat').hidden = false;
  document.title = `${user} · roomcast demo`;
  if (!params.get('token') && params.get('user') !== user) {
    params.set('user', user);
    history.replaceState(null, '', `${location.pathname}?${params}`);
  }

  const urls = edgeUrls();
  const token = params.get('token');
  const client = new Roomcast(urls.length === 1 ? urls[0] : urls, token ? { token } : { user });
  app.client = client;
  let wasOpen = false;

  client.on('state', (state) => {
    const previous = app.state;
    app.state = state;
    renderStatus();
    if (state === 'reconnecting' && previous === 'open') {
      note(app.current, 'connection lost, reconnecting…');
    }
    if (state === 'open') {
      if (wasOpen) {
        note(app.current, 'reconnected');
        // joined/left events may have been missed while away.
        for (const name of app.rooms.keys()) refreshPresence(name);
      }
      wasOpen = true;
    }
  });
  client.on('message', receive);
  client.on('joined', ({ room: name, user: who }) => {
    const r = app.rooms.get(name);
    if (!r || r.presence.has(who)) return;
    r.presence.add(who);
    if (name === app.current) renderPresence();
  });
  client.on('left', ({ room: name, user: who }) => {
    const r = app.rooms.get(name);
    if (!r || who === app.user) return;
    r.presence.delete(who);
    if (name === app.current) renderPresence();
  });
  client.on('welcome', (welcome) => {
    // With ?token= the server says who we are.
    if (welcome?.user && welcome.user !== app.user) {
      app.user = welcome.user;
      $('me').textContent = welcome.user;
      for (const r of app.rooms.values()) r.presence.add(welcome.user);
      renderPresence();
    }
    renderStatus();
  });
  client.on('resync', (name, reason) => {
    // The server could not replay everything missed (history off, trimmed or lost).
    if (app.rooms.has(name)) note(name, `messages may be missing (${reason})`);
  });
  client.on('ratelimited', ({ retryAfterMs }) => {
    note(app.current, `slow down: try again in ${Math.ceil((retryAfterMs ?? 1000) / 1000)} s`);
  });
  client.on('error', (err) => {
    const text = err?.message ?? err?.code ?? String(err);
    console.warn('roomcast error', err);
    note(app.current, `error: ${text}`);
  });

  renderStatus();
  const first = params.get('room') || 'lobby';
  client.connect().catch((e) => note(app.current, `disconnected: ${e?.message ?? e}`));
  joinRoom(first);
}

// ---------------------------------------------------------------- wiring

$('composer').addEventListener('submit', (e) => {
  e.preventDefault();
  sendMessage();
});
$('join-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const name = $('room').value.trim();
  if (!name) return;
  $('room').value = '';
  joinRoom(name);
});
$('login-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const name = $('name').value.trim();
  const problem = nameProblem(name);
  if (problem) {
    $('login-hint').textContent = `That name ${problem}.`;
    return;
  }
  start(name);
});

const given = params.get('user') || (params.get('token') ? 'me' : '');
if (given && !nameProblem(given)) {
  start(given);
} else {
  $('name').value = randomName();
  $('login-hint').textContent = 'Anyone with the same room name can talk to you.';
  $('name').select();
}
renderStatus();
