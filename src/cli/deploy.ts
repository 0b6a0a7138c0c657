// `deploy-cml`: flags (with CML's session variables as defaults) → src/cml/deploy.ts, then what a
// caller needs: the endpoint, the access key and a curl line.
import { CmlApiError, deploy, type DeployOptions } from '../cml/deploy.ts';

/** The flags as commander hands them over: DeployOptions before env defaults and parsing. */
export interface DeployFlags
  extends Pick<DeployOptions, 'name' | 'cpu' | 'memory' | 'gpus' | 'replicas' | 'filePath' | 'appScript'>,
    Partial<
      Pick<
        DeployOptions,
        | 'apiUrl'
        | 'apiKey'
        | 'project'
        | 'description'
        | 'model'
        | 'adapter'
        | 'genConfig'
        | 'runtime'
        | 'application'
        | 'wait'
        | 'dryRun'
      >
    > {
  /** KEY=VALUE, repeatable. */
  env: string[];
  poll: number;
  timeout: number;
}

export class DeployUsageError extends Error {}

function required(value: string | undefined, what: string): string {
  if (!value) throw new DeployUsageError(`${what} is required`);
  return value;
}

export function deployOptions(f: DeployFlags, env: NodeJS.ProcessEnv = process.env): DeployOptions {
  const vars: Record<string, string> = {};
  for (const kv of f.env) {
    const i = kv.indexOf('=');
    if (i <= 0) throw new DeployUsageError(`--env takes KEY=VALUE, got '${kv}'`);
    vars[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return {
    apiUrl: required(f.apiUrl ?? env.CDSW_API_URL, '--api-url (or CDSW_API_URL)'),
    apiKey: f.dryRun
      ? (f.apiKey ?? env.CDSW_APIV2_KEY ?? '')
      : required(f.apiKey ?? env.CDSW_APIV2_KEY, '--api-key (or CDSW_APIV2_KEY)'),
    project: required(f.project ?? env.CDSW_PROJECT_ID, '--project (or CDSW_PROJECT_ID)'),
    name: f.name,
    description: f.description ?? `cml-lora-serve: ${f.model ?? ''}${f.adapter ? ` + ${f.adapter}` : ''}`,
    model: required(
      f.model ?? env.FINE_TUNING_STUDIO_BASE_MODEL_HF_NAME,
      '--model (or FINE_TUNING_STUDIO_BASE_MODEL_HF_NAME)',
    ),
    ...((f.adapter ?? env.FINE_TUNING_STUDIO_ADAPTER_LOCATION)
      ? { adapter: (f.adapter ?? env.FINE_TUNING_STUDIO_ADAPTER_LOCATION)! }
      : {}),
    ...((f.genConfig ?? env.FINE_TUNING_STUDIO_GEN_CONFIG_STRING)
      ? { genConfig: (f.genConfig ?? env.FINE_TUNING_STUDIO_GEN_CONFIG_STRING)! }
      : {}),
    cpu: f.cpu,
    memory: f.memory,
    gpus: f.gpus,
    replicas: f.replicas,
    ...(f.runtime ? { runtime: f.runtime } : {}),
    env: vars,
    application: f.application === true,
    wait: f.wait === true,
    dryRun: f.dryRun === true,
    filePath: f.filePath,
    appScript: f.appScript,
    pollSeconds: f.poll,
    timeoutMinutes: f.timeout,
  };
}

export async function runDeploy(f: DeployFlags): Promise<void> {
  const o = deployOptions(f);
  try {
    const r = await deploy(o, (line) => console.error(line));
    if (o.dryRun) {
      for (const q of r.requests)
        console.log(`${q.method} ${q.path}${q.body !== undefined ? `\n${JSON.stringify(q.body, null, 2)}` : ''}`);
      return;
    }
    if (r.kind === 'application') {
      console.log(`application: ${r.applicationId}${r.status ? ` (${r.status})` : ''}`);
      if (r.endpoint) console.log(`url: ${r.endpoint} (the playground; POST /predict, /v1/completions)`);
      return;
    }
    console.log(
      `model: ${r.modelId}  build: ${r.buildId}${r.deploymentId ? `  deployment: ${r.deploymentId} (${r.status})` : ' (building; --wait follows it)'}`,
    );
    console.log(`endpoint: ${r.endpoint}`);
    if (r.accessKey) console.log(`access key: ${r.accessKey}`);
    if (r.curl) console.log(r.curl);
  } catch (e) {
    if (e instanceof CmlApiError) throw new DeployUsageError(e.message);
    throw e;
  }
}
