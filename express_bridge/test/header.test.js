"use strict";
/**
 * The header extension (src/zerorpc_client.js) on the wire: the stock npm
 * zerorpc client, driven through Connection, talks to a raw ZeroMQ ROUTER
 * (zeromq 6, the library under the bridge) that decodes what arrives.
 * The first event of a call carries `expertd_timeout_ms` (the catalogue's
 * headers.deadline.key in expertd/protocol.json); heartbeats keep the stock header.
 */

const { describe, it } = require("node:test");
const assert = require("node:assert/strict");
const zmq = require("zeromq6");
const msgpack = require("msgpack-lite");
const { Connection } = require("../src/connection");
const { TIMEOUT_HEADER } = require("../src/errors");
const { freePort } = require("./helpers");

const silent = { info() {}, warn() {}, debug() {}, error() {} };

describe("expertd_timeout_ms in the zerorpc request header", { timeout: 30000 }, () => {
  it("the call's first event says how long the bridge waits; heartbeats do not; the reply still arrives", async () => {
    assert.equal(TIMEOUT_HEADER, "expertd_timeout_ms");
    const port = await freePort();
    const router = new zmq.Router({ linger: 0 });
    await router.bind(`tcp://127.0.0.1:${port}`);
    const connection = new Connection({ endpoint: `tcp://127.0.0.1:${port}`, timeoutMs: 4000, heartbeatMs: 200, logger: silent });
    try {
      const answer = connection.invoke("opinion", ["vader", { text: "hi" }], 4321);
      const [identity, delimiter, payload] = await router.receive();
      assert.equal(delimiter.length, 0);
      const [header, name, args] = msgpack.decode(payload);
      assert.equal(name, "opinion");
      assert.deepEqual(args, ["vader", { text: "hi" }]);
      assert.equal(header[TIMEOUT_HEADER], 4321);
      assert.equal(header.v, 3);
      assert.ok(header.message_id, "a stock message id");
      assert.equal(header.response_to, undefined, "the first event opens the channel, as in stock zerorpc");

      // The client's heartbeats on the same channel keep the stock header.
      const hb = msgpack.decode((await router.receive())[2]);
      assert.equal(hb[1], "_zpc_hb");
      assert.equal(hb[0][TIMEOUT_HEADER], undefined);
      assert.equal(hb[0].response_to, header.message_id);

      const reply = [{ v: 3, message_id: "reply-1", response_to: header.message_id }, "OK", [{ label: "positive" }]];
      await router.send([identity, Buffer.alloc(0), msgpack.encode(reply)]);
      assert.deepEqual(await answer, { label: "positive" });

      // A second call gets its own timeout.
      connection.invoke("health", [], 1500).catch(() => {});
      let event;
      do event = msgpack.decode((await router.receive())[2]);
      while (event[1] !== "health");
      assert.equal(event[0][TIMEOUT_HEADER], 1500);
    } finally {
      connection.failPending(new Error("test over"));
      connection.close();
      router.close();
    }
  });
});
