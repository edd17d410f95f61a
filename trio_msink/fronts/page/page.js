// trio_msink live page: the video on a canvas (WebCodecs), the stream's numbers,
// charts and viewers. Plain JavaScript, no framework, no build step; see
// docs/fronts.md ("The live page" and "The browser viewer").

// Named constants, one a line: the same shape by design.
const STATS_PATH = document.body.dataset.stats;
const TIME_PATH = document.body.dataset.time;
const STATS_PERIOD_MS = 1000;
// With many clients, every page polls half as often: each request is a
// connection of its own to the server.
const STATS_PERIOD_MANY_MS = 2000;
const CLOCK_PERIOD_MS = 60000;
// Over this many clients the page asks for a summary and one page of rows:
// its requests then stay the same size whatever the audience.
const MANY_CLIENTS = 100;
const PAGE_SIZE = 50;
const HISTORY_SECONDS = 300;
// Chunks waiting in the decoder beyond which a slow tab skips to the next
// keyframe, as the server does for a slow connection (resync-keyframe).
const MAX_DECODE_QUEUE = 8;
// Messages kept while the decoder is being configured (a few frames' worth).
const MAX_PENDING = 120;
const LATENCY_SAMPLES = 50;
const HEADER_SIZE = 24;
const KIND_CONFIG = 1;
const FLAG_KEY = 1;
const FLAG_PTS = 2;

// What the page knows and did, for people and for tests (window.msink).
const state = {
  framesDecoded: 0,
  decoderErrors: 0,
  chunksDecoded: 0,
  chunksSkipped: 0,
  keyframeResyncs: 0,
  firstChunkKey: null,
  firstFrameMs: null,
  latencyMs: null,
  clockOffsetMs: null,
  clockRttMs: null,
  config: null,
  unsupported: null,
  stats: null,
  history: [],
};
window.msink = state;

const $ = (id) => document.getElementById(id);
const now = () => performance.timeOrigin + performance.now();

// Every URL the page requests goes through here: the one place to add
// credentials (a token) when the server asks for them.
function authorize(url) {
  // The page was opened with the operator's ?token= (docs/security.md).
  const token = new URLSearchParams(location.search).get("token");
  if (!token) return url;
  const target = new URL(url, location.href);
  target.searchParams.set("token", token);
  return target.href;
}

async function api(path, params = {}) {
  const url = new URL(path, location.href);
  for (const [key, value] of Object.entries(params)) url.searchParams.set(key, value);
  const response = await fetch(authorize(url.href), {cache: "no-store"});
  if (!response.ok) throw new Error(`${url.pathname}: HTTP ${response.status}`);
  return response.json();
}

// -- clock: the server's time minus ours, NTP-style ----------------------------------
async function syncClock(samples) {
  let best = null;
  for (let i = 0; i < samples; i++) {
    const t0 = now();
    const reply = await api(TIME_PATH);
    const t1 = now();
    // The server read its clock somewhere in the round trip: assume the middle,
    // and trust the shortest round trip most (its error is at most rtt/2).
    const sample = {rtt: t1 - t0, offset: reply.time - (t0 + t1) / 2};
    if (best === null || sample.rtt < best.rtt) best = sample;
  }
  state.clockOffsetMs = best.offset;
  state.clockRttMs = best.rtt;
}

// -- the video ---------------------------------------------------------------------------
class Viewer {
  constructor(url) {
    this.url = url;
    this.canvas = $("video");
    this.context = this.canvas.getContext("2d");
    this.decoder = null;
    this.configuring = null;
    this.generation = 0;
    this.pending = [];
    this.waitKey = true;
    this.sent = new Map();
    this.sequence = 0;
    this.latencies = [];
    this.rateFrames = [];
  }

  start() {
    const socket = new WebSocket(authorize(this.url));
    socket.binaryType = "arraybuffer";
    socket.onmessage = (event) => this.message(event.data);
    socket.onopen = () => status("waiting for the first picture…");
    socket.onclose = () => {
      status("video connection closed; retrying…");
      this.reset();
      setTimeout(() => this.start(), 2000);
    };
  }

