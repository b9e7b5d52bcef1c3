"use strict";
/**
 * Streaming over HTTP: `POST /experts/:name/stream`, newline-delimited JSON in
 * (application/x-ndjson), newline-delimited JSON out, answered as it goes.
 *
 * Every input line gives exactly one output line, in order, as in the pipe
 * stage (`expertd pipe`):
 *   - a JSON object comes back with `opinions.<name>` (or `errors.<name>`),
 *     as `opinions_batch` answers it;
 *   - a line that is not valid JSON, not an object, nested deeper than
 *     MAX_DEPTH or longer than the per-document limit comes back as
 *     `{"line": N, "error": {"name": "InvalidDocument", "message": "line N: ..."}}`
 *     (an over-long line is never held in memory beyond the limit);
 *   - a blank line comes back blank.
 * There is no limit on the whole stream. Backpressure both ways: the handler
 * reads the lines that have arrived (at most `batchSize` documents), makes one
 * `opinions_batch` call, writes the answers, and waits for the response to
 * drain before it reads more; a client that reads slowly therefore stops the
 * bridge from reading its input, and nothing piles up in memory.
 * A failure of a whole call once the answer has begun (e.g. the server went
 * away) leaves `errors.<name>` = {name, message} in each document of that
 * batch, and the stream goes on.
 */

const { HttpError, toHttpError, jsonType, catalogueError } = require("./errors");
const { ERROR, METHOD } = require("./spec");
const { jsonDepth } = require("./middleware");

/** Media types this route reads. */
const NDJSON_TYPES = ["application/x-ndjson", "application/jsonl", "application/x-jsonlines"];
/** Deepest nesting of arrays and objects accepted in a document. */
const MAX_DEPTH = 64;
const NEWLINE = 0x0a;

/**
 * Splits a byte stream into lines, keeping at most `maxBytes` of any line:
 * the rest of a longer line is dropped and the line is reported with its length.
 */
class LineSplitter {
  /** @param {number} maxBytes longest line kept (without its newline) */
  constructor(maxBytes) {
    this.maxBytes = maxBytes;
    this.number = 0;
    this._parts = [];
    this._kept = 0;
    this._length = 0;
  }

  /**
   * Feed a chunk; returns the lines it completed.
   * @param {Buffer} chunk
   * @returns {{number: number, bytes: Buffer|null, length: number}[]} `bytes` is null for an over-long line
   */
  push(chunk) {
    const lines = [];
    let start = 0;
    for (;;) {
      const end = chunk.indexOf(NEWLINE, start);
      if (end === -1) {
        this._append(chunk.subarray(start));
        return lines;
      }
      this._append(chunk.subarray(start, end));
      lines.push(this._take());
      start = end + 1;
    }
  }

  /** The last line, if the input did not end with a newline. @returns {object|null} */
  end() {
    return this._length > 0 ? this._take() : null;
  }

  _append(part) {
    this._length += part.length;
    if (this._length <= this.maxBytes + 1) {
      // one byte over the limit is kept so that a trailing \r can be told apart
      this._parts.push(part);
      this._kept += part.length;
    }
  }

  _take() {
    this.number += 1;
    let bytes = this._length <= this.maxBytes + 1 ? Buffer.concat(this._parts, this._kept) : null;
    let length = this._length;
    if (bytes && bytes.length && bytes[bytes.length - 1] === 0x0d) {
      bytes = bytes.subarray(0, bytes.length - 1);
      length -= 1;
    }
    if (bytes && bytes.length > this.maxBytes) bytes = null;
    this._parts = [];
    this._kept = 0;
    this._length = 0;
    return { number: this.number, bytes, length };
  }
}

/**
 * One input line -> `{number, doc}` or `{number, problem}` or `{number, blank: true}`.
 * @param {{number: number, bytes: Buffer|null, length: number}} line
 * @param {number} maxBytes
 * @param {number} [maxDepth] deepest nesting of arrays and objects a line may have (JSON_MAX_DEPTH)
 */
function parseLine(line, maxBytes, maxDepth = MAX_DEPTH) {
  const { number } = line;
  if (line.bytes === null) {
    return { number, problem: `line ${number}: document is ${line.length} bytes, over the limit of ${maxBytes} bytes a line may have (BODY_LIMIT)` };
  }
  const text = line.bytes.toString("utf8").trim();
  if (text === "") return { number, blank: true };
  let value;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return { number, problem: `line ${number}: not valid JSON (${err.message})` };
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    return { number, problem: `line ${number}: not a JSON object (got ${jsonType(value)})` };
  }
  if (jsonDepth(value, maxDepth) > maxDepth) {
    return { number, problem: `line ${number}: nested deeper than ${maxDepth} levels` };
  }
  return { number, doc: value };
}

