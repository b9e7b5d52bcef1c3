"use strict";
/**
 * The page in a real browser: headless Debian Chromium driven by
 * playwright-core, against a real bridge (with a token) and a real expertd
 * running the default experts. Loads the page, gives the token, asks an
 * expert, sees the opinion drawn as bars and the stats refresh, opens the
 * API docs (Swagger UI), and checks that the console stayed clean (no
 * errors, no CSP violations). Saves a screenshot (docs/page.png when
 * UPDATE_SCREENSHOT=1 or it is missing, else in the temp dir).
 *
 * CHROMIUM overrides the browser (default /usr/bin/chromium; `make test`
 * installs Debian's chromium when it is missing).
 */

const { describe, it, before, after } = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const { chromium } = require("playwright-core");
const { loadConfig } = require("../src/config");
const { start } = require("../src/server");
const { startExpertd, REPO_ROOT } = require("./helpers");
const pino = require("pino");

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const TOKEN = "page-test-token-1234";
const SCREENSHOT = path.join(__dirname, "..", "docs", "page.png");

describe("the page in headless Chromium", { timeout: 300000 }, () => {
  let server;
  let bridge;
  let context;
  let profile;

  before(async () => {
    server = await startExpertd({ config: path.join(REPO_ROOT, "config", "experts.yaml") });
    const config = loadConfig({ ADMIT_MAX_LAG_MS: "0", EXPERTD_ENDPOINT: server.endpoint, PORT: "0", EXPERTD_HTTP_TOKEN: TOKEN, LOG_LEVEL: "silent" });
    bridge = await start(config, { logger: pino({ level: "silent" }) });
    profile = fs.mkdtempSync(path.join(os.tmpdir(), "expertd-chromium-"));
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 1200, height: 760 },
      args: [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
      ],
    });
  });

  after(async () => {
    if (context) await context.close();
    if (profile) fs.rmSync(profile, { recursive: true, force: true });
    if (bridge) await bridge.close();
    if (server) await server.stop();
  });

  /** A new tab that records console errors, page errors and failed requests. */
  async function openTab() {
    const page = await context.newPage();
    const problems = [];
    page.on("console", (msg) => {
      if (msg.type() === "error" || msg.type() === "warning") problems.push(`console ${msg.type()}: ${msg.text()} (${msg.location().url})`);
    });
    page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
    page.on("requestfailed", (req) => problems.push(`request failed: ${req.url()} ${req.failure() && req.failure().errorText}`));
    return { page, problems };
  }

  /** Console errors other than the 401 of /experts (and /stats, /traces) the page expects before it has the token. */
  const unexpected = (problems) => problems.filter((p) => !/status of 401 .*\/(experts|stats|traces\?[^)]*)\)$/.test(p));

  it("asks for the token, asks an expert, draws the opinion and watches the stats", async () => {
    const { page, problems } = await openTab();
    await page.goto(`${bridge.url}/`);
    // No token yet: the page asks for one.
    await page.locator("#token-panel").waitFor({ state: "visible" });
    await page.fill("#token-input", TOKEN);
    await page.click("#token-form button[type=submit]");
    await page.locator("#token-panel").waitFor({ state: "hidden" });
    assert.equal(await page.evaluate(() => window.sessionStorage.getItem("expertd.token")), TOKEN);
    assert.equal(await page.evaluate(() => window.localStorage.length), 0, "nothing in localStorage");

    await page.waitForFunction(() => document.querySelectorAll("#expert-select option").length >= 3); // every default expert
    // Sentiment: a signed valence bar and a confidence bar, drawn from its schema.
    await page.selectOption("#expert-select", "sentiment");
    await page.fill("#text-input", "What a wonderful day, I could not be happier!");
    await page.click("#ask-button");
    await page.locator('.opinion-box[data-expert="sentiment"] .bar-row[data-key="valence"] .fill.positive').waitFor();

    // Genre: one bar per genre, the best one highlighted.
    await page.selectOption("#expert-select", "genre");
    await page.fill("#text-input", "The plot was dull and the acting was worse, two hours I will never get back.");
    await page.click("#ask-button");
    const box = page.locator('.opinion-box[data-expert="genre"]');
    await box.waitFor();
    assert.equal(await box.locator(".label").textContent(), "movie_review");
    const rows = box.locator(".bar-row");
    assert.equal(await rows.count(), 4, "one bar per genre");
    const best = box.locator('.bar-row.best[data-key="movie_review"] .fill');
    const width = await best.evaluate((node) => node.getBoundingClientRect().width / node.parentElement.getBoundingClientRect().width);
    assert.ok(width > 0.5, `the movie_review bar fills ${width} of its track`);

    // The stats table refreshes by itself and counts both calls.
    await page.waitForFunction(() => {
      const calls = (name) => {
        const row = document.querySelector(`#stats-table tr[data-expert="${name}"]`);
        return row ? Number(row.children[1].textContent) : 0;
      };
      return calls("genre") >= 1 && calls("sentiment") >= 1;
    });
    assert.match(await page.locator("#server-state").textContent(), /server up: \d+ experts/);

    const shot = process.env.UPDATE_SCREENSHOT === "1" || !fs.existsSync(SCREENSHOT) ? SCREENSHOT : path.join(os.tmpdir(), "expertd-page.png");
    fs.mkdirSync(path.dirname(shot), { recursive: true });
    await page.screenshot({ path: shot, fullPage: true });
    assert.ok(fs.statSync(shot).size > 10000, `screenshot at ${shot}`);
    assert.deepEqual(unexpected(problems), []);
    await page.close();
  });

  it("serves Swagger UI from the bridge, over /openapi.json, with no console errors", async () => {
    const { page, problems } = await openTab();
    const external = [];
    page.on("request", (req) => {
      if (!req.url().startsWith(bridge.url) && !req.url().startsWith("data:")) external.push(req.url());
    });
    await page.goto(`${bridge.url}/docs`);
    await page.locator(".opblock").first().waitFor({ timeout: 60000 });
    const paths = await page.locator(".opblock-summary-path").allTextContents();
    for (const p of ["/experts/sentiment", "/experts/genre/batch", "/experts/vader/stream", "/openapi.json"]) {
      assert.ok(paths.some((t) => t.replace(/\u200b/g, "") === p), `${p} in ${paths.join(", ")}`);
    }
    assert.deepEqual(external, [], "nothing fetched from another origin");
    assert.deepEqual(problems, []);
    await page.close();
  });
});
