// fleet-trace: an OpenClaw plugin owned by fleet. It turns every agent run of this gateway into
// fleet "envelope v1" trace events, appends them to a spool file in the gateway's home and ships
// them to the fleet daemon. Plain ESM, no dependencies, no build step.
//
// Envelope v1 (every event has exactly these fields):
//   v: 1, id, trace_id (= OpenClaw runId), parent_id, created_at (RFC3339 UTC, ms), agent_name
//   (OpenClaw agentId), kind, channel_id, thread_id (sessionKey), backend_name ("openclaw"), model,
//   duration_ms, tokens_in, tokens_out, cost_usd, error, payload.
// Sources (OpenClaw 2026.9.6): api.runtime.events.onAgentEvent for everything a run does (it
// carries runId, seq, ts, agentId, sessionKey on lifecycle events, data); the typed hook
// message_received for the user's text (webchat: its messageId is the chat.send idempotencyKey =
// runId). Ids are deterministic, so a resend or a duplicate delivery yields the same id:
//   message_in   oc:<runId>:in  (parent_id null)  payload {text}: the inbound text; for a heartbeat
//                run the configured heartbeat prompt (agents.entries.<id>.heartbeat.prompt or
//                agents.defaults.heartbeat.prompt), else null. Emitted at lifecycle start.
//   lifecycle    oc:<runId>:lifecycle:<start|end|error>
//                payload {phase, heartbeat: bool, stop_reason?, aborted?}; duration_ms on end/error
//   llm_call     oc:<runId>:llm:<n>  n = 1, 2, … (lifecycle "model" events, in order)
//                payload {provider, model, usage: {input: null, output}, stop_reason ("tool_calls"
//                when tools followed, else the run's stopReason)}; model, duration_ms, tokens_out
//                (delta of the run's cumulative usage.outputTokens). Input tokens and cost are not
//                in agent events: tokens_in/cost_usd stay null (LiteLLM has them). backend_name is
//                "openclaw" like every event here: this is the gateway's side of the call.
//   tool_call    oc:<runId>:tool_call:<toolCallId>    payload {tool, tool_call_id, args}
//   tool_result  oc:<runId>:tool_result:<toolCallId>  payload {tool, tool_call_id, result (JSON
//                text, cut to 16 KiB with truncated: true), is_error}; duration_ms; error when is_error
//   reasoning    oc:<runId>:reasoning:<n>   payload {text} (the "thinking" stream of call n)
//   message_out  oc:<runId>:out             payload {text (terminalReply.text), stop_reason}
//   error        oc:<runId>:error (lifecycle error) / oc:<runId>:error:<seq> (error stream)
//                payload {message, kind}; error set
// Every event but the root has parent_id oc:<runId>:in. channel_id: "heartbeat" for heartbeat
// runs, else the channel message_received reported ("webchat" for chat.send), else null.
// thread_id: the sessionKey. agent_name: the agentId.
// Config (plugins.entries.fleet-trace.config): {url, debugRaw?}; no url → the plugin does nothing.
// debugRaw appends every raw hook/agent event to <home>/.fleet/trace-raw.jsonl (lab use only).
//
// Durability: hooks only enqueue (no I/O on the agent's path). A 100 ms timer appends the queue to
// <home>/.fleet/trace-spool.jsonl (one event per line) and fsyncs it. A single shipper POSTs
// {"events":[…]} (≤ 500 events) from the acknowledged offset to `url` with the gateway token as
// Bearer, and advances the offset (<home>/.fleet/trace-spool.offset, tmp + fsync + rename) only
// after a 2xx. When everything is acknowledged the spool is compacted: offset 0 is committed first,
// then the file is truncated — a crash in between re-sends (same ids), never loses.
// Failures: network errors, 5xx, 408, 429 retry with backoff (200 ms doubling, cap 5 s). 401/403
// without a per-event answer also retry (the token may be rotating; the token is re-read from the
// config file meanwhile). The daemon answers for each event: those it refuses for good (its
// `refused` list, by index, on a 200 that kept the others or a 400/403 that kept none) are appended,
// fsync'd, with why, to <home>/.fleet/trace-rejected.jsonl (`fleet trace AGENT --rejected`) and the
// batch is acknowledged. Other 4xx without that list (404, 413 …) can never succeed for that
// content: the batch is split in halves until the failing event is alone, which is then kept in the
// same dead-letter file.
import fs from "node:fs";
import fsp from "node:fs/promises";
import http from "node:http";
import https from "node:https";
import path from "node:path";

