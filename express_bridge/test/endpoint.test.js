"use strict";
/**
 * src/endpoint.js answers every case of tests/corpus/endpoints.json exactly as
 * Python's expertd/endpoint.py does (tests/unit/expertd/test_endpoint.py reads
 * the same file): the parsed fields, or the same one-line message.
 */

const { describe, it } = require("node:test");
const assert = require("node:assert/strict");
const { parseEndpoint, EndpointError } = require("../src/endpoint");
const { DEFAULT_ENDPOINT } = require("../src/spec");
const { cases } = require("../../tests/corpus/endpoints.json");

describe("parseEndpoint", () => {
  for (const c of cases) {
    it(`${JSON.stringify(c.text)}${c.binding ? " (binding)" : ""}`, () => {
      if (c.parsed) {
        assert.deepEqual(parseEndpoint(c.text, { binding: Boolean(c.binding) }), c.parsed);
      } else {
        assert.throws(() => parseEndpoint(c.text, { binding: Boolean(c.binding) }), (err) => {
          assert.ok(err instanceof EndpointError);
          assert.equal(err.message, c.error);
          assert.equal(err.message.split(/\r\n|\r|\n|\u2028|\u2029/).length, 1);
          return true;
        });
      }
    });
  }

  it("parses the spec's default endpoint", () => {
    const { transport, port } = parseEndpoint(DEFAULT_ENDPOINT);
    assert.equal(transport, "tcp");
    assert.ok(port > 0);
  });

  it("refuses what is not a string", () => {
    for (const value of [undefined, null, 4242, {}]) assert.throws(() => parseEndpoint(value), EndpointError);
  });
});
