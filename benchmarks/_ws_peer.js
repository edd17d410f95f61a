// The Node.js `ws` peer of the WebSocket comparison (websocket.py).
//
// `node _ws_peer.js SIZE`: reads SIZE-byte buffers from stdin and sends each
// to every open client (`client.send`, the broadcast of ws's README); prints
// `ws://127.0.0.1:PORT/` once listening. No compression. `ws` comes from the
// benchmark's cache (websocket.py's setup step sets NODE_PATH).
"use strict";

const { WebSocketServer, WebSocket } = require("ws");

const size = Number.parseInt(process.argv[2], 10);
const server = new WebSocketServer({ host: "127.0.0.1", port: 0, perMessageDeflate: false });
server.on("listening", () => {
  process.stdout.write(`ws://127.0.0.1:${server.address().port}/\n`);
});

let pending = [];
let have = 0;
process.stdin.on("data", (chunk) => {
  pending.push(chunk);
  have += chunk.length;
  if (have < size) return;
  let data = Buffer.concat(pending, have);
  let offset = 0;
  for (; offset + size <= data.length; offset += size) {
    const message = data.subarray(offset, offset + size);
    for (const client of server.clients) {
      if (client.readyState === WebSocket.OPEN) client.send(message, { binary: true });
    }
  }
  data = data.subarray(offset);
  pending = data.length ? [data] : [];
  have = data.length;
});
process.stdin.on("end", () => process.exit(0));
