// Drives Iterable's official Node library (@iterable/api) against a base URL.
//
//   node iterable.mjs --base-url http://127.0.0.1:PORT --api-key KEY < calls.json
//   node iterable.mjs --defaults      (prints the library's default base URL, sends nothing)
//
// stdin: a JSON list of calls, [{"method": "bulkUpdateUsers", "args": {...}}, ...], run in
// order; an entry {"schema": "TrackBulkEventsParamsSchema", "value": {...}} instead checks a
// payload against one of the library's exported zod schemas and sends nothing. stdout: one JSON object, {"library": {...}, "results": [...]}, where each result is
// {"ok": true, "value": <what the library returned>} or {"ok": false, "error": {...}} with
// the library's own error fields (class name, statusCode, code, msg, params). Only the
// methods below may be called: the ones retl's Iterable writer has counterparts for.
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

const METHODS = new Set([
  "bulkUpdateUsers", // POST /api/users/bulkUpdate
  "trackBulkEvents", // POST /api/events/trackBulk
  "updateUser", // POST /api/users/update
  "deleteUserByEmail", // DELETE /api/users/{email}
  "deleteUserByUserId", // DELETE /api/users/byUserId/{userId}
  "getChannels", // GET /api/channels (retl's connection check)
]);

const { values: opts } = parseArgs({
  options: {
    "base-url": { type: "string", default: process.env.ITERABLE_BASE_URL },
    "api-key": { type: "string", default: process.env.ITERABLE_API_KEY },
    timeout: { type: "string", default: "10000" },
    defaults: { type: "boolean", default: false },
  },
});
if (opts.defaults) {
  // The base URL the library uses when none is configured (no request is sent).
  delete process.env.ITERABLE_BASE_URL;
  process.env.ITERABLE_API_KEY = "probe";
  const { createIterableConfig } = await import("@iterable/api");
  console.log(JSON.stringify({ baseUrl: createIterableConfig().baseUrl }));
  process.exit(0);
}
if (!opts["base-url"] || !opts["api-key"]) {
  console.error("usage: node iterable.mjs --base-url URL --api-key KEY < calls.json");
  process.exit(2);
}

const library = await import("@iterable/api");
const { IterableClient, DEFAULT_USER_AGENT } = library;
const client = new IterableClient({
  apiKey: opts["api-key"],
  baseUrl: opts["base-url"],
  timeout: Number(opts.timeout),
});

function describe(error) {
  const out = { name: error?.constructor?.name ?? typeof error, message: String(error?.message ?? error) };
  for (const key of ["statusCode", "code", "params", "endpoint", "validationError"]) {
    if (error && error[key] !== undefined) out[key] = error[key];
  }
  if (error?.apiResponse) out.msg = error.apiResponse.msg;
  if (error?.rawResponse !== undefined) out.rawResponse = error.rawResponse;
  return out;
}

const calls = JSON.parse(readFileSync(0, "utf8") || "[]");
const results = [];
try {
  for (const { method, args, schema, value } of calls) {
    if (schema !== undefined) {
      // {"schema": "<exported zod schema>", "value": ...}: check a payload against the
      // library's own request types, without sending anything.
      if (!/Schema$/.test(schema) || typeof library[schema]?.safeParse !== "function") {
        results.push({ ok: false, error: { name: "NotAllowed", message: `no schema ${schema}` } });
        continue;
      }
      const parsed = library[schema].safeParse(value);
      results.push(parsed.success ? { ok: true, value: parsed.data } : { ok: false, error: { name: "ZodError", issues: parsed.error.issues } });
      continue;
    }
    if (!METHODS.has(method)) {
      results.push({ ok: false, error: { name: "NotAllowed", message: `method ${method} is not driven here` } });
      continue;
    }
    try {
      const value = args === undefined ? await client[method]() : await client[method](args);
      results.push({ ok: true, value });
    } catch (error) {
      results.push({ ok: false, error: describe(error) });
    }
  }
} finally {
  client.destroy(); // keep-alive agents would hold the process open
}
const defaults = client.client.defaults;
console.log(JSON.stringify({
  library: {
    userAgent: DEFAULT_USER_AGENT,
    baseURL: defaults.baseURL,
    headerNames: Object.keys(defaults.headers).filter((h) => !["common", "delete", "get", "head", "post", "put", "patch"].includes(h)),
  },
  results,
}));