const PLUGIN_ID = "fleet-trace";
const MAX_BATCH = 500;
const FLUSH_MS = 100;
const SHIP_MS = 200;
const BACKOFF_CAP_MS = 5000;
const RESULT_CAP = 16 * 1024;
const TEXT_CAP = 64 * 1024;
const GLOBAL = Symbol.for("fleet.trace.plugin");

// ---------- small helpers ----------
const iso = (ms) => new Date(typeof ms === "number" && Number.isFinite(ms) ? ms : Date.now()).toISOString();
const str = (v) => (typeof v === "string" && v.length ? v : undefined);
const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : undefined);
function cap(s, n) {
  if (typeof s !== "string") return s;
  return s.length > n ? s.slice(0, n) : s;
}
function jsonText(v) {
  if (v === undefined) return null;
  if (typeof v === "string") return v;
  try {
    return JSON.stringify(v);
  } catch {
    return String(v);
  }
}
function textOf(content) {
  if (typeof content === "string") return content;
  if (Array.isArray(content))
    return content
      .map((c) => (typeof c === "string" ? c : c && c.type === "text" && typeof c.text === "string" ? c.text : ""))
      .join("");
  return undefined;
}

// ---------- process-wide state: survives a hot reload of this module ----------
// After a reload OpenClaw can deliver each event to the old and the new registration; the old
// one turns inert (generation check) and ids are remembered process-wide, so nothing is spooled twice.
const G = (globalThis[GLOBAL] ??= { generation: 0, seen: new Map(), runs: new Map(), spool: null });
const SEEN_MAX = 20000;
function firstTime(key) {
  if (G.seen.has(key)) return false;
  G.seen.set(key, 1);
  if (G.seen.size > SEEN_MAX) for (const k of G.seen.keys()) { G.seen.delete(k); if (G.seen.size <= SEEN_MAX * 0.9) break; }
  return true;
}

