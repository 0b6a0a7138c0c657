// deploy-cml against a stand-in CML API (test/cml/fake-cml.ts) that refuses any request field the
// cmlapi schema pages do not list, or of another type: every body we send is checked there.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { CmlApiError, deploy, type DeployOptions } from '../../src/cml/deploy.ts';
import { root } from '../helpers.ts';
import { startFakeCml, violations, type FakeCml, type FakeCmlOptions } from './fake-cml.ts';

const run = promisify(execFile);
const runtime = 'docker.repository.cloudera.com/cloudera/cdsw/ml-runtime-pbj-jupyterlab-python3.11-cuda:2025.01.1-b8';
let fake: FakeCml | undefined;
afterEach(async () => {
  await fake?.close();
  fake = undefined;
});

async function withFake(o: Partial<FakeCmlOptions> = {}): Promise<FakeCml> {
  fake = await startFakeCml({
    key: 'k',
    project: 'p1',
    jobs: [
      { name: 'Other job', runtime_identifier: 'wrong' },
      { name: 'Finetuning_Base_Job-abc', runtime_identifier: runtime },
    ],
    buildWalk: ['queued', 'pending', 'pushing', 'built'],
    deploymentWalk: ['pending', 'deployed'],
    ...o,
  });
  return fake;
}

const options = (url: string, o: Partial<DeployOptions> = {}): DeployOptions => ({
  apiUrl: `${url}/api/v1`,
  apiKey: 'k',
  project: 'p1',
  name: 'qa-adapter',
  description: 'tiny-qa',
  model: 'tiny-org/tiny-qa',
  adapter: 'data/adapters/qa-adapter',
  genConfig: '{"do_sample": false}',
  cpu: 2,
  memory: 8,
  gpus: 1,
  replicas: 1,
  env: { HF_TOKEN: 'hf_x' },
  application: false,
  wait: true,
  dryRun: false,
  filePath: 'scripts/cml_model_predict_script.py',
  appScript: 'scripts/cml_application.py',
  pollSeconds: 0.01,
  timeoutMinutes: 1,
  ...o,
});

