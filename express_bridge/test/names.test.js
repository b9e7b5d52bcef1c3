"use strict";
/**
 * src/names.js answers every case of tests/corpus/expert_names.json exactly as
 * Python's expertd/names.py does (tests/unit/expertd/test_names.py reads the
 * same file): the name and version, or the same one-line message.
 */

const { describe, it } = require("node:test");
const assert = require("node:assert/strict");
const { parseRef, ExpertNameError } = require("../src/names");
const { cases } = require("../../tests/corpus/expert_names.json");

describe("parseRef", () => {
  for (const c of cases) {
    it(JSON.stringify(c.text).slice(0, 60), () => {
      if (c.parsed) {
        assert.deepEqual(parseRef(c.text), c.parsed);
      } else {
        assert.throws(() => parseRef(c.text), (err) => {
          assert.ok(err instanceof ExpertNameError);
          assert.equal(err.message, c.error);
          return true;
        });
      }
    });
  }
});