// ---------- spool + shipper ----------
class Spool {
  constructor({ dir, url, token, log, reloadToken }) {
    this.file = path.join(dir, "trace-spool.jsonl");
    this.offFile = path.join(dir, "trace-spool.offset");
    this.dir = dir;
    this.url = new URL(url);
    this.token = token;
    this.reloadToken = reloadToken;
    this.log = log;
    this.queue = []; // serialized lines not yet on disk
    this.chain = Promise.resolve(); // serializes every file operation
    this.written = 0; // bytes on disk (complete lines)
    this.acked = 0; // bytes acknowledged by the daemon
    this.inflight = false;
    this.failures = 0;
    this.batchLimit = MAX_BATCH;
    this.retryAt = 0;
    this.warned = new Set();
    this.stopped = false;
    this.agent = new (this.url.protocol === "https:" ? https : http).Agent({ keepAlive: true, maxSockets: 1 });
  }
  op(fn) {
    const p = this.chain.then(fn);
    this.chain = p.catch((e) => this.warn("io", `fleet-trace: spool I/O failed: ${e && e.message}`));
    return p;
  }
  warn(key, msg) {
    if (this.warned.has(key)) return;
    this.warned.add(key);
    this.log.warn?.(msg);
  }
  async open() {
    // What agents said and what their tools returned: readable by the gateway's user only.
    await fsp.mkdir(this.dir, { recursive: true, mode: 0o700 });
    this.fh = await fsp.open(this.file, "a+", 0o600);
    let size = (await this.fh.stat()).size;
    // A crash mid-append can leave a partial last line: cut it (it was never fully written).
    if (size > 0) {
      const tailLen = Math.min(size, 1 << 20);
      const buf = Buffer.alloc(tailLen);
      await this.fh.read(buf, 0, tailLen, size - tailLen);
      const nl = buf.lastIndexOf(10);
      const keep = nl < 0 ? (tailLen === size ? 0 : size) : size - tailLen + nl + 1;
      if (keep !== size) {
        await this.fh.truncate(keep);
        await this.fh.sync();
        size = keep;
      }
    }
    this.written = size;
    let off = 0;
    try {
      off = Number(JSON.parse(await fsp.readFile(this.offFile, "utf8")).offset) || 0;
    } catch {}
    this.acked = off >= 0 && off <= size ? off : 0; // beyond the end: resend everything rather than skip
    this.flushTimer = setInterval(() => this.flush(), FLUSH_MS);
    this.shipTimer = setInterval(() => this.ship(), SHIP_MS);
    this.flushTimer.unref?.();
    this.shipTimer.unref?.();
    if (this.acked < this.written) this.log.info?.(`fleet-trace: resuming, ${this.written - this.acked} bytes to ship`);
  }
  push(ev) {
    if (this.stopped) return;
    this.queue.push(JSON.stringify(ev) + "\n");
    if (this.queue.length >= MAX_BATCH) queueMicrotask(() => this.flush());
  }
  flush() {
    if (!this.queue.length || !this.fh) return this.chain;
    const lines = this.queue;
    this.queue = [];
    return this.op(async () => {
      const buf = Buffer.from(lines.join(""));
      await this.fh.write(buf, 0, buf.length, null);
      await this.fh.datasync();
      this.written += buf.length;
    }).catch(() => {
      this.queue = lines.concat(this.queue); // keep them; the next flush tries again
    });
  }
  async writeOffset(n) {
    const tmp = this.offFile + ".tmp";
    const fh = await fsp.open(tmp, "w", 0o600);
    try {
      await fh.writeFile(JSON.stringify({ offset: n }));
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fsp.rename(tmp, this.offFile);
  }
  async readBatch() {
    const out = [];
    let pos = this.acked;
    let bytes = 0;
    const chunk = Buffer.alloc(256 * 1024);
    let carry = "";
    while (pos < this.written && out.length < this.batchLimit && bytes < 4 * 1024 * 1024) {
      const n = Math.min(chunk.length, this.written - pos);
      const { bytesRead } = await this.fh.read(chunk, 0, n, pos);
      if (!bytesRead) break;
      pos += bytesRead;
      let s = carry + chunk.toString("utf8", 0, bytesRead);
      let i;
      while ((i = s.indexOf("\n")) >= 0 && out.length < this.batchLimit) {
        const line = s.slice(0, i);
        s = s.slice(i + 1);
        bytes += Buffer.byteLength(line) + 1;
        if (line.trim()) out.push(line);
      }
      carry = s;
      if (out.length >= this.batchLimit) break;
    }
    return { lines: out, bytes };
  }
  ship() {
    if (this.inflight || this.stopped || !this.fh || Date.now() < this.retryAt) return;
    if (this.acked >= this.written) return;
    this.inflight = true;
    (async () => {
      const { lines, bytes } = await this.op(() => this.readBatch());
      if (!lines.length) return;
      const { status, body } = await this.post('{"events":[' + lines.join(",") + "]}");
      let refused = null;
      try {
        const doc = JSON.parse(body);
        if (doc && Array.isArray(doc.refused)) refused = doc.refused;
      } catch {}
      if ((status >= 200 && status < 300) || refused) {
        if (refused && refused.length) {
          this.log.warn?.(`fleet-trace: the daemon refused ${refused.length} of ${lines.length} event(s); kept in trace-rejected.jsonl`);
          await this.op(() => this.deadLetter(lines, refused));
        }
        this.failures = 0;
        this.batchLimit = Math.min(MAX_BATCH, this.batchLimit * 2);
        await this.advance(bytes);
        return;
      }
      const permanent = status >= 400 && status < 500 && ![401, 403, 408, 429].includes(status);
      if (permanent && lines.length > 1) {
        this.batchLimit = Math.ceil(lines.length / 2); // isolate the event the daemon refuses
        return;
      }
      if (permanent) {
        this.log.warn?.(`fleet-trace: the daemon refused an event with HTTP ${status}; kept in trace-rejected.jsonl`);
        await this.op(() => this.deadLetter(lines, [{ index: 0, code: `http_${status}`, message: String(body).slice(0, 500) }]));
        this.batchLimit = MAX_BATCH;
        await this.advance(bytes);
        return;
      }
      this.failures++;
      if (status === 401 || status === 403) {
        const t = this.reloadToken();
        if (t) this.token = t;
      }
      const delay = Math.min(BACKOFF_CAP_MS, 200 * 2 ** Math.min(this.failures - 1, 10));
      this.retryAt = Date.now() + delay * (0.8 + Math.random() * 0.4);
      if (this.failures === 1 || this.failures % 50 === 0)
        this.log.warn?.(`fleet-trace: shipping failed (${status || "no connection"}); spooling, retrying with backoff`);
    })()
      .catch((e) => this.warn("ship", `fleet-trace: shipper error: ${e && e.message}`))
      .finally(() => {
        this.inflight = false;
        // A backlog drains batch after batch, not one batch per tick.
        if (!this.failures && this.acked < this.written) setImmediate(() => this.ship());
      });
  }
  // Appends each refused event (by index into `lines`) with why, fsync'd: never dropped silently.
  async deadLetter(lines, refused) {
    const at = new Date().toISOString();
    const out = [];
    for (const r of refused) {
      const i = r && Number.isInteger(r.index) ? r.index : -1;
      if (i < 0 || i >= lines.length) continue;
      let event = null;
      try { event = JSON.parse(lines[i]); } catch { event = lines[i]; }
      out.push(JSON.stringify({ at, sender: "openclaw", code: r.code ?? null, message: r.message ?? null, event }) + "\n");
    }
    if (!out.length) return;
    const fh = await fsp.open(path.join(this.dir, "trace-rejected.jsonl"), "a", 0o600);
    try {
      await fh.write(out.join(""));
      await fh.sync();
    } finally {
      await fh.close();
    }
  }
  advance(bytes) {
    return this.op(async () => {
      this.acked += bytes;
      if (this.acked >= this.written && this.queue.length === 0) {
        // Compact: commit offset 0 first, then truncate. A crash between the two re-sends the
        // (already acknowledged) file; the reverse order could skip events appended later.
        await this.writeOffset(0);
        await this.fh.truncate(0);
        await this.fh.sync();
        this.acked = 0;
        this.written = 0;
      } else {
        await this.writeOffset(this.acked);
      }
    });
  }
  post(body) {
    return new Promise((resolve) => {
      const u = this.url;
      const req = (u.protocol === "https:" ? https : http).request(
        {
          hostname: u.hostname,
          port: u.port || undefined,
          path: u.pathname + u.search,
          method: "POST",
          agent: this.agent,
          timeout: 15000,
          headers: {
            "content-type": "application/json",
            "content-length": Buffer.byteLength(body),
            ...(this.token ? { authorization: `Bearer ${this.token}` } : {}),
          },
        },
        (res) => {
          const chunks = [];
          let size = 0;
          res.on("data", (c) => {
            size += c.length;
            if (size <= 1 << 20) chunks.push(c); // the daemon's answer; never more than this is read
          });
          res.on("end", () => resolve({ status: res.statusCode || 0, body: Buffer.concat(chunks).toString("utf8") }));
          res.on("error", () => resolve({ status: 0, body: "" }));
        },
      );
      req.on("timeout", () => req.destroy(new Error("timeout")));
      req.on("error", () => resolve({ status: 0, body: "" }));
      req.end(body);
    });
  }
  async stop() {
    this.stopped = true;
    clearInterval(this.flushTimer);
    clearInterval(this.shipTimer);
    this.flushTimer = this.shipTimer = undefined;
    const rest = this.queue;
    this.queue = [];
    if (rest.length && this.fh) {
      this.queue = rest;
      this.stopped = false;
      await this.flush();
      this.stopped = true;
    }
    await this.chain.catch(() => {});
    await this.fh?.close().catch(() => {});
    this.fh = undefined;
    this.agent.destroy();
  }
}

// ---------- config ----------
function gatewayHome() {
  return process.env.OPENCLAW_HOME || process.env.HOME || process.cwd();
}
function tokenFromConfig(cfg) {
  const t = cfg && cfg.gateway && cfg.gateway.auth && cfg.gateway.auth.token;
  return typeof t === "string" && t && !t.includes("${") ? t : undefined;
}
function tokenFromFile() {
  const p = process.env.OPENCLAW_CONFIG_PATH || path.join(gatewayHome(), ".openclaw", "openclaw.json");
  try {
    return tokenFromConfig(JSON.parse(fs.readFileSync(p, "utf8")));
  } catch {
    return undefined;
  }
}

// ---------- per-run state ----------
// OpenClaw 2026.9.6 runs the agent loop in an execution frame whose hook registry does not hold
// plugins loaded from plugins.load.paths: llm_input/llm_output/model_call_*/before|after_tool_call/
// agent_end never fire for them (hasHooks() is false inside the run). api.runtime.events.onAgentEvent
// does deliver every run's events (webchat, heartbeat, any channel), so it is the primary source.
// message_received (gateway side) supplies the user's text. The other typed hooks are registered
// too: should a future release dispatch them, they fill the same deterministic ids (first wins).
const ROUTING = Symbol.for("openclaw.agentEvents.executionContext");
function routingOf(runId) {
  // Best effort, internal: the run's routing record (isHeartbeat) from OpenClaw's event context.
  try {
    return globalThis[ROUTING]?.getStore?.()?.routingByRun?.get(runId)?.routing;
  } catch {
    return undefined;
  }
}
function run(runId) {
  let r = G.runs.get(runId);
  if (!r) {
    r = { runId, llm: 0, reasoning: "", out: 0, call: null, tools: 0, assistant: "", done: false };
    G.runs.set(runId, r);
    if (G.runs.size > 2000) G.runs.delete(G.runs.keys().next().value);
  }
  return r;
}
function learn(r, src) {
  if (!src) return;
  if (!r.agentId) r.agentId = str(src.agentId);
  if (!r.sessionKey) r.sessionKey = str(src.sessionKey);
  const ch = str(src.channelId) || str(src.channel) || str(src.messageProvider);
  if (ch && !r.channel) r.channel = ch;
  if (src.trigger === "heartbeat" || src.isHeartbeat === true) r.heartbeat = true;
}
function agentFromKey(key) {
  const m = typeof key === "string" && /^agent:([^:]+):/.exec(key);
  return m ? m[1] : undefined;
}
function heartbeatPrompt(cfg, agentId) {
  const entry = cfg?.agents?.entries?.[agentId] ?? (Array.isArray(cfg?.agents?.list) ? cfg.agents.list.find((a) => a && a.id === agentId) : undefined);
  return str(entry?.heartbeat?.prompt) ?? str(cfg?.agents?.defaults?.heartbeat?.prompt);
}

// Inbound texts by runId / messageId / sessionKey, waiting for their run to start.
const INBOX_TTL_MS = 10 * 60 * 1000;
function remember(map, key, value) {
  if (!key) return;
  map.set(key, { value, at: Date.now() });
  if (map.size > 1000) for (const [k, v] of map) if (Date.now() - v.at > INBOX_TTL_MS || map.size > 1000) map.delete(k); else break;
}
function take(map, key) {
  const e = key && map.get(key);
  if (!e) return undefined;
  map.delete(key);
  return Date.now() - e.at < INBOX_TTL_MS ? e.value : undefined;
}

// ---------- the plugin ----------
export default {
  id: PLUGIN_ID,
  name: "fleet trace",
  description: "Ships every agent run to fleet's trace store",
  register(api) {
    if (api.registrationMode && api.registrationMode !== "full") return;
    const log = api.logger || console;
    const cfg = api.pluginConfig || {};
    const url = str(cfg.url);
    if (!url) {
      log.info?.("fleet-trace: no url configured; not tracing");
      return;
    }
    const gen = ++G.generation;
    const live = () => G.generation === gen;
    const home = gatewayHome();
    const dir = path.join(home, ".fleet");
    const rawFile = cfg.debugRaw ? path.join(dir, "trace-raw.jsonl") : null;
    const raw = (name, event, ctx) => {
      if (!rawFile) return;
      try {
        const slim = (o) =>
          JSON.parse(
            JSON.stringify(o ?? null, (k, v) =>
              ["historyMessages", "systemPrompt", "messages", "tools"].includes(k)
                ? `[${Array.isArray(v) ? v.length : typeof v}]`
                : typeof v === "string" && v.length > 2000 ? v.slice(0, 2000) + "…" : v,
            ),
          );
        fs.appendFileSync(rawFile, JSON.stringify({ t: Date.now(), hook: name, event: slim(event), ctx: slim(ctx) }) + "\n");
      } catch {}
    };

    // The queue exists from registration on; the service opens the file and starts shipping.
    const token = tokenFromConfig(api.config) || tokenFromFile();
    const spool = new Spool({ dir, url, token, log, reloadToken: tokenFromFile });
    const inbox = { byRun: new Map(), bySession: new Map() };

    const emit = (r, kind, idTail, fields) => {
      if (!live()) return;
      const id = `oc:${r.runId}:${idTail}`;
      if (!firstTime(id)) return;
      spool.push({
        v: 1,
        id,
        trace_id: r.runId,
        parent_id: kind === "message_in" ? null : `oc:${r.runId}:in`,
        created_at: iso(fields.at),
        agent_name: r.agentId ?? agentFromKey(r.sessionKey) ?? null,
        kind,
        channel_id: r.heartbeat ? "heartbeat" : r.channel ?? null,
        thread_id: r.sessionKey ?? null,
        backend_name: "openclaw",
        model: fields.model ?? null,
        duration_ms: fields.duration_ms ?? null,
        tokens_in: fields.tokens_in ?? null,
        tokens_out: fields.tokens_out ?? null,
        cost_usd: fields.cost_usd ?? null,
        error: fields.error ?? null,
        payload: fields.payload ?? {},
      });
    };
    const emitRoot = (r, at) => {
      if (r.rooted) return;
      r.rooted = true;
      let text = r.inText;
      if (text === undefined && r.heartbeat) text = heartbeatPrompt(api.config, r.agentId);
      emit(r, "message_in", "in", { at, payload: { text: text === undefined ? null : cap(text, TEXT_CAP) } });
    };
    // A model call ends at the next boundary (next call, finishing, end, error): only then is it
    // known whether it asked for tools, and how many output tokens it added.
    const closeCall = (r, at, stopReason, error) => {
      const c = r.call;
      if (!c) return;
      r.call = null;
      const out = r.outputTokens !== undefined && c.tokensBefore !== undefined ? r.outputTokens - c.tokensBefore : undefined;
      emit(r, "llm_call", `llm:${c.n}`, {
        at: c.at,
        model: c.model,
        duration_ms: Math.max(0, (c.endAt ?? at) - c.at),
        tokens_out: out,
        error,
        payload: {
          provider: c.provider ?? null,
          model: c.model ?? null,
          usage: { input: null, output: out ?? null },
          stop_reason: r.tools > c.toolsBefore ? "tool_calls" : stopReason ?? null,
        },
      });
      if (r.reasoning) {
        emit(r, "reasoning", `reasoning:${c.n}`, { at: c.at, payload: { text: cap(r.reasoning, TEXT_CAP) } });
        r.reasoning = "";
      }
    };

    const onAgentEvent = (evt) => {
      if (!live() || !evt || !str(evt.runId)) return;
      if (!firstTime(`seq:${evt.runId}:${evt.seq}`)) return; // duplicate delivery (reload)
      raw("agent_event", evt);
      const r = run(evt.runId);
      learn(r, evt);
      if (r.heartbeat === undefined) {
        const routing = routingOf(evt.runId);
        if (routing) {
          r.heartbeat = routing.isHeartbeat === true;
          learn(r, routing);
        }
      }
      const d = evt.data || {};
      const at = num(evt.ts) ?? Date.now();
      switch (evt.stream) {
        case "lifecycle": {
          if (d.phase === "start") {
            if (r.inText === undefined && !r.heartbeat) {
              r.inText = take(inbox.byRun, evt.runId);
              const s = take(inbox.bySession, r.sessionKey); // consumed either way: one text, one run
              if (r.inText === undefined) r.inText = s;
            }
            emitRoot(r, num(d.startedAt) ?? at);
            emit(r, "lifecycle", "lifecycle:start", { at, payload: { phase: "start", heartbeat: !!r.heartbeat } });
          } else if (d.phase === "model") {
            if (!str(d.provider) && !str(d.model)) break; // a post-run bookkeeping event
            emitRoot(r, at);
            closeCall(r, at);
            r.call = { n: ++r.llm, at, provider: str(d.provider), model: str(d.model), tokensBefore: r.outputTokens ?? 0, toolsBefore: r.tools };
          } else if (d.phase === "finishing" || d.phase === "end" || d.phase === "error") {
            emitRoot(r, at);
            const err = d.phase === "error" ? str(d.error) ?? str(d.errorMessage) ?? str(d.message) ?? "error" : undefined;
            closeCall(r, at, str(d.stopReason), err);
            if (d.phase === "finishing") break;
            if (d.phase === "end") {
              // An empty terminal text is no text: the streamed assistant text then (the daemon's router
              // writes the same event id with the reply it got; whichever lands first is kept, and
              // an empty one was, under load — the reply itself was there).
              const terminal = d.terminalReply && typeof d.terminalReply.text === "string" ? d.terminalReply.text : "";
              const reply = terminal !== "" ? terminal : r.assistant || null;
              if (reply !== null || str(d.stopReason))
                emit(r, "message_out", "out", { at, payload: { text: reply === null ? null : cap(reply, TEXT_CAP), stop_reason: str(d.stopReason) ?? null } });
            } else {
              emit(r, "error", "error", { at, error: err, payload: { message: err, kind: str(d.errorKind) ?? null } });
            }
            const started = num(d.startedAt);
            emit(r, "lifecycle", `lifecycle:${d.phase}`, {
              at,
              duration_ms: started !== undefined ? Math.max(0, (num(d.endedAt) ?? at) - started) : undefined,
              error: err,
              payload: { phase: d.phase, heartbeat: !!r.heartbeat, stop_reason: str(d.stopReason) ?? null, aborted: d.aborted === true },
            });
            r.done = true;
          }
          break;
        }
        case "usage":
          if (num(d.outputTokens) !== undefined) r.outputTokens = d.outputTokens;
          if (r.call) r.call.endAt = at;
          break;
        case "assistant":
          if (typeof d.text === "string") r.assistant = d.text;
          if (r.call) r.call.endAt = at;
          break;
        case "thinking":
          if (typeof d.delta === "string") r.reasoning += d.delta;
          else if (typeof d.text === "string") r.reasoning = d.text;
          break;
        case "tool": {
          const id = str(d.toolCallId);
          if (!id) break;
          emitRoot(r, at);
          if (d.phase === "start") {
            r.tools++;
            if (r.call && !r.call.endAt) r.call.endAt = at;
            (r.toolStart ??= new Map()).set(id, at);
            emit(r, "tool_call", `tool_call:${id}`, { at, payload: { tool: str(d.name) ?? null, tool_call_id: id, args: d.args ?? null } });
          } else if (d.phase === "result") {
            let text = jsonText(d.result);
            const truncated = typeof text === "string" && text.length > RESULT_CAP;
            if (truncated) text = text.slice(0, RESULT_CAP);
            const t0 = r.toolStart?.get(id);
            r.toolStart?.delete(id);
            emit(r, "tool_result", `tool_result:${id}`, {
              at,
              duration_ms: t0 !== undefined ? Math.max(0, at - t0) : undefined,
              error: d.isError ? cap(text ?? "tool error", 2000) : undefined,
              payload: { tool: str(d.name) ?? null, tool_call_id: id, result: text, is_error: d.isError === true, ...(truncated ? { truncated: true } : {}) },
            });
          }
          break;
        }
        case "error": {
          const msg = str(d.message) ?? str(d.error) ?? jsonText(d);
          emit(r, "error", `error:${evt.seq}`, { at, error: msg, payload: { message: msg, kind: str(d.kind) ?? null } });
          break;
        }
      }
      if (r.done) G.runs.delete(evt.runId);
    };

    // Typed hooks: observation only, never throw, never do I/O.
    const on = (name, fn) =>
      api.on(name, (event, ctx) => {
        if (!live()) return;
        try {
          raw(name, event, ctx);
          fn(event || {}, ctx || {});
        } catch (e) {
          log.warn?.(`fleet-trace: ${name} handler: ${e && e.message}`);
        }
      });
    on("message_received", (e, ctx) => {
      const text = typeof e.content === "string" ? e.content : textOf(e.content);
      if (text === undefined) return;
      const runId = str(e.runId) || str(ctx.runId);
      // chat.send: runId = idempotencyKey = messageId. Channels: the session's next run.
      remember(inbox.byRun, runId || str(e.messageId) || str(ctx.messageId), text);
      remember(inbox.bySession, str(e.sessionKey) || str(ctx.sessionKey), text);
      const r = runId && G.runs.get(runId);
      if (r && !r.rooted) r.inText = text;
      const ch = str(ctx.channelId);
      if (ch) remember(inbox.byRun, "ch:" + (runId || str(e.messageId) || ""), ch);
    });
    on("llm_input", (e, ctx) => {
      const runId = str(e.runId) || str(ctx.runId);
      if (!runId) return;
      const r = run(runId);
      learn(r, ctx);
      if (r.inText === undefined && typeof e.prompt === "string") r.inText = e.prompt;
    });
    on("before_tool_call", (e, ctx) => {
      const runId = str(e.runId) || str(ctx.runId);
      const id = str(e.toolCallId) || str(ctx.toolCallId);
      if (!runId || !id) return;
      const r = run(runId);
      learn(r, ctx);
      emit(r, "tool_call", `tool_call:${id}`, { payload: { tool: str(e.toolName) ?? null, tool_call_id: id, args: e.params ?? null } });
    });

    let unsubscribe;
    try {
      unsubscribe = api.runtime?.events?.onAgentEvent?.((evt) => {
        try {
          // The channel of a chat.send run: message_received saw it first.
          if (evt && evt.runId && !G.runs.has(evt.runId)) {
            const ch = take(inbox.byRun, "ch:" + evt.runId);
            if (ch) run(evt.runId).channel = ch;
          }
          onAgentEvent(evt);
        } catch (e) {
          log.warn?.(`fleet-trace: agent event: ${e && e.message}`);
        }
      });
    } catch (e) {
      log.warn?.(`fleet-trace: onAgentEvent unavailable: ${e && e.message}`);
    }
    api.lifecycle?.onDispose?.(() => {
      try {
        unsubscribe?.();
      } catch {}
    });

    api.registerService({
      id: "fleet-trace-shipper",
      start: async () => {
        if (!live()) return;
        if (G.spool && G.spool !== spool) await G.spool.stop().catch(() => {});
        G.spool = spool;
        await spool.open();
        log.info?.(`fleet-trace: shipping to ${url}`);
      },
      stop: async () => {
        await spool.stop();
        if (G.spool === spool) G.spool = null;
      },
    });
  },
};
