"use strict";
/**
 * CurveZMQ keys for the bridge's zerorpc clients, from the same environment
 * variables the Python clients read:
 *   EXPERTD_SERVER_KEY  the server's public key file (keys/server.key)
 *   EXPERTD_CLIENT_KEY  this client's key pair file (keys/clients/NAME.key_secret);
 *                       without it a throwaway pair is made (a server with
 *                       --authorized-keys refuses it)
 * Files are ZeroMQ certificates as `expertd keygen` writes them.
 *
 * `curveOptions()` returns the zeromq v5-compat socket options (empty when no
 * keys are set); `secureClient(client, options)` sets them on a stock zerorpc
 * Client's socket, which must happen before `client.connect(...)`.
 */

const fs = require("node:fs");
const zmq = require("zeromq"); // the v5-compat shim zerorpc itself uses

/** A key setting that cannot be used; the message names the variable and the file. */
class CurveConfigError extends Error {
  constructor(message) {
    super(message);
    this.name = "CurveConfigError";
  }
}

/**
 * Read `public-key` (and `secret-key`) from a ZeroMQ certificate file.
 * @returns {{publicKey: string, secretKey: string|null}} Z85 strings
 */
function readCertificate(file, variable) {
  let text;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    throw new CurveConfigError(`${variable}=${file}: cannot read it (${err.code || err.message}); make keys with \`expertd keygen\``);
  }
  const field = (name) => {
    const match = text.match(new RegExp(`^\\s*${name}\\s*=\\s*"?([^"\\s]{40})"?\\s*$`, "m"));
    return match ? match[1] : null;
  };
  const publicKey = field("public-key");
  if (!publicKey) throw new CurveConfigError(`${variable}=${file}: no public-key in it; is it a file from \`expertd keygen\`?`);
  return { publicKey, secretKey: field("secret-key") };
}

/**
 * The v5-compat socket options for CURVE, from the environment.
 * @param {NodeJS.ProcessEnv} [env]
 * @returns {{curve_server?: number, curve_serverkey?: string, curve_publickey?: string, curve_secretkey?: string}}
 * @throws {CurveConfigError}
 */
function curveOptions(env = process.env) {
  const serverFile = env.EXPERTD_SERVER_KEY;
  const clientFile = env.EXPERTD_CLIENT_KEY;
  if (!serverFile) {
    if (clientFile) throw new CurveConfigError("EXPERTD_CLIENT_KEY is set but EXPERTD_SERVER_KEY is not: set it to the server's public key file (keys/server.key)");
    return {};
  }
  const server = readCertificate(serverFile, "EXPERTD_SERVER_KEY");
  let pair;
  if (clientFile) {
    const cert = readCertificate(clientFile, "EXPERTD_CLIENT_KEY");
    if (!cert.secretKey) throw new CurveConfigError(`EXPERTD_CLIENT_KEY=${clientFile} holds only a public key; name the *.key_secret file \`expertd keygen\` wrote`);
    pair = { public: cert.publicKey, secret: cert.secretKey };
  } else {
    pair = zmq.curveKeypair();
  }
  // Order matters: libzmq turns CURVE off on curve_server=0 and on again with the keys.
  return { curve_server: 0, curve_serverkey: server.publicKey, curve_publickey: pair.public, curve_secretkey: pair.secret };
}

/**
 * Set CURVE options on a stock zerorpc Client (before it connects).
 * @param {import("zerorpc").Client} client
 * @param {ReturnType<typeof curveOptions>} [options] defaults to curveOptions()
 * @returns {boolean} whether keys were set
 */
function secureClient(client, options = curveOptions()) {
  const entries = Object.entries(options);
  const socket = client._socket._zmqSocket; // zerorpc 0.9.8 keeps the zeromq socket here
  for (const [name, value] of entries) socket.setsockopt(zmq.options[name], value);
  return entries.length > 0;
}

module.exports = { curveOptions, secureClient, readCertificate, CurveConfigError };
