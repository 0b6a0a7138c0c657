#!/usr/bin/env node
// The container's HEALTHCHECK (Dockerfile): exit 0 when this server's /health answers 200 (model
// loaded, not draining), 1 otherwise. Node's own fetch: the runtime images carry no curl.
const port = process.env.PORT || '8080';
try {
  const res = await fetch(`http://127.0.0.1:${port}/health`, { signal: AbortSignal.timeout(4000) });
  process.exit(res.status === 200 ? 0 : 1);
} catch {
  process.exit(1);
}
