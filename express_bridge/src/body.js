"use strict";
/**
 * Request bodies: JSON, forms, and JSON that was not labelled as JSON.
 *
 * `curl -d '{"text": "hi"}' URL` sends its JSON as
 * `application/x-www-form-urlencoded` (curl's default for -d), and some
 * clients send a body with no Content-Type at all. Such a body is read as JSON
 * when it is JSON: its first non-blank character is `{` or `[`, which begins
 * no sensible form. If it then does not parse, the answer is 400
 * MalformedJSON saying how to label it; a body of either kind that is not
 * JSON is read as a form where the route takes forms, else answered 415 with
 * the same advice.
 */

const express = require("express");
const { HttpError } = require("./errors");

const JSON_TYPES = ["application/json", "application/*+json"];
const FORM_TYPE = "application/x-www-form-urlencoded";
const FORM_PARAMETER_LIMIT = 1000;

/** What a client that meant JSON should do. */
const SEND_JSON_HINT = "send Content-Type: application/json (curl: -H 'Content-Type: application/json' or --json)";

/** Text that starts (after blanks) like a JSON object or array. */
const LOOKS_LIKE_JSON = /^[\s]*[[{]/;

/**
 * True when the request carries a body but no Content-Type.
 * @param {import("express").Request} req
 */
function unlabelledBody(req) {
  if (req.headers["content-type"] !== undefined) return false;
  return req.headers["transfer-encoding"] !== undefined || Number(req.headers["content-length"]) > 0;
}

/**
 * A form body as express.urlencoded({ extended: false }) reads it: a
 * null-prototype object of strings (arrays for repeated names), 413 past
 * FORM_PARAMETER_LIMIT fields.
 * @param {string} text
 * @returns {Record<string, string|string[]>}
 */
function parseForm(text) {
  const form = Object.create(null);
  if (text.length === 0) return form;
  const params = new URLSearchParams(text);
  let count = 0;
  for (const [name, value] of params) {
    if (++count > FORM_PARAMETER_LIMIT) {
      throw new HttpError(413, "PayloadTooLarge", `the form has more than ${FORM_PARAMETER_LIMIT} fields`);
    }
    form[name] = name in form ? [].concat(form[name], value) : value;
  }
  return form;
}

/**
 * The body parsers of a route: JSON (labelled as such), then bodies labelled
 * as forms or not labelled at all, read as JSON when they are JSON.
 * @param {object} options
 * @param {number|string} options.limit the largest body (BODY_LIMIT)
 * @param {boolean} options.forms whether the route takes form bodies
 * @param {import("express").RequestHandler} options.checkJson runs on every JSON body (the depth limit)
 * @returns {import("express").RequestHandler[]}
 */
function bodyParsers({ limit, forms, checkJson }) {
  const labelledJson = express.json({ limit, strict: false, type: JSON_TYPES });
  const other = express.text({ limit, type: (req) => req.is(FORM_TYPE) === FORM_TYPE || unlabelledBody(req) });
  const readOther = (req, res, next) => {
    if (!req.is(FORM_TYPE) && !unlabelledBody(req)) return next();
    if (typeof req.body !== "string") return next();
    const text = req.body;
    const type = req.headers["content-type"] || "no Content-Type";
    if (LOOKS_LIKE_JSON.test(text)) {
      try {
        req.body = JSON.parse(text);
      } catch (err) {
        return next(new HttpError(400, "MalformedJSON", `the body (sent with ${type}) looks like JSON but is not valid JSON: ${err.message}; ${SEND_JSON_HINT}`));
      }
      return checkJson(req, res, next);
    }
    if (forms && req.is(FORM_TYPE)) {
      try {
        req.body = parseForm(text);
      } catch (err) {
        return next(err);
      }
      return next();
    }
    req.body = undefined; // parsedBody answers 415 with the hint
    next();
  };
  return [labelledJson, checkJson, other, readOther];
}

module.exports = { bodyParsers, parseForm, SEND_JSON_HINT, JSON_TYPES, FORM_TYPE };
