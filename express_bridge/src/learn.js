"use strict";
/**
 * `POST /experts/:name/learn`: teach an expert from labelled examples.
 *
 * The body is one document (`{"text": "...", "label": "..."}`), an array of
 * them, or a form (`text=...&label=...`). The answer is the server's
 * `learn(name, docs)` result: `{accepted, refused: [{index, name, message}],
 * stored, applied, applied_at_version, state: {updates, model_version, ...}}`,
 * sent once the examples are durably in the server's feedback log (applied, or
 * applied once `model_version` reaches `applied_at_version`). A call beyond the
 * learner's limits is refused whole, nothing stored: `LearnLimit` (413) or
 * `LearnBacklogFull` (429), statuses from the catalogue. An array is answered 200 with the account of
 * every document; a single document that the server refused is answered with
 * that refusal's own status (from the error catalogue), like any bad request.
 */

const { HttpError, REMOTE_STATUS, jsonType, catalogueError } = require("./errors");
const { ERROR, METHOD } = require("./spec");

const PATH = "/experts/:name/learn";

/**
 * The documents a learn body carries, and whether it was a single one.
 * @param {unknown} body the parsed JSON or form body
 * @returns {{docs: object[], single: boolean}}
 */
function learnDocuments(body) {
  if (Array.isArray(body)) return { docs: body, single: false };
  if (body !== null && typeof body === "object") return { docs: [{ ...body }], single: true }; // forms: null prototype
  throw catalogueError(ERROR.InvalidDocument, `the body must be a labelled document, an array of them, or a form (text, label), got ${jsonType(body)}`);
}

/**
 * Add the learn route to the app through its `route` helper (auth, 405s, metrics labels).
 * @param {Function} route app.js's `route(method, path, options, ...handlers)`
 * @param {object} deps
 * @param {import("./rpc").ExpertdClient} deps.rpc
 * @param {Function} deps.rpcCall app.js's timed call wrapper `(method, fn) => Promise`
 * @param {Function} deps.parsedBody app.js's `parsedBody(req, accepted)`
 * @param {Function[]} deps.parsers the body parsers (JSON, form)
 */
function mountLearn(route, { rpc, rpcCall, parsedBody, parsers }) {
  route("post", PATH, {}, ...parsers, async (req, res) => {
    const body = parsedBody(req, "a labelled JSON document, an array of them (application/json), or a form (text=...&label=...)");
    const { docs, single } = learnDocuments(body);
    const result = await rpcCall(METHOD.learn, () => rpc.call(METHOD.learn, [req.params.name, docs], { trace: req.trace }));
    if (single && result.accepted === 0 && result.refused.length === 1) {
      const { name, message } = result.refused[0];
      throw new HttpError(REMOTE_STATUS[name] || 400, name, message.replace(/^docs\[0\]/, "the document"));
    }
    res.json(result);
  });
}

module.exports = { mountLearn, learnDocuments };
