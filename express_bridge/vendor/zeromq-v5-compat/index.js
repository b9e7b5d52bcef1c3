"use strict";
// zerorpc 0.9.8 requires "zeromq" ^4 (native build, fails on Node 20).
// package.json "overrides" maps that dependency to this folder, which hands
// back zeromq 6's backward-compatible v5 API (prebuilt binaries inside the
// npm package). "zeromq6" is an npm alias of zeromq@6 declared by the bridge.
module.exports = require("zeromq6/v5-compat");
