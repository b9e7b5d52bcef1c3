"use strict";
/**
 * The bridge's contract: an OpenAPI 3.1 document built from the server's
 * `experts()` (each expert's input field and, when it declares one, the JSON
 * Schema of its opinion). `GET /openapi.json` serves it; the experts list is
 * cached for a short while so that a page reload does not cost an RPC call.
 */

const { CATALOGUE } = require("./errors");
const { sharedCall } = require("./shared_call");

const OPENAPI_VERSION = "3.1.0";
const BRIDGE_VERSION = require("../package.json").version;
const { SEPARATOR } = require("./names");
const NDJSON = "application/x-ndjson";

const ERROR_SCHEMA = {
  type: "object",
  required: ["error"],
  properties: {
    error: {
      type: "object",
      required: ["name", "message", "status"],
      properties: {
        name: { type: "string", description: "machine-readable name, e.g. UnknownExpert (see expertd/protocol.json)" },
        message: { type: "string", description: "what went wrong and what to do" },
        status: { type: "integer", minimum: 400, maximum: 599 },
      },
    },
  },
};

/** `errors.<expert>` in a document: why that expert gave no opinion. */
const DOCUMENT_ERROR_SCHEMA = {
  type: "object",
  required: ["name", "message"],
  properties: { name: { type: "string" }, message: { type: "string" } },
};

const REF = (name) => ({ $ref: `#/components/schemas/${name}` });
const JSON_OF = (schema) => ({ "application/json": { schema } });

/** Error responses by status: a description built from the catalogue's names. */
function errorResponses(statuses) {
  const out = {};
  for (const status of statuses) {
    const names = Object.entries(CATALOGUE).filter(([, e]) => e.status === status).map(([n]) => n);
    const local = LOCAL_ERRORS[status] || [];
    const all = [...new Set([...local, ...names])];
    out[String(status)] = {
      description: all.length ? `error: ${all.join(", ")}` : "error",
      content: JSON_OF(REF("Error")),
    };
  }
  out.default = { description: "any other error, in the same shape", content: JSON_OF(REF("Error")) };
  return out;
}

/** Error names the bridge itself answers with (not from the server). */
const LOCAL_ERRORS = {
  400: ["BadRequest", "MalformedJSON"],
  401: ["Unauthorized"],
  403: ["CorsOriginNotAllowed"],
  404: ["NotFound"],
  405: ["MethodNotAllowed"],
  413: ["PayloadTooLarge"],
  415: ["UnsupportedMediaType"],
};

/** A component name for an expert (`Opinion_<name>`), safe for `$ref`. */
function componentName(prefix, name) {
  return `${prefix}_${String(name).replace(/[^A-Za-z0-9._-]/g, "_")}`;
}

/** The schema of one opinion: the expert's own, or any JSON object. */
function opinionSchema(expert) {
  const declared = expert.opinion_schema;
  if (declared && typeof declared === "object" && !Array.isArray(declared)) return declared;
  return { type: "object", description: "this expert does not declare the shape of its opinion" };
}

/** The schema of a document for an expert: an object with its field (any object when it reads the whole document). */
function documentSchema(expert) {
  if (expert.field === null) {
    return {
      type: "object",
      additionalProperties: true,
      description: `the whole JSON document, which expert ${expert.name} reads; it is kept as it came`,
    };
  }
  const field = typeof expert.field === "string" ? expert.field : "text";
  return {
    type: "object",
    required: [field],
    properties: { [field]: { type: "string", description: `the text expert ${expert.name} reads` } },
    additionalProperties: true,
    description: "a JSON document; every other field is kept as it came",
  };
}

/** A document with some experts' opinions and errors added. */
function answeredSchema(experts) {
  return {
    type: "object",
    properties: {
      opinions: {
        type: "object",
        properties: Object.fromEntries(experts.map((e) => [e.name, REF(componentName("Opinion", e.name))])),
      },
      errors: { type: "object", additionalProperties: REF("DocumentError") },
      recomputed: {
        type: "object",
        additionalProperties: { type: "string" },
        description: "why an opinion the document carried was not reused (it failed its expert's check) and was recomputed",
      },
      versions: { type: "object", additionalProperties: { type: "string" }, description: "for each expert with versions, the version that made its opinion" },
    },
  };
}

