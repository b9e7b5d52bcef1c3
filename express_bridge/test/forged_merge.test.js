"use strict";
/**
 * `POST /experts/:name?merge=true` with a document that carries forged opinions
 * (tests/corpus/forged_opinions.jsonl), against a real expertd whose consensus
 * needs sentiment and vader: the merged answer holds what the server answered
 * (its checked or recomputed opinions, and `recomputed` saying why), never
 * the document's forged value beside it.
 */

const { describe, it, before, after } = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");
const request = require("supertest");
const { createApp } = require("../src/app");
const { ExpertdClient } = require("../src/rpc");
const { REPO_ROOT, startExpertd } = require("./helpers");

const CORPUS = fs.readFileSync(path.join(REPO_ROOT, "tests", "corpus", "forged_opinions.jsonl"), "utf8")
  .split("\n").filter((line) => line.trim()).map((line) => JSON.parse(line));

describe("?merge=true never copies a forged opinion into its answer", { timeout: 240000 }, () => {
  let server;
  let rpc;
  let app;

  before(async () => {
    server = await startExpertd({ config: path.join(__dirname, "consensus_experts.yaml") });
    rpc = new ExpertdClient({ endpoint: server.endpoint, timeoutMs: 20000 });
    app = createApp({ rpc });
  });

  after(async () => {
    if (rpc) await rpc.close();
    if (server) await server.stop();
  });

  for (const c of CORPUS) {
    it(c.what, async () => {
      const res = await request(app).post("/experts/consensus?merge=true").send(c.doc).expect(200);
      const alone = await request(app).post("/experts/consensus").send(c.doc).expect(200);
      const body = res.body;
      assert.equal(body.text, c.doc.text);
      assert.deepEqual(body.opinions.consensus, alone.body, "the merged consensus is the one asked alone");
      assert.ok(body.opinions.consensus.valence >= -4 && body.opinions.consensus.valence <= 4, JSON.stringify(body));
      for (const [expert, said] of Object.entries(c.recomputed)) {
        // JSON numbers in JavaScript are doubles: 9223372036854775807 comes as 9.22e18.
        const reason = said.replace(/^\w+: \S+ /, "");
        assert.ok(body.recomputed && typeof body.recomputed[expert] === "string" && body.recomputed[expert].includes(reason),
          `recomputed.${expert} should say ${JSON.stringify(reason)}: ${JSON.stringify(body)}`);
        assert.notDeepEqual(body.opinions[expert], c.doc.opinions[expert], `the forged ${expert} was copied in`);
        const check = await request(app).post(`/experts/${expert}`).send({ text: c.doc.text }).expect(200);
        assert.deepEqual(body.opinions[expert], check.body, `opinions.${expert} is the server's own`);
      }
      for (const [expert, carried] of Object.entries(c.doc.opinions || {})) {
        if (expert in c.recomputed || expert === "consensus") continue;
        assert.deepEqual(body.opinions[expert], carried, `a valid carried ${expert} is kept as it came`);
      }
    });
  }

  it("an expert's error on the document is its own status, as without merge", async () => {
    const res = await request(app).post("/experts/consensus?merge=true").send({ title: "no text" }).expect(400);
    assert.equal(res.body.error.name, "InvalidDocument");
  });
});
