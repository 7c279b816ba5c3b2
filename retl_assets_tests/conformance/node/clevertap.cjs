// Drives CleverTap's official Node library (`clevertap`) against a base URL.
//
//   node clevertap.cjs --base-url http://127.0.0.1:PORT --account-id ID --passcode CODE \
//       [--region eu1] < calls.json
//
// The library has no base-URL option: it builds https://{region}.api.clevertap.com/1 from the
// region given to init(). This script reports that endpoint, then points the instance at
// {base-url}/1 by overwriting the one property that holds it (`api.apiEndpoint`); every path,
// header and body is still the library's own.
//
// stdin: a JSON list of calls, [{"method": "upload", "args": [records, options]}, ...], run
// in order. stdout: one JSON object {"library": {...}, "results": [...]}, each result
// {"ok": true, "value": <what the library resolved>} or {"ok": false, "error": "..."}.
// Only the methods below may be called: the ones retl's CleverTap writer has counterparts for.
const { readFileSync } = require("node:fs");
const { parseArgs } = require("node:util");

const METHODS = new Set([
  "upload", // POST /1/upload (profiles and events)
  "delete", // POST /1/delete/profiles.json
  "profile", // GET /1/profile.json (retl's connection check)
]);

const { values: opts } = parseArgs({
  options: {
    "base-url": { type: "string", default: process.env.CLEVERTAP_BASE_URL },
    "account-id": { type: "string", default: process.env.CLEVERTAP_ACCOUNT_ID },
    passcode: { type: "string", default: process.env.CLEVERTAP_PASSCODE },
    region: { type: "string", default: "us1" },
  },
});
if (!opts["base-url"] || !opts["account-id"] || !opts.passcode) {
  console.error("usage: node clevertap.cjs --base-url URL --account-id ID --passcode CODE < calls.json");
  process.exit(2);
}

const CleverTap = require("clevertap");

async function main() {
  const clevertap = CleverTap.init(opts["account-id"], opts.passcode, opts.region);
  const library = {
    regions: CleverTap.REGIONS,
    regionEndpoint: clevertap.api.apiEndpoint,
  };
  clevertap.api.apiEndpoint = `${opts["base-url"].replace(/\/+$/, "")}/1`;

  const calls = JSON.parse(readFileSync(0, "utf8") || "[]");
  const results = [];
  for (const { method, args } of calls) {
    if (!METHODS.has(method)) {
      results.push({ ok: false, error: `method ${method} is not driven here` });
      continue;
    }
    try {
      // The library logs its own validation errors with console.error; keep stdout JSON.
      const value = await clevertap[method](...(args || []));
      results.push({ ok: true, value });
    } catch (error) {
      results.push({ ok: false, error: String(error && error.message ? error.message : error) });
    }
  }
  console.log(JSON.stringify({ library, results }));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
