"use strict";
/**
 * "Node outside this repository" (docs/node.md): in an empty temp directory,
 * run the README's recipe line by line (npm init, npm pack of the shim from
 * this checkout, npm pkg set, npm install from the npm registry), save the
 * README's zerorpc script as hello.js, and run it against a real expertd
 * serving the default experts. Needs the npm registry (as `npm ci` does).
 */

const { describe, it, before, after } = require("node:test");
const assert = require("node:assert/strict");
const { execFile } = require("node:child_process");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const { promisify } = require("node:util");
const { startExpertd, REPO_ROOT } = require("./helpers");

const run = promisify(execFile);
const README = path.join(REPO_ROOT, "docs", "node.md");

/** The recipe's shell lines and the Node page's script, from docs/node.md. */
function recipeFromReadme() {
  const text = fs.readFileSync(README, "utf8");
  const marker = text.indexOf("<!-- recipe: node-outside");
  assert.ok(marker > 0, "docs/node.md has the node-outside recipe marker");
  const sh = /```sh\n([\s\S]*?)```/.exec(text.slice(marker));
  assert.ok(sh, "a sh block follows the marker");
  const node = text.search(/^# Node$/m);
  const js = /```js\n([\s\S]*?)```/.exec(text.slice(node));
  assert.ok(node >= 0 && js, "the Node page has a js block");
  // Join continued lines; drop comments after the command.
  const lines = sh[1].replace(/\\\n\s*/g, "").split("\n").map((l) => l.replace(/\s+#.*$/, "")).filter((l) => l.trim());
  return { lines, script: js[1] };
}

describe("Node outside this repository: the recipe of docs/node.md", { timeout: 300000 }, () => {
  let server;
  let tmp;

  before(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "expertd-outside-"));
    server = await startExpertd({ config: path.join(REPO_ROOT, "config", "experts.yaml") });
  });

  after(async () => {
    if (server) await server.stop();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it("works from an empty directory with the registry's packages and the packed shim", async () => {
    const { lines, script } = recipeFromReadme();
    assert.match(lines[0], /^EXPERTD=/, "the recipe starts by naming the checkout");
    const last = lines[lines.length - 1];
    assert.equal(last, "node hello.js");
    // Everything up to `node hello.js`, in one shell, from the empty temp directory.
    const setup = [`EXPERTD=${JSON.stringify(REPO_ROOT)}`, ...lines.slice(1, -1)].join("\n");
    const env = { ...process.env, npm_config_audit: "false", npm_config_fund: "false", npm_config_update_notifier: "false" };
    await run("bash", ["-euo", "pipefail", "-c", setup], { cwd: tmp, env, timeout: 240000, maxBuffer: 16 << 20 });

    const project = path.join(tmp, "hello-expertd");
    const pkg = JSON.parse(fs.readFileSync(path.join(project, "package.json"), "utf8"));
    assert.equal(pkg.dependencies.zerorpc, "0.9.8");
    assert.deepEqual(pkg.overrides, { zeromq: "$zeromq" });
    assert.ok(!fs.existsSync(path.join(project, "node_modules", "zerorpc", "node_modules", "zeromq")), "no zeromq@4 under zerorpc");
    assert.equal(require(path.join(project, "node_modules", "zeromq", "package.json")).version, "5.99.0");

    fs.writeFileSync(path.join(project, "hello.js"), script);
    const { stdout } = await run("node", ["hello.js"], {
      cwd: project,
      env: { ...env, EXPERTD_ENDPOINT: server.endpoint },
      timeout: 60000,
    });
    assert.match(stdout, /valence: -?\d/);
    assert.match(stdout, /label: 'positive'/);
    assert.match(stdout, /id: 1,\s+text: 'I hate Mondays'/);
    assert.match(stdout, /vader: \{/);
    assert.match(stdout, /UnknownExpert - unknown expert 'nosuch'; this server runs: sentiment, genre, vader/);
  });
});