/** Wait until `res` can take more, or has closed. @returns {Promise<void>} */
function drained(res) {
  return new Promise((resolve) => {
    const done = () => {
      res.off("drain", done);
      res.off("close", done);
      resolve();
    };
    res.on("drain", done);
    res.on("close", done);
  });
}

/**
 * The route handler.
 * @param {object} options
 * @param {import("./rpc").ExpertdClient} options.rpc
 * @param {number} options.maxLineBytes the per-document limit (the bridge's BODY_LIMIT)
 * @param {number} [options.batchSize=256] most documents per `opinions_batch` call
 * @param {(method: string, fn: () => Promise<any>) => Promise<any>} [options.rpcCall] wraps RPC calls (metrics)
 * @returns {import("express").RequestHandler}
 */
function streamHandler({ rpc, maxLineBytes, maxDepth = MAX_DEPTH, batchSize = 256, rpcCall = (m, fn) => fn() }) {
  return async (req, res) => {
    const { name } = req.params;
    if (!req.is(NDJSON_TYPES)) {
      const type = req.headers["content-type"] || "(none)";
      throw new HttpError(415, "UnsupportedMediaType", `content type ${type} is not supported here; send newline-delimited JSON (application/x-ndjson)`);
    }
    if (!rpc.knownExperts.has(name)) {
      const experts = await rpcCall(METHOD.experts, () => rpc.experts());
      const names = experts.map((e) => e.name);
      if (!names.includes(name)) {
        throw catalogueError(ERROR.UnknownExpert, `unknown expert '${name}'; this server runs: ${names.join(", ")}`);
      }
    }

    let started = false;
    const write = (text) => {
      if (!started) {
        started = true;
        res.status(200).set("Content-Type", "application/x-ndjson; charset=utf-8");
      }
      return res.write(text);
    };

    /** Answer some parsed lines, in order; false once the client has gone. */
    async function answer(items) {
      const docs = items.filter((i) => i.doc).map((i) => i.doc);
      let answers = [];
      let failure = null;
      if (docs.length) {
        try {
          answers = await rpcCall(METHOD.opinions_batch, () => rpc.call(METHOD.opinions_batch, [docs, [name]], { trace: req.trace }));
        } catch (err) {
          if (!started) throw err; // nothing written yet: a plain HTTP error
          failure = toHttpError(err);
        }
      }
      let out = "";
      let k = 0;
      for (const item of items) {
        if (item.blank) out += "\n";
        else if (item.problem) out += `${JSON.stringify({ line: item.number, error: { name: ERROR.InvalidDocument, message: item.problem } })}\n`;
        else if (failure) {
          const doc = item.doc;
          const errors = doc.errors && typeof doc.errors === "object" && !Array.isArray(doc.errors) ? doc.errors : {};
          out += `${JSON.stringify({ ...doc, errors: { ...errors, [name]: { name: failure.name, message: failure.message } } })}\n`;
        } else out += `${JSON.stringify(answers[k++])}\n`;
      }
      if (res.destroyed) return false;
      if (!write(out)) await drained(res);
      return !res.destroyed;
    }

    const splitter = new LineSplitter(maxLineBytes);
    let pending = [];
    /** Answer every pending line, at most batchSize documents per call. */
    const flush = async () => {
      while (pending.length) {
        let docs = 0;
        let cut = 0;
        while (cut < pending.length && (docs < batchSize || !pending[cut].doc)) {
          if (pending[cut].doc) docs += 1;
          cut += 1;
        }
        const items = pending.slice(0, cut);
        pending = pending.slice(cut);
        if (!(await answer(items))) return false;
      }
      return true;
    };

    try {
      for await (const chunk of req) {
        for (const line of splitter.push(chunk)) pending.push(parseLine(line, maxLineBytes, maxDepth));
        if (!(await flush())) return;
      }
    } catch (err) {
      if (req.destroyed || res.destroyed) return; // the client went away mid-stream
      throw err;
    }
    const last = splitter.end();
    if (last) pending.push(parseLine(last, maxLineBytes, maxDepth));
    if (!(await flush())) return;
    if (!started) {
      res.status(200).set("Content-Type", "application/x-ndjson; charset=utf-8");
    }
    res.end();
  };
}

module.exports = { streamHandler, LineSplitter, parseLine, NDJSON_TYPES, MAX_DEPTH };