  reset() {
    if (this.decoder && this.decoder.state !== "closed") this.decoder.close();
    this.decoder = null;
    this.waitKey = true;
    this.pending = [];
    this.sent.clear();
  }

  message(buffer) {
    if (buffer.byteLength < HEADER_SIZE) return;
    const view = new DataView(buffer);
    if (view.getUint32(0) !== 0x544d5356 || view.getUint8(4) !== 1) return; // "TMSV", v1
    const kind = view.getUint8(5);
    const flags = view.getUint8(6);
    const message = {
      key: (flags & FLAG_KEY) !== 0,
      pts: flags & FLAG_PTS ? Number(view.getBigInt64(8)) : null,
      sent: view.getFloat64(16),
      payload: new Uint8Array(buffer, HEADER_SIZE),
    };
    if (kind === KIND_CONFIG) {
      this.configure(JSON.parse(new TextDecoder().decode(message.payload)));
    } else if (this.configuring) {
      // The first keyframe follows its config at once: keep it for the decoder.
      if (this.pending.length < MAX_PENDING) this.pending.push(message);
    } else {
      this.decode(message);
    }
  }

  configure(config) {
    state.config = config;
    this.reset();
    const done = this.setUp(config).finally(() => {
      this.configuring = null;
      const pending = this.pending;
      this.pending = [];
      for (const message of pending) this.decode(message);
    });
    this.configuring = done;
  }

  async setUp(config) {
    const generation = ++this.generation;
    if (!("VideoDecoder" in window)) {
      return unsupported("This browser has no WebCodecs video decoder, so the stream " +
                         "cannot play here: use one of the player commands below.");
    }
    if (!config.codec) {
      return unsupported(`The page cannot play this stream: ${config.reason}; ` +
                         "use one of the player commands below.");
    }
    const decoderConfig = {codec: config.codec, optimizeForLatency: true};
    if (config.width && config.height) {
      decoderConfig.codedWidth = config.width;
      decoderConfig.codedHeight = config.height;
    }
    const support = await VideoDecoder.isConfigSupported(decoderConfig);
    if (generation !== this.generation) return; // a newer config came meanwhile
    if (!support.supported) {
      return unsupported(`This browser cannot decode ${config.codec} video: ` +
                         "use one of the player commands below.");
    }
    this.decoder = new VideoDecoder({
      output: (frame) => this.draw(frame),
      error: (error) => this.failed(error, decoderConfig),
    });
    this.decoder.configure(decoderConfig);
    this.decoderConfig = decoderConfig;
    unsupported(null);
  }

  decode(message) {
    const decoder = this.decoder;
    if (!decoder || decoder.state !== "configured") return;
    // (While the decoder starts up, its queue is no sign of a slow tab.)
    const behind = state.framesDecoded > 0 && decoder.decodeQueueSize > MAX_DECODE_QUEUE;
    if (!message.key && (this.waitKey || behind)) {
      if (!this.waitKey) state.keyframeResyncs++;
      this.waitKey = true;
      state.chunksSkipped++;
      return;
    }
    this.waitKey = false;
    // Timestamps must tell the frames apart to find their send time again.
    const timestamp = message.pts ?? (this.sequence += 1000);
    this.sent.set(timestamp, message.sent);
    if (this.sent.size > 256) this.sent.delete(this.sent.keys().next().value);
    if (state.firstChunkKey === null) state.firstChunkKey = message.key;
    state.chunksDecoded++;
    decoder.decode(new EncodedVideoChunk({
      type: message.key ? "key" : "delta", timestamp, data: message.payload,
    }));
  }

  failed(error, decoderConfig) {
    state.decoderErrors++;
    console.error("VideoDecoder:", error);
    // A closed decoder cannot be reused: make a new one, start at a keyframe.
    this.decoder = new VideoDecoder({
      output: (frame) => this.draw(frame),
      error: (next) => this.failed(next, decoderConfig),
    });
    this.decoder.configure(decoderConfig);
    this.waitKey = true;
  }

