// A Fine Tuning Studio adapter deployed as CML deploys a Model: the project's files (what git does
// not ignore: no node_modules, no build) copied into an empty folder inside a project root, then
// cdsw-build.sh run there, then the predict script run from the project root the way CML's runner
// may run it (no __file__), with the studio's three variables: a Hub id found in the HF cache, and
// the adapter as a path relative to the project root.
import { execFile, execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { modelDir, root } from '../helpers.ts';
import { startFakeHub } from './fake-hub.ts';

const run = promisify(execFile);
const tmp = mkdtempSync(path.join(os.tmpdir(), 'cml-project-'));
const project = path.join(tmp, 'project');
const app = path.join(project, 'cml-lora-serve');
const hub = path.join(tmp, 'hf', 'hub');

/** The replica's Python: the script executed from its source, as a runner that sets no __file__ does. */
const replica = (call: string) => `
import json
path = ${JSON.stringify(path.join(app, 'scripts', 'cml_model_predict_script.py'))}
ns = {"__name__": "cml_model"}
try:
    exec(compile(open(path).read(), path, "exec"), ns)
except RuntimeError as e:
    print(json.dumps({"import_error": str(e)}))
    raise SystemExit(0)
print(json.dumps(${call}))
`;

function studioEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH,
    HOME: path.join(tmp, 'home'),
    HF_HUB_CACHE: hub,
    CACHE_DIR: path.join(tmp, 'cache'),
    THREADS: '1',
    FINE_TUNING_STUDIO_GEN_CONFIG_STRING: '{"do_sample": false, "max_new_tokens": 24}',
    ...extra,
  };
}

describe('as CML deploys it', () => {
  // The copied project holds its own npm install (about 1.1 GB): left behind, every run filled the
  // disk a little more (58 of them had taken 64 GB of this VM's /tmp).
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  beforeAll(async () => {
    // The project's files as CML snapshots them: tracked and untracked files git does not ignore.
    const files = execFileSync('git', ['ls-files', '--cached', '--others', '--exclude-standard', '-z'], {
      cwd: root,
      encoding: 'utf8',
    })
      .split('\0')
      .filter(Boolean);
    for (const f of files) {
      try {
        cpSync(path.join(root, f), path.join(app, f));
      } catch {
        // deleted in the working tree: not in the snapshot either
      }
    }
    expect(readdirSync(app)).not.toContain('node_modules');
    await run('bash', ['cdsw-build.sh'], { cwd: app, timeout: 600_000 });
    // The studio's data/adapters/<name>/ and the base model in the HF cache under a Hub id.
    cpSync(path.join(modelDir('tiny-qa'), 'adapter-peft'), path.join(project, 'data/adapters/qa-adapter'), {
      recursive: true,
    });
    const snapshot = path.join(
      hub,
      'models--tiny-org--tiny-qa',
      'snapshots',
      '0123456789abcdef0123456789abcdef01234567',
    );
    mkdirSync(snapshot, { recursive: true });
    cpSync(path.join(modelDir('tiny-qa'), 'base-hf'), snapshot, { recursive: true });
  }, 600_000);

  it("the studio's variables: a cached Hub id and a project-relative adapter answer as the reference", async () => {
    const { stdout } = await run(
      'python3',
      ['-c', replica('ns["api_wrapper"]({"prompt": "Question: What is the capital of Belithne?\\nAnswer:"})')],
      {
        cwd: project,
        env: studioEnv({
          FINE_TUNING_STUDIO_BASE_MODEL_HF_NAME: 'tiny-org/tiny-qa',
          FINE_TUNING_STUDIO_ADAPTER_LOCATION: 'data/adapters/qa-adapter',
        }),
        timeout: 300_000,
      },
    );
    expect(JSON.parse(stdout.trim().split('\n').at(-1)!)).toBe(' The capital of Belithne is Ulqua!');
  }, 300_000);

  it("a Hub id in no cache is fetched from the Hub (HF_ENDPOINT) at the replica's start; offline, the import fails saying so", async () => {
    const hubServer = await startFakeHub({
      repo: 'tiny-org/remote-qa',
      dir: path.join(modelDir('tiny-qa'), 'base-hf'),
      commit: 'b'.repeat(40),
    });
    try {
      const env = {
        FINE_TUNING_STUDIO_BASE_MODEL_HF_NAME: 'tiny-org/remote-qa',
        FINE_TUNING_STUDIO_ADAPTER_LOCATION: 'data/adapters/qa-adapter',
        HF_ENDPOINT: hubServer.url,
      };
      const offline = await run('python3', ['-c', replica('"imported"')], {
        cwd: project,
        env: studioEnv({ ...env, HF_HUB_OFFLINE: '1' }),
        timeout: 300_000,
      });
      expect(JSON.parse(offline.stdout.trim().split('\n').at(-1)!)).toEqual({
        import_error: expect.stringMatching(
          /^cml-lora-serve could not start: error: base model 'tiny-org\/remote-qa' not found, and HF_HUB_OFFLINE=1 forbids fetching it/,
        ),
      });
      expect(hubServer.requests).toEqual([]);
      const { stdout } = await run(
        'python3',
        ['-c', replica('ns["api_wrapper"]({"prompt": "Question: What is the capital of Belithne?\\nAnswer:"})')],
        { cwd: project, env: studioEnv(env), timeout: 300_000 },
      );
      expect(JSON.parse(stdout.trim().split('\n').at(-1)!)).toBe(' The capital of Belithne is Ulqua!');
      expect(hubServer.unexpected).toEqual([]);
    } finally {
      await hubServer.close();
    }
  }, 300_000);

  it("a start that cannot succeed fails the import, with the server's own reason", async () => {
    const { stdout } = await run('python3', ['-c', replica('"imported"')], {
      cwd: project,
      env: studioEnv({
        FINE_TUNING_STUDIO_BASE_MODEL_HF_NAME: 'tiny-org/tiny-qa',
        FINE_TUNING_STUDIO_ADAPTER_LOCATION: 'data/adapters/missing',
      }),
      timeout: 300_000,
    });
    expect(JSON.parse(stdout.trim().split('\n').at(-1)!)).toEqual({
      import_error: expect.stringMatching(
        new RegExp(
          `^cml-lora-serve could not start: error: adapter location ${path.join(project, 'data/adapters/missing')} does not exist`,
        ),
      ),
    });
  }, 300_000);
});
