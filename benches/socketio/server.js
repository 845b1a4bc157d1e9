#!/usr/bin/env node
// R2 "industry" reference for roomcast's fan-out benchmark (shared/BENCHMARKING.md §5):
// Socket.IO 4.8 with a Redis adapter, speaking the same semantics as a roomcast edge so
// that the same load generator (`roomcast-fanout --protocol socketio`) drives both.
//
//   node server.js --port 0 --redis redis://127.0.0.1:6379 --adapter redis
//
// Options:
//   --port P        listen port (0 = a free one); default 0
//   --host H        listen address; default 127.0.0.1
//   --redis URL     Redis URL (needed unless --adapter none)
//   --adapter A     redis   @socket.io/redis-adapter, sharded (SSUBSCRIBE/SPUBLISH, Redis >= 7),
//                           subscriptionMode "dynamic" (one channel per public room)
//                   streams @socket.io/redis-streams-adapter (XADD/XREAD on one stream)
//                   none    the in-memory adapter (single process only)
//   --ping-interval MS, --ping-timeout MS   Engine.IO heartbeat (defaults 25000 / 20000)
//
// Once listening AND connected to Redis it prints one line on stdout:
//   socketio listening on http://127.0.0.1:PORT (adapter redis, pid N)
// GET /healthz answers 200 "ok" from then on; GET /metrics gives plain counters
// (unlabelled, Prometheus text) that the generator reads at the edges of its window,
// plus RSS and V8 heap gauges; `/metrics?gc=1` runs a full GC first when node was
// started with --expose-gc (`node --expose-gc server.js …`).
//
// Protocol (Socket.IO v4, namespace "/", websocket transport only, no compression):
//   handshake query ?user=NAME (anonymous; the socket id when absent)
//   emit "join", ROOM, ack          -> socket.join(ROOM); ack({ok: true})
//   emit "publish", {room, data}, ack
//                                   -> to every OTHER member of room (sender excluded, as in
//                                      roomcast): emit "message", {room, from: USER, data};
//                                      then ack({ok: true}). Not a member: ack({ok: false,
//                                      error: "not_member"}) and nothing is sent.
"use strict";

const http = require("node:http");
const { Server } = require("socket.io");

function parseArgs(argv) {
  const opts = {
    port: 0,
    host: "127.0.0.1",
    redis: "",
    adapter: "redis",
    pingInterval: 25000,
    pingTimeout: 20000,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const eq = a.indexOf("=");
    const [key, inline] = eq > 0 ? [a.slice(0, eq), a.slice(eq + 1)] : [a, undefined];
    const val = () => {
      if (inline !== undefined) return inline;
      if (i + 1 >= argv.length) die(`${key} needs a value`);
      return argv[++i];
    };
    switch (key) {
      case "--port": opts.port = Number(val()); break;
      case "--host": opts.host = val(); break;
      case "--redis": opts.redis = val(); break;
      case "--adapter": opts.adapter = val(); break;
      case "--ping-interval": opts.pingInterval = Number(val()); break;
      case "--ping-timeout": opts.pingTimeout = Number(val()); break;
      case "-h":
      case "--help":
        process.stdout.write(
          "usage: node server.js [--port P] [--host H] [--redis URL] [--adapter redis|streams|none]\n" +
            "                      [--ping-interval MS] [--ping-timeout MS]\n");
        process.exit(0);
        break;
      default: die(`unknown option ${a}`);
    }
  }
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) die("--port: bad port");
  if (!["redis", "streams", "none"].includes(opts.adapter)) die("--adapter: redis, streams or none");
  if (opts.adapter !== "none" && !opts.redis) die(`--adapter ${opts.adapter} needs --redis URL`);
  return opts;
}

function die(msg) {
  process.stderr.write(`socketio: ${msg}\n`);
  process.exit(2);
}

// Counters for /metrics (all monotonic except the connection gauge).
const stats = {
  connections: 0,
  connects_total: 0,
  disconnects_total: 0,
  joins_total: 0,
  publishes_total: 0,
  publish_rejected_total: 0,
  bad_requests_total: 0,
  redis_errors_total: 0,
};

async function makeAdapter(opts) {
  if (opts.adapter === "none") return { adapter: undefined, clients: [] };
  const { createClient } = require("redis");
  const onError = (what) => (err) => {
    stats.redis_errors_total++;
    process.stderr.write(`socketio: redis ${what}: ${err && err.message}\n`);
  };
  if (opts.adapter === "redis") {
    const { createShardedAdapter } = require("@socket.io/redis-adapter");
    const pub = createClient({ url: opts.redis });
    const sub = pub.duplicate();
    pub.on("error", onError("pub"));
    sub.on("error", onError("sub"));
    await Promise.all([pub.connect(), sub.connect()]);
    return {
      adapter: createShardedAdapter(pub, sub, { subscriptionMode: "dynamic" }),
      clients: [pub, sub],
    };
  }
  // streams: one client; the adapter duplicates it for its blocking XREAD.
  const { createAdapter } = require("@socket.io/redis-streams-adapter");
  const client = createClient({ url: opts.redis });
  client.on("error", onError("client"));
  await client.connect();
  return { adapter: createAdapter(client), clients: [client] };
}

