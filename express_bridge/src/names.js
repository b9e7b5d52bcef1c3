"use strict";
/**
 * The one parser of expert names in calls: `NAME` or `NAME@VERSION`.
 *
 * The grammar is protocol.json's `names` (read through spec.js), shared with
 * Python's expertd/names.py; both answer every case of
 * tests/corpus/expert_names.json the same way (test/names.test.js).
 */

const { RAW } = require("./spec");

const SEPARATOR = RAW.names.separator;
const NAME_RE = new RegExp(RAW.names.name);
const VERSION_RE = new RegExp(RAW.names.version);
const MAX_LENGTH = RAW.names.max_length;

/** A name that does not parse; `message` is one line that says why. */
class ExpertNameError extends Error {}

/**
 * `"sentiment"` or `"sentiment@3"` / `"sentiment@canary"` as `{name, version}`
 * (`version` null: the server's routing policy chooses). Throws `ExpertNameError`.
 * @param {string} text
 * @returns {{name: string, version: string|null}}
 */
function parseRef(text) {
  if (typeof text !== "string") {
    throw new ExpertNameError(`an expert name must be a string, got ${typeof text}`);
  }
  const length = [...text].length; // code points, as Python counts
  if (length > MAX_LENGTH) {
    throw new ExpertNameError(`an expert name is at most ${MAX_LENGTH} characters, got ${length}`);
  }
  const at = text.indexOf(SEPARATOR);
  const name = at < 0 ? text : text.slice(0, at);
  if (!NAME_RE.test(name)) {
    throw new ExpertNameError(`${JSON.stringify(text)} is not an expert name (a letter, then letters, digits or _; optionally ${SEPARATOR}VERSION)`);
  }
  if (at < 0) return { name, version: null };
  const version = text.slice(at + SEPARATOR.length);
  if (!VERSION_RE.test(version)) {
    throw new ExpertNameError(`${JSON.stringify(text)}: the version after ${SEPARATOR} must be a number or a label (a letter, then letters, digits, _ or -)`);
  }
  return { name, version: /^[0-9]+$/.test(version) ? BigInt(version).toString() : version };
}

module.exports = { parseRef, ExpertNameError, SEPARATOR };