  draw(frame) {
    const canvas = this.canvas;
    if (canvas.width !== frame.displayWidth || canvas.height !== frame.displayHeight) {
      canvas.width = frame.displayWidth;
      canvas.height = frame.displayHeight;
    }
    this.context.drawImage(frame, 0, 0, canvas.width, canvas.height);
    const sent = this.sent.get(frame.timestamp);
    frame.close();
    const drawn = now();
    // Milliseconds from the start of the page's navigation to its first picture.
    if (state.framesDecoded === 0) state.firstFrameMs = performance.now();
    state.framesDecoded++;
    this.rateFrames.push(drawn);
    while (this.rateFrames.length && this.rateFrames[0] < drawn - 2000) this.rateFrames.shift();
    if (sent !== undefined && state.clockOffsetMs !== null) {
      // Drawn (our clock, moved to the server's) minus sent (the server's clock).
      this.latencies.push(drawn + state.clockOffsetMs - sent);
      if (this.latencies.length > LATENCY_SAMPLES) this.latencies.shift();
      state.latencyMs = median(this.latencies);
    }
  }

  describe() {
    if (state.unsupported) return;
    const fps = this.rateFrames.length / 2;
    // The estimate is as good as the clock offset, within half the round
    // trip that measured it; a latency cannot be negative.
    const latency = state.latencyMs === null ? "…"
      : `${Math.max(0, Math.round(state.latencyMs))} ms`;
    const error = state.clockRttMs === null ? ""
      : ` <span class="muted">± ${Math.ceil(state.clockRttMs / 2)} ms</span>`;
    $("video-status").innerHTML =
      `latency <b id="latency">${latency}</b>${error} · ${fps.toFixed(1)} frames/s drawn · ` +
      `${state.framesDecoded} frames · ${state.decoderErrors} decoder errors · ` +
      `${state.keyframeResyncs} keyframe resyncs`;
  }
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

function status(text) {
  if (!state.unsupported) $("video-status").textContent = text;
}

function unsupported(sentence) {
  state.unsupported = sentence;
  const box = $("video-message");
  box.hidden = sentence === null;
  box.textContent = sentence ?? "";
  if (sentence) $("video-status").textContent = "";
}

// -- numbers -------------------------------------------------------------------------------
function bits(value) {
  if (value === null || value === undefined) return "–";
  const units = [["Gbit/s", 1e9], ["Mbit/s", 1e6], ["kbit/s", 1e3]];
  for (const [unit, size] of units) if (value >= size) return `${(value / size).toFixed(2)} ${unit}`;
  return `${Math.round(value)} bit/s`;
}

function shortBits(value) {
  const units = [["G", 1e9], ["M", 1e6], ["k", 1e3]];
  for (const [unit, size] of units) {
    if (value >= size) return `${+(value / size).toPrecision(3)} ${unit}bit/s`;
  }
  return `${Math.round(value)} bit/s`;
}

function bytes(value) {
  const units = [["GB", 1e9], ["MB", 1e6], ["kB", 1e3]];
  for (const [unit, size] of units) if (value >= size) return `${(value / size).toFixed(1)} ${unit}`;
  return `${value} B`;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.floor(seconds);
  const h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60, r = s % 60;
  if (h) return `${h} h ${String(m).padStart(2, "0")} min`;
  if (m) return `${m} min ${String(r).padStart(2, "0")} s`;
  return `${r} s`;
}

function text(id, value) {
  $(id).textContent = value === null || value === undefined || value === "" ? "–" : value;
}

// -- the stats -------------------------------------------------------------------------------
let pageIndex = 0;
let lastServed = null;

async function refresh() {
  const large = (state.stats?.total_clients ?? 0) > MANY_CLIENTS;
  const params = large ? {summary: 1, offset: pageIndex * PAGE_SIZE, limit: PAGE_SIZE} : {};
  try {
    show(await api(STATS_PATH, params));
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (error) {
    $("updated").textContent = "stats unavailable: " + error.message;
  }
}

function show(doc) {
  state.stats = doc;
  const video = doc.video ?? null;
  const source = doc.source ?? null;
  const config = state.config ?? video;
  if (video && !video.codec && video.reason && !state.unsupported) {
    // No config message comes before a first unit, and such a stream has none.
    unsupported(`The page cannot play this stream: ${video.reason}; ` +
                "use one of the player commands below.");
  }
  text("stream-format", video?.format ?? null);
  text("stream-codec", config?.codec ?? (config?.reason ? "cannot play here" : null));
  text("stream-resolution", config?.width ? `${config.width} × ${config.height}` : null);
  text("stream-frame-rate", config?.frame_rate ? `${+config.frame_rate.toFixed(3)} frames/s` : null);
  const bitrateIn = source?.bitrate_in ?? video?.bitrate_in ?? null;
  text("stream-bitrate", bitrateIn === null ? null : bits(bitrateIn));
  text("stream-keyframe-interval",
       video?.keyframe_interval ? `${video.keyframe_interval.toFixed(2)} s` : null);
  const pill = $("state-pill");
  const word = source ? source.state : "serving";
  pill.textContent = word;
  pill.className = "pill " + word.split(" ")[0];
  $("uptime-badge").textContent = source ? "up " + duration(source.uptime) : "";
  $("source-title").hidden = $("source-stats").hidden = !source;
  if (source) {
    text("source-spec", source.spec);
    text("source-state", source.state);
    text("source-uptime", duration(source.uptime));
    text("source-bytes_in", bytes(source.bytes_in));
    text("source-bitrate_in", bits(source.bitrate_in));
    text("source-reconnects", source.reconnects);
    text("source-last_error", source.last_error);
  }
  for (const [key, value] of Object.entries(doc.sink)) {
    const cell = $(key);
    if (cell) cell.textContent = value;
  }
  record(doc, bitrateIn);
  drawCharts();
  showViewers(doc);
  showCommands(doc);
}

function record(doc, bitrateIn) {
  const t = now() / 1000;
  const served = doc.sink.bytes_served + (doc.video?.bytes_served ?? 0);
  let out = null;
  if (lastServed !== null && t > lastServed.t) {
    out = Math.max(0, (served - lastServed.bytes) * 8 / (t - lastServed.t));
  }
  lastServed = {t, bytes: served};
  state.history.push({t, bitrateIn: bitrateIn ?? 0, bitrateOut: out, viewers: doc.total_clients});
  while (state.history.length && state.history[0].t < t - HISTORY_SECONDS) state.history.shift();
}

// -- charts: a line per series over the last minutes, drawn on a canvas -----------------------
function drawCharts() {
  const history = state.history;
  lineChart($("chart-bitrate"), history, [
    {key: "bitrateIn", color: cssColor("--accent")},
    {key: "bitrateOut", color: cssColor("--out")},
  ], shortBits);
  lineChart($("chart-viewers"), history, [{key: "viewers", color: cssColor("--ok")}],
            (v) => String(Math.round(v)), 4);
}

function cssColor(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

function niceCeiling(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (value <= step * power) return step * power;
  return 10 * power;
}

function lineChart(canvas, history, series, label, minimum = 0) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || canvas.width, height = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(width * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, width, height);
  const left = 76, right = 8, top = 8, bottom = 18;
  const plotW = width - left - right, plotH = height - top - bottom;
  let peak = 0;
  for (const sample of history) {
    for (const {key} of series) peak = Math.max(peak, sample[key] ?? 0);
  }
  const ceiling = niceCeiling(Math.max(peak, minimum));
  const end = now() / 1000, start = end - HISTORY_SECONDS;
  const x = (t) => left + ((t - start) / HISTORY_SECONDS) * plotW;
  const y = (v) => top + plotH - (v / ceiling) * plotH;
  g.font = "11px system-ui, sans-serif";
  g.fillStyle = cssColor("--muted");
  g.strokeStyle = "#263140";
  g.lineWidth = 1;
  g.textAlign = "right";
  g.textBaseline = "middle";
  for (let i = 0; i <= 4; i++) {
    const v = (ceiling * i) / 4;
    g.beginPath();
    g.moveTo(left, Math.round(y(v)) + 0.5);
    g.lineTo(left + plotW, Math.round(y(v)) + 0.5);
    g.stroke();
    g.fillText(label(v), left - 6, y(v));
  }
  g.textAlign = "center";
  g.textBaseline = "top";
  for (let minutes = 0; minutes <= HISTORY_SECONDS / 60; minutes++) {
    g.fillText(minutes ? `-${minutes} min` : "now", x(end - minutes * 60), top + plotH + 4);
  }
  g.lineWidth = 2;
  for (const {key, color} of series) {
    g.strokeStyle = color;
    g.beginPath();
    let drawing = false;
    for (const sample of history) {
      const value = sample[key];
      if (value === null || value === undefined) { drawing = false; continue; }
      if (drawing) g.lineTo(x(sample.t), y(value)); else g.moveTo(x(sample.t), y(value));
      drawing = true;
    }
    g.stroke();
  }
}

// -- viewers ------------------------------------------------------------------------------------
function limitsOf(doc, row) {
  const limits = doc.limits ?? {};
  return (row.front === "video" ? limits.video : limits.stream) ?? {soft: null, hard: null};
}

function lagBar(row, limits, scale) {
  const lag = row.lag_buffers;
  const full = limits.hard || scale;
  const bar = document.createElement("div");
  bar.className = "lag";
  bar.title = `${lag} buffers (${bytes(row.lag_bytes)}) waiting` +
    (limits.soft ? `; soft limit ${limits.soft}` : "") +
    (limits.hard ? `; hard limit ${limits.hard}` : "");
  const fill = document.createElement("div");
  fill.className = "bar" + (limits.hard && lag > limits.hard ? " over-hard"
                            : limits.soft && lag > limits.soft ? " over-soft" : "");
  fill.style.width = `${Math.min(100, (lag / full) * 100)}%`;
  bar.append(fill);
  if (limits.soft) {
    const mark = document.createElement("div");
    mark.className = "soft";
    mark.style.left = `${Math.min(100, (limits.soft / full) * 100)}%`;
    bar.append(mark);
  }
  bar.dataset.lag = lag;
  return bar;
}

function cell(className, content) {
  const td = document.createElement("td");
  td.className = className;
  if (content instanceof Node) td.append(content); else td.textContent = content ?? "";
  return td;
}

function showViewers(doc) {
  const rows = doc.clients ?? [];
  const total = doc.total_clients ?? rows.length;
  $("viewer-count").textContent = `${total} connected`;
  const scale = Math.max(1, ...rows.map((row) => row.lag_buffers));
  $("client-rows").replaceChildren(...rows.map((row) => {
    const tr = document.createElement("tr");
    const status = cell("status status-" + row.status, row.status);
    tr.append(cell("address", row.address), cell("front", row.front), status,
              cell("lag", lagBar(row, limitsOf(doc, row), scale)),
              cell("buffers_dropped num", row.buffers_dropped),
              cell("bytes_sent num", bytes(row.bytes_sent)),
              cell("connect_duration num", duration(row.connect_duration)));
    return tr;
  }));
  const summary = doc.summary;
  const box = $("viewer-summary");
  box.hidden = !summary;
  if (summary) {
    const lag = summary.lag_buffers;
    const parts = [
      ...Object.entries(summary.by_front).map(([front, n]) => `${front}: ${n}`),
      ...Object.entries(summary.by_status).map(([name, n]) => `${name}: ${n}`),
      `lag p50 ${lag.p50} · p90 ${lag.p90} · p99 ${lag.p99} · max ${lag.max} buffers`,
      `dropped ${summary.buffers_dropped}`,
      `sent ${bytes(summary.bytes_sent)}`,
    ];
    box.replaceChildren(...parts.map((part) => {
      const span = document.createElement("span");
      span.textContent = part;
      return span;
    }));
  }
  if (doc.offset > 0 && rows.length === 0) pageIndex = 0; // the audience shrank: back to the start
  const paged = doc.offset !== undefined && total > (doc.limit ?? total);
  $("pager").hidden = !paged;
  if (paged) {
    const first = doc.offset + 1, last = doc.offset + rows.length;
    $("page-label").textContent = `${first}–${last} of ${total}`;
    $("page-prev").disabled = doc.offset === 0;
    $("page-next").disabled = last >= total;
  }
}

// -- player commands ------------------------------------------------------------------------------
function reachable(url) {
  // A front listening on every address is reached the way this page was.
  const parsed = new URL(url);
  if (["0.0.0.0", "[::]", "::"].includes(parsed.hostname)) parsed.hostname = location.hostname;
  return parsed.href;
}

function playerCommands(doc) {
  const fronts = doc.fronts ?? {};
  const format = doc.video?.format ?? "mpegts";
  const streamUrl = new URL(document.body.dataset.streamPath ?? "/stream", location.href).href;
  const demux = format === "mpegts" ? "tsdemux ! " : "";
  const decode = format === "raw" ? "decodebin ! videoconvert ! autovideosink"
                                  : "h264parse ! avdec_h264 ! videoconvert ! autovideosink";
  const commands = [];
  if (fronts.tcp) {
    const tcp = new URL(reachable(fronts.tcp.replace("tcp://", "http://")));
    commands.push(["ffplay (TCP)", `ffplay -fflags nobuffer tcp://${tcp.host}`]);
    commands.push(["GStreamer (TCP)", `gst-launch-1.0 tcpclientsrc host=${tcp.hostname} ` +
                   `port=${tcp.port} ! ${demux}${decode}`]);
  }
  commands.push(["ffplay (HTTP)", `ffplay -fflags nobuffer ${streamUrl}`]);
  commands.push(["VLC (HTTP)", `vlc ${streamUrl}`]);
  commands.push(["GStreamer (HTTP)",
                 `gst-launch-1.0 souphttpsrc location=${streamUrl} is-live=true ! ${demux}${decode}`]);
  if (fronts.ws) commands.push(["WebSocket", `${reachable(fronts.ws)}  (one binary message per buffer)`]);
  if (fronts.video) commands.push(["browser video", `${reachable(fronts.video)}  (this page's player)`]);
  return commands;
}

let shownCommands = "";

function showCommands(doc) {
  const commands = playerCommands(doc);
  const key = JSON.stringify(commands);
  if (key === shownCommands) return;
  shownCommands = key;
  $("player-commands").replaceChildren(...commands.map(([label, command]) => {
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.className = "label";
    name.textContent = label;
    const code = document.createElement("code");
    code.textContent = command;
    const copy = document.createElement("button");
    copy.type = "button";
    copy.textContent = "copy";
    copy.onclick = () => navigator.clipboard?.writeText(command.split("  (")[0]);
    li.append(name, code, copy);
    return li;
  }));
}

// The embedded numbers are as old as the page: the first refresh is at once.
async function poll() {
  await refresh();
  const many = (state.stats?.total_clients ?? 0) > MANY_CLIENTS;
  setTimeout(poll, many ? STATS_PERIOD_MANY_MS : STATS_PERIOD_MS);
}

// -- start --------------------------------------------------------------------------------------------
function start() {
  const initial = JSON.parse($("initial-stats").textContent);
  show(initial);
  $("page-prev").onclick = () => { pageIndex = Math.max(0, pageIndex - 1); refresh(); };
  $("page-next").onclick = () => { pageIndex += 1; refresh(); };
  const videoUrl = initial.fronts?.video;
  let viewer = null;
  if (!videoUrl) {
    unsupported("This server sends no video to browsers (no WebSocket front): " +
                "use one of the player commands below.");
  } else if (!("VideoDecoder" in window)) {
    unsupported("This browser has no WebCodecs video decoder, so the stream cannot " +
                "play here: use one of the player commands below.");
  } else {
    viewer = new Viewer(reachable(videoUrl));
    viewer.start();
    window.msinkViewer = viewer;
  }
  syncClock(8).catch((error) => console.warn("clock:", error));
  setInterval(() => syncClock(4).catch(() => {}), CLOCK_PERIOD_MS);
  poll();
  if (viewer) setInterval(() => viewer.describe(), 500);
}

start();
