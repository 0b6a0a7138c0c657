// A stand-in for a CML workspace's API v2 on a loopback port (no CML can be reached here). Every
// request body is checked against the schema pages in cml-api/ (the cmlapi client's docs): a field
// they do not list, a value of another type, or a path id that the body contradicts is answered 400
// and recorded, as is a request the API does not have; answers are checked against the same pages.
// Builds and deployments walk through statuses on each GET, ending as the scenario says.
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const schemaDir = path.join(path.dirname(fileURLToPath(import.meta.url)), 'cml-api');

type Field =
  | { kind: 'str' | 'bool' | 'int' | 'float' | 'datetime' | 'map' | 'strlist' }
  | { kind: 'object' | 'list'; of: string };

function schema(name: string): Map<string, Field> | null {
  let text: string;
  try {
    text = readFileSync(path.join(schemaDir, `${name}.md`), 'utf8');
  } catch {
    return null; // a type whose page is not here (ShortUser, ApplicationStatus): not checked
  }
  const fields = new Map<string, Field>();
  for (const line of text.split('\n')) {
    const m = /^\*\*(\w+)\*\* \| (.+?) \|/.exec(line);
    if (!m) continue;
    const t = m[2]!.trim();
    const ref = /^\[\*\*(list\[)?(\w+)\]?\*\*\]/.exec(t);
    if (ref) fields.set(m[1]!, { kind: ref[1] ? 'list' : 'object', of: ref[2]! });
    else if (t === '**str**') fields.set(m[1]!, { kind: 'str' });
    else if (t === '**bool**') fields.set(m[1]!, { kind: 'bool' });
    else if (t === '**int**') fields.set(m[1]!, { kind: 'int' });
    else if (t === '**float**') fields.set(m[1]!, { kind: 'float' });
    else if (t === '**datetime**') fields.set(m[1]!, { kind: 'datetime' });
    else if (t === '**dict(str, str)**') fields.set(m[1]!, { kind: 'map' });
    else if (t === '**list[str]**') fields.set(m[1]!, { kind: 'strlist' });
    else throw new Error(`${name}.md: type ${t} of ${m[1]} is not understood by the fake`);
  }
  return fields;
}

/** What is wrong with `v` as a `type`, field by field (empty when nothing is). */
export function violations(type: string, v: unknown, at = type): string[] {
  const fields = schema(type);
  if (!fields) return [];
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return [`${at}: not an object`];
  const out: string[] = [];
  for (const [k, value] of Object.entries(v)) {
    const f = fields.get(k);
    const here = `${at}.${k}`;
    if (!f) {
      out.push(`${here}: no such field in ${type}`);
      continue;
    }
    const ok =
      f.kind === 'str' || f.kind === 'datetime'
        ? typeof value === 'string'
        : f.kind === 'bool'
          ? typeof value === 'boolean'
          : f.kind === 'int'
            ? Number.isInteger(value) || (typeof value === 'string' && /^-?\d+$/.test(value)) // int64 comes as a string
            : f.kind === 'float'
              ? typeof value === 'number'
              : f.kind === 'map'
                ? value !== null &&
                  typeof value === 'object' &&
                  !Array.isArray(value) &&
                  Object.values(value).every((x) => typeof x === 'string')
                : f.kind === 'strlist'
                  ? Array.isArray(value) && value.every((x) => typeof x === 'string')
                  : true;
    if (!ok) out.push(`${here}: ${JSON.stringify(value)} is not ${f.kind}`);
    if (f.kind === 'object') out.push(...violations(f.of, value, here));
    if (f.kind === 'list') {
      if (!Array.isArray(value)) out.push(`${here}: not a list`);
      else for (const [i, x] of value.entries()) out.push(...violations(f.of, x, `${here}[${i}]`));
    }
  }
  return out;
}

export interface FakeCmlOptions {
  key: string;
  project: string;
  /** Jobs in the project (the studio's template job carries the runtime). */
  jobs: { name: string; runtime_identifier: string }[];
  /** Models that already exist. */
  models?: { id: string; name: string; access_key: string }[];
  /** How builds end: statuses walked one per GET. */
  buildWalk: string[];
  deploymentWalk: string[];
  applicationWalk?: string[];
}

export interface FakeCml {
  url: string;
  /** Requests refused as not matching the API or its schema, with why. */
  violations: string[];
  /** Every request: method, path and body. */
  requests: { method: string; path: string; body?: unknown }[];
  close(): Promise<void>;
}

