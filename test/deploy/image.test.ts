// The Dockerfile, without a Docker engine (none runs here): linted, held to the rules an image for a
// cluster needs (non-root, exec form, a health check, what its build context holds), its build steps
// held to the README's, and the CPU image's file layout served for real: a copy of exactly the files
// its COPY lines take, pruned by its build stage's own script, started by its ENTRYPOINT and CMD with
// its ENV. What this cannot run: the image build itself, and the CUDA stages (nvcc, a GPU).
import { execFileSync, spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { validate } from 'dockerfile-utils';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/cml/config.ts';
import { startServer } from '../../src/server/server.ts';
import { freePort, root } from '../helpers.ts';
import {
  argsOf,
  copiesOf,
  dockerfileText,
  envOf,
  execForm,
  keywordOf,
  type Stage,
  stage,
  stages,
  workdirAt,
} from './dockerfile.ts';

const RUNTIMES = ['cpu', 'cuda'];
const BUILDS: Record<string, string> = { cpu: 'cpu-build', cuda: 'cuda-build' };
const healthcheck = (port: number, script = path.join(root, 'scripts/healthcheck.mjs')) =>
  new Promise<number>((resolve) => {
    const p = spawn(process.execPath, [script], {
      env: { PATH: process.env.PATH, PORT: String(port) },
      stdio: 'ignore',
    });
    p.on('exit', (code) => resolve(code ?? -1));
  });

// .dockerignore as Docker reads it: @balena/dockerignore is a port of Docker's own matcher (a
// CommonJS module whose types declare an ES default export: required, so both agree).
const ignore = createRequire(import.meta.url)('@balena/dockerignore') as typeof import('@balena/dockerignore').default;
const dockerignore = () => ignore().add(readFileSync(path.join(root, '.dockerignore'), 'utf8'));

describe('Dockerfile', () => {
  it('lints clean, and the linter does flag a broken one', () => {
    expect(validate(dockerfileText()).map((d) => `${d.range.start.line + 1}: ${d.message}`)).toEqual([]);
    expect(validate('FROM node:20\nEXPOSE http\nHEALTHCHECK --interval=x CMD true\n').length).toBeGreaterThan(0);
  });

  it.each(RUNTIMES)('%s: a non-root user made with that id, exec form, a health check, on 0.0.0.0 and PORT', (name) => {
    const s = stage(name);
    const user = argsOf(keywordOf(s, 'USER').at(-1)!);
    expect(user).toMatch(/^[1-9]\d*:[1-9]\d*$/); // numeric: runAsNonRoot can check it
    expect(keywordOf(s, 'RUN').map(argsOf).join('\n')).toContain(
      `useradd --uid ${user.split(':')[0]} --gid ${user.split(':')[1]}`,
    );
    for (const k of ['ENTRYPOINT', 'CMD', 'HEALTHCHECK']) expect(execForm(keywordOf(s, k).at(-1)!), k).not.toBeNull();
    expect(execForm(keywordOf(s, 'HEALTHCHECK')[0]!)).toEqual(['node', '/app/scripts/healthcheck.mjs']);
    expect(keywordOf(s, 'HEALTHCHECK')[0]!.getTextContent()).toMatch(/--start-period=\d+m/);
    expect(execForm(keywordOf(s, 'ENTRYPOINT')[0]!)).toEqual(['node', '/app/bin/cml-lora-serve.mjs']);
    const env = envOf(s);
    expect(env.HOST).toBe('0.0.0.0');
    expect(argsOf(keywordOf(s, 'EXPOSE')[0]!)).toBe(env.PORT);
    expect(env.BACKEND).toBe(name); // the CUDA image refuses to start without a GPU, never silently on the CPU
  });

  it('both runtime images are the same server: same files from the context, same ENV but the backend', () => {
    const [cpu, cuda] = RUNTIMES.map((n) => stage(n)) as [Stage, Stage];
    const context = (s: Stage) => copiesOf(s).filter((c) => c.from === null);
    expect(context(cuda)).toEqual(context(cpu));
    const { BACKEND: _a, ...cpuEnv } = envOf(cpu);
    const { BACKEND: _b, ...cudaEnv } = envOf(cuda);
    expect(cudaEnv).toEqual(cpuEnv);
    for (const k of ['USER', 'EXPOSE', 'HEALTHCHECK', 'ENTRYPOINT', 'CMD', 'WORKDIR'])
      expect(
        keywordOf(cuda, k).map((i) => i.getTextContent()),
        k,
      ).toEqual(keywordOf(cpu, k).map((i) => i.getTextContent()));
  });

  it('pins its base images, and installs packages without recommends, clearing the lists', () => {
    const names = new Set(stages().map((s) => s.name));
    for (const s of stages()) {
      if (names.has(s.from)) continue;
      expect(s.from, s.name).toMatch(
        /^[\w./-]+:\$\{NODE_VERSION\}-bookworm(-slim)?$|^[\w./-]+:\$\{CUDA_VERSION\}-(devel|runtime)-ubuntu\$\{UBUNTU_VERSION\}$/,
      );
    }
    const args = argDefaults();
    for (const k of ['NODE_VERSION', 'CUDA_VERSION', 'UBUNTU_VERSION']) expect(args[k], k).toMatch(/^\d+(\.\d+)*$/);
    for (const s of stages())
      for (const run of keywordOf(s, 'RUN')
        .map(argsOf)
        .filter((r) => r.includes('apt-get install'))) {
        expect(run).toContain('--no-install-recommends');
        expect(run).toContain('rm -rf /var/lib/apt/lists/*');
      }
  });

  it('every file it copies from the context exists and is let in by .dockerignore', () => {
    const tracked = execFileSync('git', ['ls-files', '--cached', '--others', '--exclude-standard'], {
      cwd: root,
      encoding: 'utf8',
    })
      .split('\n')
      .filter(Boolean);
    const ig = dockerignore();
    for (const s of stages())
      for (const c of copiesOf(s).filter((x) => x.from === null))
        for (const src of c.sources) {
          const files = tracked.filter((f) => f === src || f.startsWith(`${src.replace(/\/$/, '')}/`));
          expect(files.length, `${s.name}: COPY ${src}`).toBeGreaterThan(0);
          expect(
            files.filter((f) => ig.ignores(f)),
            `${s.name}: COPY ${src}`,
          ).toEqual([]);
        }
    // ...and what it must not send: the installed and built trees, the tests.
    for (const f of [
      'node_modules/express/package.json',
      'build/Release/cml_llama.node',
      'test/helpers.ts',
      'models/tiny-qwen2/x',
    ])
      expect(ig.ignores(f), f).toBe(true);
  });

  it("its build steps are exactly the README's", () => {
    const readme = readFileSync(path.join(root, 'README.md'), 'utf8');
    const block = /```sh\n# The image's build steps[^\n]*\n([\s\S]*?)```/.exec(readme);
    expect(block, "README: a block that starts '# The image's build steps'").not.toBeNull();
    const documented = block![1]!
      .split('\n')
      .map((l) => l.replace(/\s+#.*$/, '').trim())
      .filter(Boolean);
    const args = argDefaults();
    const all = new Set<string>();
    for (const build of Object.values(BUILDS)) {
      const steps = keywordOf(stage(build), 'RUN')
        .map(argsOf)
        .filter((run) => !/^(apt-get|ln) /.test(run)) // the toolchain, not the build
        .map((run) => run.replace(/\$\{(\w+)\}/g, (_, k) => args[k] ?? `\${${k}}`));
      // In the README's order (the prune removes what build:cuda compiles from: it comes after).
      expect(
        documented.filter((l) => steps.includes(l)),
        build,
      ).toEqual(steps);
      for (const x of steps) all.add(x);
    }
    expect(
      documented.filter((l) => !all.has(l)),
      'README steps no stage runs',
    ).toEqual([]);
  });
});

/** The Dockerfile's ARG defaults (global and per stage), quotes dropped. */
function argDefaults(): Record<string, string> {
  const global = dockerfileText().match(/^ARG \S+=\S+$/gm) ?? [];
  const staged = stages().flatMap((s) => keywordOf(s, 'ARG').map((a) => `ARG ${argsOf(a)}`));
  return Object.fromEntries(
    [...global, ...staged]
      .map((l) => l.slice(4).replace(/"/g, ''))
      .filter((a) => a.includes('='))
      .map((a) => [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)]),
  );
}

describe('the CPU image, assembled from its own COPY lines and started as it starts', () => {
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'cml-image-'));
  const rootfs = path.join(tmp, 'rootfs');
  const buildApp = path.join(tmp, 'build-stage', 'app');
  let port = 0;
  let proc: ReturnType<typeof spawn> | undefined;
  afterAll(() => {
    proc?.kill('SIGKILL');
    rmSync(tmp, { recursive: true, force: true });
  });

  // Hard links: node_modules (a gigabyte) in a second, and the prune's deletions stay in the copy.
  const link = (from: string, to: string) => {
    mkdirSync(path.dirname(to), { recursive: true });
    try {
      execFileSync('cp', ['-al', from, to]);
    } catch {
      cpSync(from, to, { recursive: true });
    }
  };

  beforeAll(async () => {
    // The build stage: this checkout after `npm install` stands for /app after its `npm ci
    // --omit=dev`, with only the packages npm counts as production ones (so a runtime import of a
    // devDependency fails here); then the stage's remaining RUN steps, as written.
    const build = stage('cpu-build');
    const runs = keywordOf(build, 'RUN').map(argsOf);
    expect(runs[0]).toMatch(/^npm ci --omit=dev /);
    const prod = execFileSync('npm', ['ls', '--omit=dev', '--all', '--parseable'], { cwd: root, encoding: 'utf8' })
      .split('\n')
      .map((p) => path.relative(root, p))
      .filter((p) => /^node_modules\/(@[^/]+\/)?[^/]+$/.test(p)); // nested ones come with their parent
    expect(prod).toContain('node_modules/express');
    expect(prod).not.toContain('node_modules/vitest');
    for (const p of prod) link(path.join(root, p), path.join(buildApp, p));
    for (const d of ['build', 'scripts']) link(path.join(root, d), path.join(buildApp, d));
    for (const run of runs.slice(1)) execFileSync('sh', ['-c', run], { cwd: buildApp, stdio: 'pipe' });
    // The runtime stage's COPY lines, each into the path it names.
    const s = stage('cpu');
    for (const ins of keywordOf(s, 'COPY')) {
      const c = copiesOf({ ...s, instructions: [ins] })[0]!;
      const dest = path.posix.resolve(workdirAt(s, ins), c.dest);
      for (const src of c.sources) {
        const from =
          c.from === 'cpu-build' ? path.join(buildApp, path.posix.relative('/app', src)) : path.join(root, src);
        // Docker's COPY: a folder's contents into dest; a file into dest/ (a trailing slash) or as dest.
        const file = !statSync(from).isDirectory();
        link(from, path.join(rootfs, file && c.dest.endsWith('/') ? path.posix.join(dest, path.basename(src)) : dest));
      }
    }
    const env = envOf(s);
    const workdir = path.join(rootfs, keywordOf(s, 'WORKDIR').map(argsOf).at(-1)!);
    mkdirSync(workdir, { recursive: true });
    port = await freePort();
    const argv = [...execForm(keywordOf(s, 'ENTRYPOINT')[0]!)!, ...execForm(keywordOf(s, 'CMD')[0]!)!];
    // The image's absolute paths, inside the copy; /cache is the pod's volume, here a temp folder.
    const inCopy = (a: string) => (a.startsWith('/app/') ? path.join(rootfs, a) : a);
    proc = spawn(argv[0] === 'node' ? process.execPath : argv[0]!, argv.slice(1).map(inCopy), {
      cwd: workdir,
      env: {
        PATH: process.env.PATH,
        HOME: path.join(tmp, 'home'),
        ...env,
        // Loopback here, where the image listens on 0.0.0.0 for the pod's network.
        HOST: '127.0.0.1',
        PORT: String(port),
        CACHE_DIR: path.join(tmp, 'cache', path.basename(env.CACHE_DIR!)),
        HF_HOME: path.join(tmp, 'cache', 'huggingface'),
        THREADS: '1',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let log = '';
    proc.stdout!.on('data', (d) => (log += d));
    proc.stderr!.on('data', (d) => (log += d));
    for (let i = 0; i < 600; i++) {
      const res = await fetch(`http://127.0.0.1:${port}/health`).catch(() => null);
      if (res?.status === 200) return;
      if (proc.exitCode !== null) throw new Error(`the image's server exited ${proc.exitCode}:\n${log}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`the image's server did not get ready:\n${log}`);
  }, 120_000);

  it('holds no other platform, no CUDA libraries, no llama.cpp sources, and only addons in build/', () => {
    const nm = path.join(rootfs, 'app/node_modules');
    expect(existsSync(path.join(nm, '@node-llama-cpp/linux-x64/bins/linux-x64/libllama.v0.4.0.so'))).toBe(true);
    for (const gone of [
      '@node-llama-cpp/linux-x64-cuda',
      '@node-llama-cpp/linux-arm64',
      'node-llama-cpp/llama/llama.cpp',
    ])
      expect(existsSync(path.join(nm, gone)), gone).toBe(false);
    expect(execFileSync('ls', [path.join(rootfs, 'app/build/Release')], { encoding: 'utf8' }).trim()).toBe(
      'cml_llama.node',
    );
    // ...and the checkout it was linked from is whole.
    expect(existsSync(path.join(root, 'node_modules/node-llama-cpp/llama/llama.cpp/include/llama.h'))).toBe(true);
  });

  it('its HEALTHCHECK passes, and the embedded default answers /predict', async () => {
    const [node, script] = execForm(keywordOf(stage('cpu'), 'HEALTHCHECK')[0]!)!;
    expect(node).toBe('node');
    expect(await healthcheck(port, path.join(rootfs, script!))).toBe(0);
    const res = await fetch(`http://127.0.0.1:${port}/predict`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        request: { prompt: 'Question: What is the capital of Belithne?\nAnswer:', do_sample: false },
      }),
    });
    expect(await res.json()).toEqual({ success: true, response: ' The capital of Belithne is Ulqua!' });
  });

  it("json_schema still works without llama.cpp's sources (node-llama-cpp's converter stays)", async () => {
    const res = await fetch(`http://127.0.0.1:${port}/predict`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        request: {
          prompt: 'Question: What is the capital of Belithne?\nAnswer:',
          json_schema: { type: 'object', properties: { city: { type: 'string', maxLength: 8 } }, required: ['city'] },
          max_new_tokens: 40,
          do_sample: false,
        },
      }),
    });
    const body = (await res.json()) as { success: boolean; response: string };
    expect(body.success).toBe(true);
    expect(Object.keys(JSON.parse(body.response))).toEqual(['city']);
  });

  it('SIGTERM: it drains and exits 0', async () => {
    const exited = new Promise<number | null>((r) => proc!.once('exit', (code) => r(code)));
    proc!.kill('SIGTERM');
    expect(await exited).toBe(0);
  });
});

describe('the HEALTHCHECK script', () => {
  it('fails where nothing listens, and on the 503 of a draining server', async () => {
    expect(await healthcheck(await freePort())).toBe(1);
    const s = await startServer(
      loadConfig({}, { port: 0, threads: 1, mergeAdapter: false }),
      pino({ level: 'silent' }),
    );
    await s.ready;
    expect(await healthcheck(s.port)).toBe(0);
    await s.drain(1000);
    expect((await fetch(`http://127.0.0.1:${s.port}/health`)).status).toBe(503);
    expect(await healthcheck(s.port)).toBe(1);
    await s.close();
  });
});