/** The names a call may give a versioned expert's versions: `NAME@VERSION` and `NAME@LABEL`. */
function versionRefs(e) {
  if (!Array.isArray(e.versions)) return [];
  const refs = [];
  for (const v of e.versions) {
    if (!v || typeof v.version !== "string") continue;
    refs.push(v.version, ...(Array.isArray(v.labels) ? v.labels.filter((l) => typeof l === "string") : []));
  }
  return refs;
}

const SECURITY_NONE = [];

/**
 * Build the OpenAPI document.
 * @param {object[]} experts what the server's `experts()` returned
 * @param {object} [options]
 * @param {boolean} [options.auth=false] the bridge needs a bearer token
 * @param {string} [options.serverUrl] e.g. "http://127.0.0.1:3000" (omit: relative to the document)
 * @returns {object} an OpenAPI 3.1 document
 */
function buildOpenApi(experts, { auth = false, serverUrl } = {}) {
  const list = (Array.isArray(experts) ? experts : []).filter((e) => e && typeof e.name === "string");
  const names = list.flatMap((e) => [e.name, ...versionRefs(e).map((v) => `${e.name}${SEPARATOR}${v}`)]);
  const schemas = {
    Error: ERROR_SCHEMA,
    DocumentError: DOCUMENT_ERROR_SCHEMA,
    Expert: {
      type: "object",
      required: ["name", "version", "description", "field"],
      properties: {
        name: { type: "string" },
        version: { type: "string" },
        description: { type: "string" },
        field: { type: ["string", "null"], description: "the document field the expert reads; null: the whole document" },
        reads: { type: "string", enum: ["field", "document"] },
        metrics: { type: "object" },
        batch: { type: "object" },
        opinion_schema: { type: ["object", "null"], description: "JSON Schema of this expert's opinion, if it declares one" },
        needs: { type: "object", additionalProperties: { type: "string" }, description: "the experts whose opinions this one builds on (a chain), each mapped to the key it reads it under" },
        versions: {
          type: "array",
          description: "the served versions of an expert whose experts-file entry has versions: (call one as NAME@VERSION or NAME@LABEL; NAME alone gets the default)",
          items: {
            type: "object",
            required: ["version", "labels", "default"],
            properties: { version: { type: "string" }, labels: { type: "array", items: { type: "string" } }, default: { type: "boolean" }, metrics: { type: "object" } },
          },
        },
      },
    },
  };
  for (const e of list) {
    schemas[componentName("Opinion", e.name)] = opinionSchema(e);
    schemas[componentName("Document", e.name)] = documentSchema(e);
  }
  const paths = {};
  const publicOp = auth ? { security: SECURITY_NONE } : {};

  paths["/healthz"] = {
    get: {
      operationId: "healthz",
      summary: "The bridge is up and the server answers (never needs the token)",
      tags: ["service"],
      ...publicOp,
      responses: {
        200: {
          description: "ok",
          content: JSON_OF({
            type: "object",
            required: ["status", "server"],
            properties: { status: { const: "ok" }, server: { type: "object" } },
          }),
        },
        503: {
          description: "the server does not answer",
          content: JSON_OF({ type: "object", required: ["status", "error"], properties: { status: { const: "unavailable" }, error: ERROR_SCHEMA.properties.error } }),
        },
      },
    },
  };
  paths["/openapi.json"] = {
    get: {
      operationId: "openapi",
      summary: "This document (never needs the token)",
      tags: ["service"],
      ...publicOp,
      responses: { 200: { description: "OpenAPI 3.1", content: JSON_OF({ type: "object" }) }, ...errorResponses([503]) },
    },
  };
  paths["/experts"] = {
    get: {
      operationId: "listExperts",
      summary: "The server's experts(): name, version, description, field, metrics, batching, opinion schema",
      tags: ["experts"],
      responses: { 200: { description: "the experts", content: JSON_OF({ type: "array", items: REF("Expert") }) }, ...errorResponses([401, 503, 504]) },
    },
  };
  paths["/traces"] = {
    get: {
      operationId: "recentCalls",
      summary: "Recent HTTP calls from the bridge's ring of traces (tracing on only): expert, status, error, duration",
      tags: ["service"],
      parameters: [
        { name: "expert", in: "query", schema: { type: "string" } },
        { name: "outcome", in: "query", schema: { type: "string", enum: ["ok", "error"] } },
        { name: "sort", in: "query", schema: { type: "string", enum: ["recent", "slowest"] } },
        { name: "limit", in: "query", schema: { type: "integer", minimum: 1, maximum: 200 } },
      ],
      responses: { 200: { description: "the calls", content: JSON_OF({ type: "object", properties: { tracing: { type: "boolean" }, calls: { type: "array", items: { type: "object" } } } }) }, ...errorResponses([401]) },
    },
  };
  paths["/trace"] = {
    get: {
      operationId: "oneCall",
      summary: "One recent call's spans, the bridge's and the server's, for its waterfall",
      tags: ["service"],
      parameters: [{ name: "id", in: "query", required: true, schema: { type: "string", pattern: "^[0-9a-f]{32}$" } }],
      responses: { 200: { description: "the spans", content: JSON_OF({ type: "object", properties: { trace_id: { type: "string" }, spans: { type: "array", items: { type: "object" } } } }) }, ...errorResponses([400, 401, 404]) },
    },
  };
  paths["/stats"] = {
    get: {
      operationId: "stats",
      summary: "The server's stats(): per expert calls, errors, items, batch sizes and latency",
      tags: ["service"],
      responses: { 200: { description: "per-expert counters", content: JSON_OF({
        type: "object",
        required: ["experts"],
        properties: {
          uptime_s: { type: "number" },
          experts: {
            type: "object",
            additionalProperties: {
              type: "object",
              properties: {
                calls: { type: "integer" }, errors: { type: "integer" }, items: { type: "integer" }, batches: { type: "integer" },
                mean_batch_size: { type: "number" }, model_seconds: { type: "number" },
                latency_ms: { type: "object", properties: { p50: { type: "number" }, p99: { type: "number" }, mean: { type: "number" } } },
              },
            },
          },
        },
      }) }, ...errorResponses([401, 503, 504]) },
    },
  };
  paths["/metrics"] = {
    get: {
      operationId: "metrics",
      summary: "Prometheus metrics of the bridge",
      tags: ["service"],
      responses: { 200: { description: "Prometheus text format", content: { "text/plain": { schema: { type: "string" } } } }, ...errorResponses([401]) },
    },
  };

  for (const e of list) {
    const opinion = REF(componentName("Opinion", e.name));
    const doc = REF(componentName("Document", e.name));
    const answered = answeredSchema([e]);
    const field = typeof e.field === "string" ? e.field : "text";
    const base = `/experts/${encodeURIComponent(e.name)}`;
    const tags = [`expert ${e.name}`];
    const documentErrors = errorResponses([400, 401, 413, 415, 422, 503, 504]);
    paths[base] = {
      post: {
        operationId: `opinion_${e.name}`,
        summary: `The opinion of ${e.name} on one document`,
        description: e.description || undefined,
        tags,
        parameters: [
          { name: "merge", in: "query", required: false, schema: { type: "boolean" }, description: "answer with the document as the server merged it: the opinion under opinions." + e.name + ", a carried opinion that failed its check replaced and named under recomputed" },
        ],
        requestBody: {
          required: true,
          content: {
            "application/json": { schema: doc },
            "application/x-www-form-urlencoded": {
              schema: e.field === null
                ? { type: "object", additionalProperties: { type: "string" } }
                : { type: "object", required: [field], properties: { [field]: { type: "string" } } },
            },
          },
        },
        responses: {
          200: { description: "the opinion (or, with merge, the document with it)", content: JSON_OF({ anyOf: [opinion, answered] }) },
          ...documentErrors,
        },
      },
    };
    const refs = versionRefs(e);
    if (refs.length) {
      paths[`${base}${SEPARATOR}{version}`] = {
        post: {
          operationId: `opinion_${e.name}_version`,
          summary: `The opinion of one served version of ${e.name} on one document`,
          tags,
          parameters: [
            { name: "version", in: "path", required: true, schema: { type: "string", enum: [...new Set(refs)] }, description: "a served version or a label (see versions in GET /experts)" },
          ],
          requestBody: { required: true, content: { "application/json": { schema: doc } } },
          responses: { 200: { description: "the opinion", content: JSON_OF(opinion) }, ...documentErrors },
        },
      };
    }
    paths[`${base}/batch`] = {
      post: {
        operationId: `batch_${e.name}`,
        summary: `The opinions of ${e.name} on a list of documents, in order (a bad document fails the call)`,
        tags,
        requestBody: { required: true, content: JSON_OF({ type: "array", items: doc }) },
        responses: { 200: { description: "one opinion per document, in order", content: JSON_OF({ type: "array", items: opinion }) }, ...documentErrors },
      },
    };
    paths[`${base}/stream`] = {
      post: {
        operationId: `stream_${e.name}`,
        summary: `Newline-delimited JSON in, newline-delimited JSON out, answered as it goes`,
        description:
          "One output line per input line, in order: a document comes back with opinions." + e.name +
          " (or errors." + e.name + "); a line that is not a JSON object, or is longer than the bridge's BODY_LIMIT, " +
          'comes back as {"line": N, "error": {"name", "message"}}; a blank line comes back blank. ' +
          "No limit on the whole stream.",
        tags,
        requestBody: {
          required: true,
          content: { [NDJSON]: { schema: { type: "string" }, example: `{"id": 1, "${field}": "I love it"}\n{"id": 2, "${field}": "not so much"}\n` } },
        },
        responses: {
          200: { description: "one JSON line per input line", content: { [NDJSON]: { schema: { type: "string" } } } },
          ...errorResponses([400, 401, 415, 503]),
        },
      },
    };
    paths[`${base}/learn`] = {
      post: {
        operationId: `learn_${e.name}`,
        summary: e.learns
          ? `Teach ${e.name}: labelled documents (the target in "${e.target || "label"}"), acknowledged once durably logged`
          : `${e.name} does not learn: answers NotLearnable`,
        tags,
        requestBody: {
          required: true,
          content: {
            "application/json": { schema: { anyOf: [{ type: "object" }, { type: "array", items: { type: "object" } }] } },
            "application/x-www-form-urlencoded": { schema: { type: "object", properties: { [field]: { type: "string" }, label: { type: "string" } } } },
          },
        },
        responses: {
          200: {
            description: "how many examples were accepted and stored, the refusals one by one, whether they are applied yet (if not, they are once state.model_version reaches applied_at_version), and the expert's new state",
            content: JSON_OF({
              type: "object",
              required: ["accepted", "refused", "stored", "applied", "applied_at_version", "state"],
              properties: {
                accepted: { type: "integer" },
                refused: { type: "array", items: { type: "object", properties: { index: { type: "integer" }, name: { type: "string" }, message: { type: "string" } } } },
                stored: { type: "integer" },
                applied: { type: "boolean" },
                applied_at_version: { type: ["integer", "null"] },
                state: { type: "object" },
              },
            }),
          },
          ...errorResponses([400, 401, 404, 413, 415, 429, 503, 504]),
        },
      },
    };
  }

  paths["/opinions"] = {
    post: {
      operationId: "opinions",
      summary: "One document, the opinions of several experts (all when experts is omitted)",
      tags: ["experts"],
      requestBody: {
        required: true,
        content: JSON_OF({
          type: "object",
          required: ["doc"],
          properties: {
            doc: { type: "object", description: "the document" },
            experts: { type: ["array", "null"], items: names.length ? { type: "string", enum: names } : { type: "string" } },
          },
        }),
      },
      responses: {
        200: { description: "the document with opinions (and errors) added", content: JSON_OF(answeredSchema(list)) },
        ...errorResponses([400, 401, 404, 413, 415, 503, 504]),
      },
    },
  };

  const doc = {
    openapi: OPENAPI_VERSION,
    info: {
      title: "expertd HTTP bridge",
      version: BRIDGE_VERSION,
      description:
        "HTTP/JSON in front of the expertd server's experts. Built from the server's experts() when asked: " +
        "one path per expert, with the field it reads and the JSON Schema of its opinion. Errors are " +
        '{"error": {"name", "message", "status"}}.',
    },
    paths,
    components: { schemas },
  };
  if (serverUrl) doc.servers = [{ url: serverUrl }];
  if (auth) {
    doc.components.securitySchemes = { bearer: { type: "http", scheme: "bearer", description: "EXPERTD_HTTP_TOKEN" } };
    doc.security = [{ bearer: [] }];
  }
  return doc;
}

/**
 * `GET /openapi.json`: the document, built from `rpc.experts()` at most every
 * `cacheMs` (a failed call falls back to the last list the server gave).
 * @param {object} options
 * @param {{experts: () => Promise<object[]>}} options.rpc
 * @param {boolean} [options.auth=false]
 * @param {number} [options.cacheMs=2000]
 * @returns {import("express").RequestHandler}
 */
function openApiHandler({ rpc, auth = false, cacheMs = 2000 }) {
  const experts = sharedCall(() => rpc.experts(), { freshMs: cacheMs, staleOnError: true });
  return async (req, res) => {
    res.json(buildOpenApi(await experts(), { auth }));
  };
}

module.exports = { buildOpenApi, openApiHandler, NDJSON };
