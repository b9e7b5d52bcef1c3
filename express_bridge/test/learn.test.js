"use strict";
/**
 * POST /experts/:name/learn against a REAL expertd with a learning expert:
 * a document, an array, a form; refusals one by one; NotLearnable.
 */

const { describe, it, before, after } = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const request = require("supertest");
const { createApp } = require("../src/app");
const { ExpertdClient } = require("../src/rpc");
const { startExpertd } = require("./helpers");

const CONFIG = `
experts:
  learner:
    expert: expertd.experts.online:OnlineTextExpert
    learn: {max_examples_per_call: 5, max_labels: 10}
  vader:
    expert: expertd.experts.vader:VaderExpert
`;

describe("POST /experts/:name/learn", { timeout: 120000 }, () => {
  let dir;
  let server;
  let rpc;
  let app;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "expertd-learn-"));
    const config = path.join(dir, "experts.yaml"); // its state/ lands in this directory
    fs.writeFileSync(config, CONFIG);
    server = await startExpertd({ config });
    rpc = new ExpertdClient({ endpoint: server.endpoint, timeoutMs: 20000 });
    app = createApp({ rpc });
  });

  after(async () => {
    await rpc.close();
    await server.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("starts knowing nothing", async () => {
    const res = await request(app).post("/experts/learner").send({ text: "a purring cat" });
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, { label: null, known_labels: [], updates: 0 });
  });

  it("learns from one document, an array and a form, and the opinion follows", async () => {
    let res = await request(app).post("/experts/learner/learn").send({ text: "the cat purrs", label: "cats" });
    assert.equal(res.status, 200);
    assert.equal(res.body.accepted, 1);
    assert.deepEqual(res.body.refused, []);
    assert.equal(res.body.state.updates, 1);
    res = await request(app)
      .post("/experts/learner/learn")
      .send([{ text: "the dog barks", label: "dogs" }, { text: "a loyal hound", label: "dogs" }]);
    assert.equal(res.status, 200);
    assert.equal(res.body.accepted, 2);
    assert.equal(res.body.state.updates, 3);
    res = await request(app).post("/experts/learner/learn").type("form").send({ text: "kittens and cats", label: "cats" });
    assert.equal(res.status, 200);
    assert.equal(res.body.state.updates, 4);
    assert.equal(res.body.state.model_version, 4);
    const opinion = await request(app).post("/experts/learner").send({ text: "my cat" });
    assert.equal(opinion.body.label, "cats");
    assert.deepEqual(opinion.body.known_labels, ["cats", "dogs"]);
  });

  it("refuses bad documents one by one in an array", async () => {
    const res = await request(app)
      .post("/experts/learner/learn")
      .send([{ text: "no label" }, { text: "fine", label: "ok" }, "not a document", { text: "x", label: 3 }]);
    assert.equal(res.status, 200);
    assert.equal(res.body.accepted, 1);
    assert.deepEqual(res.body.refused.map((r) => [r.index, r.name]), [[0, "InvalidDocument"], [2, "InvalidDocument"], [3, "InvalidDocument"]]);
    assert.match(res.body.refused[0].message, /docs\[0\] has no target field 'label'/);
  });

  it("answers a single refused document with its catalogue status", async () => {
    const res = await request(app).post("/experts/learner/learn").send({ text: "no label" });
    assert.equal(res.status, 400);
    assert.equal(res.body.error.name, "InvalidDocument");
    assert.match(res.body.error.message, /^the document has no target field 'label'/);
  });

  it("answers a call beyond the learner's limits 413 LearnLimit, storing nothing", async () => {
    const before = (await request(app).post("/experts/learner/learn").send([])).body.state;
    let res = await request(app)
      .post("/experts/learner/learn")
      .send(Array.from({ length: 6 }, (_, i) => ({ text: `cat ${i}`, label: "cats" })));
    assert.equal(res.status, 413);
    assert.equal(res.body.error.name, "LearnLimit");
    assert.match(res.body.error.message, /at most 5 examples per learn call/);
    res = await request(app) // three labels known (cats, dogs, ok): five more make eight of ten
      .post("/experts/learner/learn")
      .send(Array.from({ length: 5 }, (_, i) => ({ text: `thing ${i}`, label: `label ${i}` })));
    assert.equal(res.status, 200);
    assert.equal(res.body.stored, 5);
    assert.equal(res.body.applied, true);
    const after = res.body.state;
    assert.equal(after.model_version, before.model_version + 5);
    res = await request(app)
      .post("/experts/learner/learn")
      .send(Array.from({ length: 5 }, (_, i) => ({ text: `more ${i}`, label: `more ${i}` })));
    assert.equal(res.status, 413);
    assert.equal(res.body.error.name, "LearnLimit");
    assert.match(res.body.error.message, /max_labels/);
    const last = (await request(app).post("/experts/learner/learn").send([])).body.state;
    assert.equal(last.model_version, after.model_version);
    assert.deepEqual(last.limits, { max_labels: 10, max_examples_per_call: 5, max_backlog: 100000 });
  });

  it("answers NotLearnable for an expert that does not learn, UnknownExpert for none", async () => {
    let res = await request(app).post("/experts/vader/learn").send({ text: "hi", label: "x" });
    assert.equal(res.status, 400);
    assert.equal(res.body.error.name, "NotLearnable");
    assert.match(res.body.error.message, /'vader' does not learn/);
    res = await request(app).post("/experts/nobody/learn").send({ text: "hi", label: "x" });
    assert.equal(res.status, 404);
    assert.equal(res.body.error.name, "UnknownExpert");
    res = await request(app).get("/experts/learner/learn");
    assert.equal(res.status, 405);
    res = await request(app).post("/experts/learner/learn").send("42").type("json");
    assert.equal(res.status, 400);
  });
});
