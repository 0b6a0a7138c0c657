// `deploy-cml`: what Fine Tuning Studio's deploy_cml_model does (ft/export.py), with our script:
// a CML Model (reused when one of the same name exists), a build of
// scripts/cml_model_predict_script.py that deploys itself, optionally waited for; or a CML
// Application running the server. CML API v2 over plain fetch; request bodies use exactly the
// schema's field names (nvidia_gpus in model requests, nvidia_gpu in application requests): the API
// is a gRPC gateway that may drop an unknown field without a word.

export interface DeployOptions {
  /** scheme + host of CDSW_API_URL; the path is replaced by /api/v2. */
  apiUrl: string;
  apiKey: string;
  project: string;
  name: string;
  description: string;
  model: string;
  adapter?: string;
  genConfig?: string;
  cpu: number;
  memory: number;
  gpus: number;
  replicas: number;
  runtime?: string;
  env: Record<string, string>;
  application: boolean;
  wait: boolean;
  dryRun: boolean;
  /** The predict script's path from the project root (this checkout may be a folder of it). */
  filePath: string;
  /** The Application's launcher, from the project root. */
  appScript: string;
  pollSeconds: number;
  timeoutMinutes: number;
}

export class CmlApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

export interface Planned {
  method: string;
  path: string;
  body?: unknown;
}

export interface DeployResult {
  kind: 'model' | 'application';
  /** The requests sent (or, with dryRun, that would be). */
  requests: Planned[];
  modelId?: string;
  buildId?: string;
  deploymentId?: string;
  applicationId?: string;
  accessKey?: string;
  endpoint?: string;
  status?: string;
  curl?: string;
}

const TEMPLATE_JOB = 'Finetuning_Base_Job';

export function apiBase(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new CmlApiError(`--api-url (CDSW_API_URL) is not a URL: '${url}'`, 0);
  }
  return `${u.protocol}//${u.host}`;
}

/** The Model's endpoint: CML's model service beside the workspace's host. */
export function modelEndpoint(apiUrl: string): string {
  const u = new URL(apiUrl);
  return `${u.protocol}//modelservice.${u.host}/model`;
}

class CmlApi {
  readonly sent: Planned[] = [];
  constructor(
    private readonly base: string,
    private readonly key: string,
  ) {}

  async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    this.sent.push({ method, path, ...(body !== undefined ? { body } : {}) });
    let res: Response;
    try {
      res = await fetch(`${this.base}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${this.key}`,
          accept: 'application/json',
          ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
    } catch (e) {
      throw new CmlApiError(`CML API ${method} ${path}: ${String((e as Error).cause ?? e)}`, 0);
    }
    const text = await res.text();
    if (!res.ok) {
      // grpc-gateway errors: {"code": n, "message": "...", "details": []}; some proxies answer text.
      let message = text.trim();
      try {
        const j = JSON.parse(text) as { message?: string; error?: string };
        message = j.message ?? j.error ?? message;
      } catch {
        // not JSON: the text as it came
      }
      throw new CmlApiError(
        `CML API ${method} ${path} answered ${res.status}: ${message || res.statusText}`,
        res.status,
      );
    }
    return (text ? JSON.parse(text) : {}) as T;
  }
}

function studioEnvironment(o: DeployOptions): Record<string, string> {
  return {
    FINE_TUNING_STUDIO_BASE_MODEL_HF_NAME: o.model,
    ...(o.adapter ? { FINE_TUNING_STUDIO_ADAPTER_LOCATION: o.adapter } : {}),
    ...(o.genConfig ? { FINE_TUNING_STUDIO_GEN_CONFIG_STRING: o.genConfig } : {}),
    ...o.env,
  };
}

/** The runtime of the studio's template job, as the studio picks it: the first job named like it. */
async function templateRuntime(api: CmlApi, project: string): Promise<string> {
  const filter = encodeURIComponent(JSON.stringify({ name: TEMPLATE_JOB }));
  const r = await api.call<{ jobs?: { name?: string; runtime_identifier?: string }[] }>(
    'GET',
    `/api/v2/projects/${project}/jobs?search_filter=${filter}`,
  );
  const job = (r.jobs ?? []).find((j) => j.name?.includes(TEMPLATE_JOB) && j.runtime_identifier);
  if (!job)
    throw new CmlApiError(
      `no job named like '${TEMPLATE_JOB}' with a runtime in project ${project}: pass --runtime <runtime identifier>`,
      0,
    );
  return job.runtime_identifier!;
}

async function poll<T extends { status?: string }>(
  get: () => Promise<T>,
  what: string,
  done: (s: string) => boolean,
  failed: (s: string) => boolean,
  o: DeployOptions,
  log: (line: string) => void,
): Promise<T> {
  const deadline = Date.now() + o.timeoutMinutes * 60_000;
  let last = '';
  for (;;) {
    const v = await get();
    const s = v.status ?? 'unknown';
    if (s !== last) log(`${what}: ${s}`);
    last = s;
    if (done(s)) return v;
    if (failed(s)) throw new CmlApiError(`${what} ended as '${s}'`, 0);
    if (Date.now() > deadline)
      throw new CmlApiError(`${what} was still '${s}' after ${o.timeoutMinutes} min (--timeout)`, 0);
    await new Promise((r) => setTimeout(r, o.pollSeconds * 1000));
  }
}