function metricsText() {
  const lines = [];
  for (const [k, v] of Object.entries(stats)) {
    lines.push(`# TYPE socketio_${k} ${k.endsWith("_total") ? "counter" : "gauge"}`);
    lines.push(`socketio_${k} ${v}`);
  }
  const cpu = process.cpuUsage();
  lines.push("# TYPE process_cpu_seconds_total counter");
  lines.push(`process_cpu_seconds_total ${(cpu.user + cpu.system) / 1e6}`);
  const mem = process.memoryUsage();
  lines.push("# TYPE process_resident_memory_bytes gauge");
  lines.push(`process_resident_memory_bytes ${mem.rss}`);
  lines.push("# TYPE nodejs_heap_used_bytes gauge");
  lines.push(`nodejs_heap_used_bytes ${mem.heapUsed}`);
  lines.push("# TYPE nodejs_external_bytes gauge");
  lines.push(`nodejs_external_bytes ${mem.external}`);
  return lines.join("\n") + "\n";
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  let ready = false;

  // Socket.IO handles /socket.io/; everything else falls through to this handler.
  const httpServer = http.createServer((req, res) => {
    const path = (req.url || "").split("?")[0];
    if (path === "/healthz") {
      res.writeHead(ready ? 200 : 503, { "content-type": "text/plain" });
      res.end(ready ? "ok\n" : "starting\n");
    } else if (path === "/metrics") {
      // `/metrics?gc=1` first runs a full GC when node was started with --expose-gc,
      // so that nodejs_heap_used_bytes reads live objects only (idle-memory scenario).
      if (typeof global.gc === "function" && /[?&]gc=1(&|$)/.test(req.url || "")) global.gc();
      res.writeHead(200, { "content-type": "text/plain; version=0.0.4" });
      res.end(metricsText());
    } else {
      res.writeHead(404, { "content-type": "text/plain" });
      res.end("not found\n");
    }
  });

  const { adapter, clients } = await makeAdapter(opts);
  const io = new Server(httpServer, {
    transports: ["websocket"],
    allowUpgrades: false,
    perMessageDeflate: false,
    httpCompression: false,
    serveClient: false,
    pingInterval: opts.pingInterval,
    pingTimeout: opts.pingTimeout,
    ...(adapter ? { adapter } : {}),
  });

  io.on("connection", (socket) => {
    const q = socket.handshake.query.user;
    const user = typeof q === "string" && q !== "" ? q : socket.id;
    stats.connections++;
    stats.connects_total++;
    socket.on("disconnect", () => {
      stats.connections--;
      stats.disconnects_total++;
    });

    socket.on("join", (room, ack) => {
      if (typeof room !== "string" || room === "") {
        stats.bad_requests_total++;
        if (typeof ack === "function") ack({ ok: false, error: "bad_request" });
        return;
      }
      socket.join(room);
      stats.joins_total++;
      if (typeof ack === "function") ack({ ok: true });
    });

    socket.on("publish", (msg, ack) => {
      const room = msg && msg.room;
      if (typeof room !== "string" || room === "" || msg.data === undefined) {
        stats.bad_requests_total++;
        if (typeof ack === "function") ack({ ok: false, error: "bad_request" });
        return;
      }
      if (!socket.rooms.has(room)) {
        stats.publish_rejected_total++;
        if (typeof ack === "function") ack({ ok: false, error: "not_member" });
        return;
      }
      // `socket.to(room)` excludes the sender itself, as roomcast does.
      socket.to(room).emit("message", { room, from: user, data: msg.data });
      stats.publishes_total++;
      if (typeof ack === "function") ack({ ok: true });
    });
  });

  await new Promise((resolve, reject) => {
    httpServer.once("error", reject);
    httpServer.listen(opts.port, opts.host, resolve);
  });
  ready = true;
  const { address, port } = httpServer.address();
  const host = address.includes(":") ? `[${address}]` : address;
  process.stdout.write(
    `socketio listening on http://${host}:${port} (adapter ${opts.adapter}, pid ${process.pid})\n`);

  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    ready = false;
    // Closes every socket and the HTTP server, then the Redis clients.
    await new Promise((resolve) => io.close(() => resolve()));
    await Promise.allSettled(clients.map((c) => (typeof c.close === "function" ? c.close() : c.quit())));
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => {
  process.stderr.write(`socketio: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
