// PostGraphile v5 in library mode over punchcard's tables, for benchmarks/peers.py.
//
//   node server.mjs  (DATABASE_URL, JWT_SECRET, PORT, POOL_MAX from the environment)
//
// The amber preset (PostGraphile's defaults) plus the lazy JWT preset: a verified
// Bearer token's claims reach PostgreSQL as `jwt.claims.*` settings, set with
// set_config in the transaction each request runs in, as PostGraphile does by default.
// GET /healthz answers 200 once the schema is built (the harness waits for it).
import { createServer } from "node:http";
import { postgraphile } from "postgraphile";
import { makePgService } from "postgraphile/adaptors/pg";
import { grafserv } from "postgraphile/grafserv/node";
import { PostGraphileAmberPreset } from "postgraphile/presets/amber";
import { PgLazyJWTPreset } from "postgraphile/presets/lazy-jwt";

const { DATABASE_URL, JWT_SECRET, PORT, POOL_MAX } = process.env;

const preset = {
  extends: [PostGraphileAmberPreset, PgLazyJWTPreset],
  pgServices: [
    makePgService({
      connectionString: DATABASE_URL,
      schemas: ["public"],
      poolConfig: { max: Number(POOL_MAX || 20) },
    }),
  ],
  schema: { pgJwtSecret: JWT_SECRET },
  grafserv: { port: Number(PORT), websockets: false, graphiql: false },
  grafast: { explain: false },
};

const pgl = postgraphile(preset);
const serv = pgl.createServ(grafserv);
await pgl.getSchema(); // built before /healthz says ok
const handler = serv.createHandler();
const server = createServer((req, res) => {
  if (req.url === "/healthz") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end('{"status":"ok"}');
    return;
  }
  handler(req, res);
});
server.keepAliveTimeout = 60_000;
server.listen(Number(PORT), "127.0.0.1");
process.on("SIGTERM", () => {
  server.close();
  pgl.release().finally(() => process.exit(0));
});
