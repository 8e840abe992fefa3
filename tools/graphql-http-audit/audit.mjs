// graphql-http's server audit (https://github.com/graphql/graphql-http) against a running
// GraphQL endpoint: `node audit.mjs http://127.0.0.1:8000/graphql`.
//
// Prints one line per audit that did not pass, then a JSON summary line
// {"ok": n, "notice": n, "warn": n, "error": n, "failed": [...]} on stdout (the last line),
// and exits 1 if any audit is a warning or an error (0 otherwise). The audits send
// `{ __typename }`-style documents without credentials, so they run unauthenticated.
import { auditServer } from 'graphql-http';

const url = process.argv[2];
if (!url) {
  console.error('usage: node audit.mjs <url of the GraphQL endpoint>');
  process.exit(2);
}

const results = await auditServer({ url });
const counts = { ok: 0, notice: 0, warn: 0, error: 0 };
const failed = [];
for (const result of results) {
  counts[result.status] += 1;
  if (result.status !== 'ok') {
    let body = '';
    try {
      body = (await result.response.text()).slice(0, 300);
    } catch {
      // the body was already read by the audit
    }
    failed.push({ id: result.id, name: result.name, status: result.status, reason: result.reason, body });
    console.log(`${result.status.toUpperCase()} ${result.id} ${result.name}: ${result.reason} ${body}`);
  }
}
console.log(JSON.stringify({ total: results.length, ...counts, failed }));
process.exit(counts.warn || counts.error ? 1 : 0);