export async function startFakeCml(o: FakeCmlOptions): Promise<FakeCml> {
  const bad: string[] = [];
  const requests: FakeCml['requests'] = [];
  const models = [...(o.models ?? [])];
  const builds = new Map<
    string,
    { modelId: string; step: number; body: Record<string, unknown>; deployment?: { id: string; step: number } }
  >();
  const apps = new Map<string, { step: number; body: Record<string, unknown> }>();
  let n = 0;
  const id = (prefix: string) => `${prefix}-${++n}`;

  const server: Server = createServer((req, res) => {
    let raw = '';
    req.on('data', (d: Buffer) => (raw += d.toString()));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://cml');
      const body = raw ? (JSON.parse(raw) as Record<string, unknown>) : undefined;
      requests.push({ method: req.method!, path: url.pathname + url.search, ...(body ? { body } : {}) });
      const send = (status: number, v: unknown, type?: string) => {
        if (type && status < 300) bad.push(...violations(type, v).map((x) => `our answer ${x}`));
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(v));
      };
      // grpc-gateway's error shape
      const refuse = (status: number, message: string) => {
        bad.push(`${req.method} ${url.pathname}: ${message}`);
        send(status, { code: status === 404 ? 5 : 3, message, details: [] });
      };
      if (req.headers.authorization !== `Bearer ${o.key}`)
        return send(401, { code: 16, message: 'Unauthorized', details: [] });
      const check = (type: string, ids: Record<string, string>) => {
        const v = violations(type, body);
        for (const [k, want] of Object.entries(ids)) {
          if (body?.[k] !== undefined && body[k] !== want)
            v.push(`${type}.${k}: ${JSON.stringify(body[k])} but the path says ${want}`);
        }
        if (v.length) refuse(400, v.join('; '));
        return v.length === 0;
      };
      const parts = url.pathname.split('/').filter(Boolean); // api v2 projects {p} ...
      if (parts[0] !== 'api' || parts[1] !== 'v2' || parts[2] !== 'projects' || parts[3] !== o.project)
        return refuse(404, `no such path ${url.pathname}`);
      const rest = parts.slice(4);
      const p = o.project;
      const m = req.method;
      if (m === 'GET' && rest.join('/') === 'jobs') {
        const filter = JSON.parse(url.searchParams.get('search_filter') ?? '{}') as { name?: string };
        const jobs = o.jobs
          .filter((j) => !filter.name || j.name.includes(filter.name))
          .map((j, i) => ({
            id: `job-${i}`,
            name: j.name,
            runtime_identifier: j.runtime_identifier,
            kernel: 'python3',
          }));
        return send(200, { jobs, next_page_token: '' }, 'ListJobsResponse');
      }
      if (rest[0] === 'models' && rest.length === 1) {
        if (m === 'GET') {
          const filter = JSON.parse(url.searchParams.get('search_filter') ?? '{}') as { name?: string };
          return send(
            200,
            { models: models.filter((x) => !filter.name || x.name.includes(filter.name)), next_page_token: '' },
            'ListModelsResponse',
          );
        }
        if (m === 'POST' && check('CreateModelRequest', { project_id: p })) {
          const model = {
            id: id('model'),
            name: String(body!.name),
            access_key: `key-${n}`,
            auth_enabled: body!.disable_authentication !== true,
          };
          models.push(model);
          return send(200, model, 'Model');
        }
        return;
      }
      if (rest[0] === 'models' && rest[2] === 'builds') {
        const modelId = rest[1]!;
        if (!models.some((x) => x.id === modelId)) return refuse(404, `no model ${modelId}`);
        if (rest.length === 3 && m === 'POST') {
          if (!check('CreateModelBuildRequest', { project_id: p, model_id: modelId })) return;
          const b = { modelId, step: 0, body: body! };
          const bid = id('build');
          builds.set(bid, b);
          return send(
            200,
            {
              id: bid,
              model_id: modelId,
              status: 'pending',
              file_path: String(body!.file_path),
              function_name: String(body!.function_name),
            },
            'ModelBuild',
          );
        }
        const b = builds.get(rest[3] ?? '');
        if (!b || b.modelId !== modelId) return refuse(404, `no build ${rest[3]}`);
        if (rest.length === 4 && m === 'GET') {
          const status = o.buildWalk[Math.min(b.step++, o.buildWalk.length - 1)]!;
          // An auto-deployed build gets its deployment once built.
          if (status === 'built' && b.body.auto_deploy_model === true && !b.deployment)
            b.deployment = { id: id('deployment'), step: 0 };
          return send(200, { id: rest[3], model_id: modelId, status }, 'ModelBuild');
        }
        const cfg = (b.body.auto_deployment_config ?? {}) as Record<string, unknown>;
        const deployment = (status: string) => ({
          id: b.deployment!.id,
          model_id: modelId,
          build_id: rest[3],
          status,
          cpu: cfg.cpu,
          memory: cfg.memory,
          nvidia_gpu: cfg.nvidia_gpus,
          replicas: cfg.replicas,
          environment: JSON.stringify(cfg.environment ?? {}), // a JSON string in answers, a map in requests
        });
        if (rest.length === 5 && rest[4] === 'deployments' && m === 'GET') {
          return send(
            200,
            { model_deployments: b.deployment ? [deployment('pending')] : [], next_page_token: '' },
            'ListModelDeploymentsResponse',
          );
        }
        const d = b.deployment;
        if (rest.length === 6 && rest[4] === 'deployments' && m === 'GET' && d && rest[5] === d.id) {
          return send(
            200,
            deployment(o.deploymentWalk[Math.min(d.step++, o.deploymentWalk.length - 1)]!),
            'ModelDeployment',
          );
        }
        return refuse(404, `no such path ${url.pathname}`);
      }
      if (rest[0] === 'applications') {
        if (rest.length === 1 && m === 'POST') {
          if (!check('CreateApplicationRequest', { project_id: p })) return;
          const aid = id('app');
          apps.set(aid, { step: 0, body: body! });
          return send(
            200,
            { id: aid, name: String(body!.name), subdomain: String(body!.subdomain), status: 'starting' },
            'Application',
          );
        }
        const a = apps.get(rest[1] ?? '');
        if (a && rest.length === 2 && m === 'GET') {
          const walk = o.applicationWalk ?? ['starting', 'running'];
          return send(200, { id: rest[1], status: walk[Math.min(a.step++, walk.length - 1)] }, 'Application');
        }
      }
      return refuse(404, `no such path ${req.method} ${url.pathname}`);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    violations: bad,
    requests,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