describe('deploy-cml', () => {
  it("the schema check can fail: the deployment answer's name for the GPUs is not the request's", () => {
    expect(violations('CreateModelDeploymentRequest', { nvidia_gpu: 1 })).toEqual([
      'CreateModelDeploymentRequest.nvidia_gpu: no such field in CreateModelDeploymentRequest',
    ]);
    expect(violations('ShortCreateModelDeployment', { environment: 'A=1' })).toEqual([
      'ShortCreateModelDeployment.environment: "A=1" is not map',
    ]);
    expect(violations('ShortCreateModelDeployment', { nvidia_gpus: 1, environment: { A: '1' } })).toEqual([]);
  });

  it('a Model as the studio makes it, with our script, followed to deployed', async () => {
    const f = await withFake();
    const r = await deploy(options(f.url));
    expect(f.violations).toEqual([]);
    expect(r).toMatchObject({
      kind: 'model',
      modelId: 'model-1',
      buildId: 'build-2',
      deploymentId: 'deployment-3',
      status: 'deployed',
      accessKey: 'key-1',
    });
    expect(r.endpoint).toBe(`http://modelservice.${new URL(f.url).host}/model`);
    expect(r.curl).toBe(
      `curl -s ${r.endpoint} -H 'content-type: application/json' -d '{"accessKey":"key-1","request":{"prompt":"Hello"}}'`,
    );
    const build = f.requests.find((q) => q.method === 'POST' && q.path.endsWith('/builds'))!;
    expect(build.body).toEqual({
      project_id: 'p1',
      model_id: 'model-1',
      comment: 'cml-lora-serve: tiny-org/tiny-qa + data/adapters/qa-adapter',
      file_path: 'scripts/cml_model_predict_script.py',
      function_name: 'api_wrapper',
      kernel: 'python3',
      runtime_identifier: runtime,
      auto_deploy_model: true,
      auto_deployment_config: {
        cpu: 2,
        memory: 8,
        nvidia_gpus: 1,
        replicas: 1,
        environment: {
          FINE_TUNING_STUDIO_BASE_MODEL_HF_NAME: 'tiny-org/tiny-qa',
          FINE_TUNING_STUDIO_ADAPTER_LOCATION: 'data/adapters/qa-adapter',
          FINE_TUNING_STUDIO_GEN_CONFIG_STRING: '{"do_sample": false}',
          HF_TOKEN: 'hf_x',
        },
      },
    });
    expect(f.requests.find((q) => q.method === 'POST' && q.path === '/api/v2/projects/p1/models')!.body).toEqual({
      project_id: 'p1',
      name: 'qa-adapter',
      description: 'tiny-qa',
      disable_authentication: true,
    });
  });

  it('a model of the same name is reused: a new build, no new model', async () => {
    const f = await withFake({
      models: [
        { id: 'model-9', name: 'qa-adapter', access_key: 'key-9' },
        { id: 'model-8', name: 'qa-adapter-old', access_key: 'x' },
      ],
    });
    const r = await deploy(options(f.url, { wait: false }));
    expect(r).toMatchObject({ modelId: 'model-9', accessKey: 'key-9' });
    expect(f.requests.filter((q) => q.method === 'POST').map((q) => q.path)).toEqual([
      '/api/v2/projects/p1/models/model-9/builds',
    ]);
    expect(f.violations).toEqual([]);
  });

  it.each([
    [['pending', 'build failed'], "build build-2 ended as 'build failed'"],
    [['pending', 'timedout'], "build build-2 ended as 'timedout'"],
    [['pending'], "build build-2 was still 'pending' after 0.001 min (--timeout)"],
  ])('a build walking %j fails --wait with its status', async (buildWalk, message) => {
    const f = await withFake({ buildWalk });
    await expect(deploy(options(f.url, { timeoutMinutes: 0.001 }))).rejects.toThrow(message);
  });

  it("no template job and no --runtime; a wrong key: the API's own status and message", async () => {
    const f = await withFake({ jobs: [] });
    await expect(deploy(options(f.url))).rejects.toThrow(
      "no job named like 'Finetuning_Base_Job' with a runtime in project p1: pass --runtime <runtime identifier>",
    );
    expect((await deploy(options(f.url, { runtime: 'r1', wait: false }))).modelId).toBe('model-1');
    const err = await deploy(options(f.url, { apiKey: 'wrong' })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CmlApiError);
    expect((err as CmlApiError).message).toMatch(
      /^CML API GET \/api\/v2\/projects\/p1\/jobs\?search_filter=.* answered 401: Unauthorized$/,
    );
  });

  it('an Application, followed to running', async () => {
    const f = await withFake();
    const r = await deploy(options(f.url, { application: true, name: 'QA Playground!' }));
    expect(r).toMatchObject({
      kind: 'application',
      applicationId: 'app-1',
      status: 'running',
      endpoint: `https://qa-playground.${new URL(f.url).host}`,
    });
    expect(f.requests.find((q) => q.method === 'POST')!.body).toMatchObject({
      subdomain: 'qa-playground',
      script: 'scripts/cml_application.py',
      nvidia_gpu: 1,
      kernel: 'python3',
      bypass_authentication: false,
      runtime_identifier: runtime,
    });
    expect(f.violations).toEqual([]);
  });

  it('the command: --dry-run sends nothing and prints the bodies; otherwise the endpoint, key and a curl line', async () => {
    const f = await withFake();
    const cli = (...args: string[]) =>
      run(
        process.execPath,
        [
          'bin/cml-lora-serve.mjs',
          'deploy-cml',
          '--api-url',
          `${f.url}/api/v1`,
          '--project',
          'p1',
          '--name',
          'qa',
          '--model',
          'tiny-org/tiny-qa',
          ...args,
        ],
        { cwd: root, env: { ...process.env, CDSW_APIV2_KEY: 'k' } },
      );
    const dry = await cli('--dry-run', '--env', 'A=1');
    expect(f.requests).toEqual([]);
    expect(dry.stdout).toContain('POST /api/v2/projects/p1/models/<model id>/builds');
    expect(dry.stdout).toContain('"nvidia_gpus": 1');
    const done = await cli('--wait', '--poll', '0.01');
    expect(done.stdout).toBe(
      `model: model-1  build: build-2  deployment: deployment-3 (deployed)\nendpoint: http://modelservice.${new URL(f.url).host}/model\naccess key: key-1\n` +
        `curl -s http://modelservice.${new URL(f.url).host}/model -H 'content-type: application/json' -d '{"accessKey":"key-1","request":{"prompt":"Hello"}}'\n`,
    );
    const bad = await cli('--env', 'nope').catch((e: { code: number; stderr: string }) => e);
    expect(bad).toMatchObject({ code: 1, stderr: "error: --env takes KEY=VALUE, got 'nope'\n" });
    // A poll of 0 would ask the API in a tight loop.
    const spin = await cli('--wait', '--poll', '0').catch((e: { code: number; stderr: string }) => e);
    expect(spin).toMatchObject({ code: 1, stderr: expect.stringContaining('--poll must be a number > 0') });
    expect(f.violations).toEqual([]);
  }, 60_000);
});
