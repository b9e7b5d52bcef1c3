"use strict";
/**
 * The page's call view in headless Chromium, against a real expertd serving a
 * two-level chain (consensus needs sentiment and vader) and a real bridge,
 * both with tracing on (spans exported over OTLP/HTTP to a sink in this test,
 * which answers 200 and keeps nothing: the view needs no backend). Asks a few
 * opinions, then in the page: the recent calls are listed, the outcome filter
 * keeps the failed one, a click on a consensus call draws its waterfall (the
 * bridge's and the server's spans, the chain's experts, the shared model
 * call with its batch). Saves docs/calls.png (when UPDATE_SCREENSHOT=1 or it
 * is missing, else in the temp dir).
 */

const { describe, it, before, after } = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const http = require("node:http");
const os = require("node:os");
const path = require("node:path");
const { chromium } = require("playwright-core");
const pino = require("pino");
const { startExpertd, REPO_ROOT } = require("./helpers");

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SCREENSHOT = path.join(REPO_ROOT, "docs", "calls.png");

describe("the call view in headless Chromium", { timeout: 300000 }, () => {
  let sink;
  let server;
  let bridge;
  let context;
  let profile;
  const saved = { ...process.env };

  before(async () => {
    sink = http.createServer((req, res) => req.resume().on("end", () => res.writeHead(200).end()));
    await new Promise((resolve) => sink.listen(0, "127.0.0.1", resolve));
    Object.assign(process.env, {
      OTEL_TRACES_EXPORTER: "otlp",
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${sink.address().port}`,
      OTEL_BSP_SCHEDULE_DELAY: "200",
    });
    server = await startExpertd({ config: path.join(REPO_ROOT, "tests", "tracing_experts.yaml") });
    const { loadConfig } = require("../src/config");
    const { start } = require("../src/server");
    const config = loadConfig({ EXPERTD_ENDPOINT: server.endpoint, PORT: "0", LOG_LEVEL: "silent", ADMIT_MAX_LAG_MS: "0" });
    bridge = await start(config, { logger: pino({ level: "silent" }) });
    profile = fs.mkdtempSync(path.join(os.tmpdir(), "expertd-chromium-"));
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 1200, height: 900 },
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    });
  });

  after(async () => {
    if (context) await context.close();
    if (profile) fs.rmSync(profile, { recursive: true, force: true });
    if (bridge) await bridge.close();
    if (server) await server.stop();
    if (sink) sink.close();
    for (const key of Object.keys(process.env)) if (!(key in saved)) delete process.env[key];
  });

  const post = (url, body) => fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });

  it("lists the last calls, filters them, and draws one call's waterfall", async () => {
    for (const text of ["What a lovely day", "This is awful", "fine, I guess"]) {
      assert.equal((await post(`${bridge.url}/experts/consensus`, { text })).status, 200);
    }
    assert.equal((await post(`${bridge.url}/experts/vader`, { nope: 1 })).status, 400);
    const page = await context.newPage();
    const problems = [];
    page.on("console", (msg) => msg.type() === "error" && problems.push(msg.text()));
    page.on("pageerror", (err) => problems.push(err.message));
    await page.goto(`${bridge.url}/`);
    await page.locator("#calls-table tbody tr").nth(3).waitFor();
    // The failed call alone when only failures are asked for.
    await page.selectOption("#calls-outcome", "error");
    await page.locator("#calls-table tbody tr.failed").first().waitFor();
    assert.equal(await page.locator("#calls-table tbody tr:not(.failed)").count(), 0);
    // The consensus calls, slowest first; click one.
    await page.selectOption("#calls-outcome", "");
    await page.fill("#calls-expert", "consensus");
    await page.selectOption("#calls-sort", "slowest");
    // The table is redrawn once the filtered list arrives: wait for it (on a loaded machine the
    // unfiltered rows, the page's own calls among them, can still be showing).
    await page.waitForFunction(() => document.querySelectorAll("#calls-table tbody tr").length === 3, null, { timeout: 15000 })
      .catch(() => {});
    assert.equal(await page.locator("#calls-table tbody tr").count(), 3);
    await page.locator("#calls-table tbody tr").first().click();
    await page.locator("#waterfall").waitFor({ state: "visible" });
    for (const name of ["POST /experts/:name", "rpc opinion", "expertd opinion", "expert consensus", "expert sentiment", "expert vader", "queue wait sentiment", "model sentiment"]) {
      await page.locator(`.wf-row[data-name="${name}"]`).first().waitFor();
    }
    assert.ok(await page.locator(".wf-row.bridge").count() >= 3, "the bridge's spans");
    assert.ok(await page.locator(".wf-row.server").count() >= 8, "the server's spans");
    assert.match(await page.textContent("#waterfall-batch"), /model sentiment: a batch of \d+ input/);
    // The chain's tree: the experts are indented under the server's call.
    const indent = async (name) => page.locator(`.wf-row[data-name="${name}"] .wf-label`).first().evaluate((n) => parseFloat(n.style.paddingLeft || "0"));
    assert.ok((await indent("expert sentiment")) > (await indent("expertd opinion")));
    assert.ok((await indent("expertd opinion")) > (await indent("POST /experts/:name")));
    const shot = process.env.UPDATE_SCREENSHOT === "1" || !fs.existsSync(SCREENSHOT) ? SCREENSHOT : path.join(os.tmpdir(), "expertd-calls.png");
    await page.locator("#calls-panel").screenshot({ path: shot });
    assert.ok(fs.statSync(shot).size > 10000, `screenshot at ${shot}`);
    assert.deepEqual(problems, []);
  });
});