export async function deploy(o: DeployOptions, log: (line: string) => void = () => {}): Promise<DeployResult> {
  const api = new CmlApi(apiBase(o.apiUrl), o.apiKey);
  const p = `/api/v2/projects/${o.project}`;
  const environment = studioEnvironment(o);
  const runtime =
    o.runtime ?? (o.dryRun ? `<runtime of the job named like ${TEMPLATE_JOB}>` : await templateRuntime(api, o.project));

  if (o.application) {
    const body = {
      project_id: o.project,
      name: o.name,
      subdomain:
        o.name
          .toLowerCase()
          .replace(/[^a-z0-9-]+/g, '-')
          .replace(/^-+|-+$/g, '')
          .slice(0, 63) || 'cml-lora-serve',
      description: o.description,
      script: o.appScript,
      kernel: 'python3',
      cpu: o.cpu,
      memory: o.memory,
      nvidia_gpu: o.gpus,
      environment,
      runtime_identifier: runtime,
      bypass_authentication: false,
    };
    if (o.dryRun)
      return { kind: 'application', requests: [...api.sent, { method: 'POST', path: `${p}/applications`, body }] };
    const app = await api.call<{ id: string; subdomain?: string; status?: string }>('POST', `${p}/applications`, body);
    log(`application ${app.id} created`);
    const final = o.wait
      ? await poll(
          () => api.call<{ status?: string }>('GET', `${p}/applications/${app.id}`),
          `application ${app.id}`,
          (s) => s === 'running',
          (s) => /failed|stopped/.test(s),
          o,
          log,
        )
      : app;
    const host = new URL(o.apiUrl).host;
    return {
      kind: 'application',
      requests: api.sent,
      applicationId: app.id,
      endpoint: `https://${app.subdomain ?? body.subdomain}.${host}`,
      ...(final.status ? { status: final.status } : {}),
    };
  }

  // The model: reused by name, as a redeploy of the same adapter should be.
  const filter = encodeURIComponent(JSON.stringify({ name: o.name }));
  const createModel = { project_id: o.project, name: o.name, description: o.description, disable_authentication: true };
  let model: { id: string; access_key?: string } | undefined;
  if (!o.dryRun) {
    const found = await api.call<{ models?: { id: string; name?: string; access_key?: string }[] }>(
      'GET',
      `${p}/models?search_filter=${filter}`,
    );
    model = (found.models ?? []).find((m) => m.name === o.name);
    if (model) log(`model ${model.id} '${o.name}' exists: a new build of it`);
  }
  const modelId = model?.id ?? '<model id>';
  const build = {
    project_id: o.project,
    model_id: modelId,
    comment: `cml-lora-serve: ${o.model}${o.adapter ? ` + ${o.adapter}` : ''}`,
    file_path: o.filePath,
    function_name: 'api_wrapper',
    kernel: 'python3',
    runtime_identifier: runtime,
    auto_deploy_model: true,
    auto_deployment_config: { cpu: o.cpu, memory: o.memory, nvidia_gpus: o.gpus, environment, replicas: o.replicas },
  };
  if (o.dryRun) {
    const plan: Planned[] = [
      { method: 'GET', path: `${p}/models?search_filter=${filter}` },
      { method: 'POST', path: `${p}/models`, body: createModel },
      { method: 'POST', path: `${p}/models/${modelId}/builds`, body: build },
    ];
    return { kind: 'model', requests: [...api.sent, ...plan] };
  }
  if (!model) {
    model = await api.call<{ id: string; access_key?: string }>('POST', `${p}/models`, createModel);
    log(`model ${model.id} '${o.name}' created`);
  }
  build.model_id = model.id;
  const b = await api.call<{ id: string; status?: string }>('POST', `${p}/models/${model.id}/builds`, build);
  log(`build ${b.id} started (it deploys itself when built)`);
  const result: DeployResult = {
    kind: 'model',
    requests: api.sent,
    modelId: model.id,
    buildId: b.id,
    endpoint: modelEndpoint(o.apiUrl),
    ...(model.access_key ? { accessKey: model.access_key } : {}),
  };
  if (o.wait) {
    const path = `${p}/models/${model.id}/builds/${b.id}`;
    await poll(
      () => api.call<{ status?: string }>('GET', path),
      `build ${b.id}`,
      (s) => s === 'built',
      (s) => s === 'build failed' || s === 'timedout',
      o,
      log,
    );
    const deployments = await poll(
      async () => {
        const r = await api.call<{ model_deployments?: { id: string; status?: string }[] }>(
          'GET',
          `${path}/deployments`,
        );
        const d = r.model_deployments?.[0];
        return { status: d ? 'listed' : 'none yet', d };
      },
      `deployment of build ${b.id}`,
      (s) => s === 'listed',
      () => false,
      o,
      log,
    );
    const d = deployments.d!;
    const final = await poll(
      () => api.call<{ status?: string }>('GET', `${path}/deployments/${d.id}`),
      `deployment ${d.id}`,
      (s) => s === 'deployed',
      (s) => /fail|stopped/.test(s),
      o,
      log,
    );
    result.deploymentId = d.id;
    if (final.status) result.status = final.status;
  }
  if (result.accessKey) {
    const body = JSON.stringify({ accessKey: result.accessKey, request: { prompt: 'Hello' } });
    result.curl = `curl -s ${result.endpoint} -H 'content-type: application/json' -d '${body}'`;
  }
  return result;
}
