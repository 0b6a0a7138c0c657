// Chooses the compute backend at run time and says why. Three builds of the same native/ sources:
//   build-cuda/Release/cml_llama.node            CUDA, llama.cpp compiled from source for this GPU
//                                                (npm run build:cuda: native code, the fastest)
//   build/Release/cml_llama_cuda_prebuilt.node   CUDA, linked at npm install to node-llama-cpp's
//                                                prebuilt CUDA llama.cpp (no nvcc; PTX for sm_90)
//   build/Release/cml_llama.node                 CPU, node-llama-cpp's prebuilt CPU llama.cpp
// Their llama.cpp libraries share names, so a process should load one; falling back to the CPU
// after a CUDA build found no GPU loads a second, which works with these builds of one release.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BackendError } from './errors.ts';
import { loadAddon, type NativeAddon, type NativeDevice } from './native.ts';

export type BackendChoice = 'cpu' | 'cuda' | 'auto';

export interface ResolvedBackend {
  name: 'cpu' | 'cuda';
  /** Which build: the CPU one, CUDA from source, or CUDA from node-llama-cpp's prebuilt libraries. */
  variant: 'cpu' | 'cuda-source' | 'cuda-prebuilt';
  addon: NativeAddon;
  addonPath: string;
  devices: NativeDevice[];
  hasGpu: boolean;
  /** Why this backend was chosen, in words (logged at start-up). */
  reason: string;
}

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
// CML_ADDON swaps in another CPU build of the same sources (the sanitizer run: scripts/sanitize.sh).
export const cpuAddonPath = process.env.CML_ADDON
  ? path.resolve(process.env.CML_ADDON)
  : path.join(root, 'build/Release/cml_llama.node');
export const cudaAddonPath = path.join(root, 'build-cuda/Release/cml_llama.node');
export const cudaPrebuiltAddonPath = path.join(root, 'build/Release/cml_llama_cuda_prebuilt.node');

// binding.gyp links against these folders (and sets them as rpath); the backend libraries live there too.
const cpuBinsDir = path.join(root, 'node_modules/@node-llama-cpp/linux-x64/bins/linux-x64');
const cudaBinsDir = path.join(root, 'node_modules/@node-llama-cpp/linux-x64-cuda/bins/linux-x64-cuda');
// The CUDA 12 build of the CUDA backend (Cloudera's CUDA runtimes carry CUDA 12).
const cuda12Backend = path.join(
  root,
  'node_modules/@node-llama-cpp/linux-x64-cuda-ext/bins/linux-x64-cuda/fallback/libggml-cuda.so',
);

const cache = new Map<string, ResolvedBackend>();

function open(
  variant: ResolvedBackend['variant'],
  addonPath: string,
  reason: string,
  backends: { dir: string; extra?: string },
): ResolvedBackend {
  const hit = cache.get(addonPath);
  if (hit) return hit;
  if (!existsSync(addonPath)) {
    const how = variant === 'cuda-source' ? 'npm run build:cuda' : 'npm run build:native';
    throw new BackendError(`the ${variant} addon is not built (${addonPath}); run \`${how}\``, 'BACKEND_UNAVAILABLE');
  }
  const addon = loadAddon(addonPath);
  let warnings = '';
  if (addon.dynamicBackends) {
    warnings = addon.loadBackends(backends.dir);
    const hasGpu = () => addon.devices().some((d) => d.type === 'gpu');
    if (backends.extra && !hasGpu()) warnings += addon.loadBackend(backends.extra);
  }
  const devices = addon.devices();
  if (devices.length === 0) {
    throw new BackendError(
      `no compute device could be loaded${warnings ? `: ${warnings}` : ''}`,
      'BACKEND_UNAVAILABLE',
    );
  }
  const hasGpu = devices.some((d) => d.type === 'gpu');
  const resolved: ResolvedBackend = {
    name: variant === 'cpu' ? 'cpu' : 'cuda',
    variant,
    addon,
    addonPath,
    devices,
    hasGpu,
    reason,
  };
  cache.set(addonPath, resolved);
  return resolved;
}

const openCpu = (reason: string) => open('cpu', cpuAddonPath, reason, { dir: cpuBinsDir });

function nvidiaDriverPresent(): boolean {
  return existsSync('/proc/driver/nvidia/version') || existsSync('/dev/nvidia0');
}

/** The libraries the dynamic loader can find: LD_LIBRARY_PATH's folders and ldconfig's cache. */
function loadable(names: string[]): string[] {
  let cacheList = '';
  try {
    cacheList = execFileSync('ldconfig', ['-p'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    // no ldconfig on PATH (it is often in /sbin): LD_LIBRARY_PATH alone
    try {
      cacheList = execFileSync('/sbin/ldconfig', ['-p'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    } catch {
      cacheList = '';
    }
  }
  const dirs = (process.env.LD_LIBRARY_PATH ?? '').split(':').filter(Boolean);
  return names.filter((n) => cacheList.includes(`${n} `) || dirs.some((d) => existsSync(path.join(d, n))));
}

let runtime: { major: 13 | 12 } | { missing: string } | undefined;

/** Which CUDA runtime the prebuilt CUDA backend can use here (13, else 12), or what is missing (asked once: it runs ldconfig). */
export function cudaRuntime(): { major: 13 | 12 } | { missing: string } {
  runtime ??= findCudaRuntime();
  return runtime;
}

function findCudaRuntime(): { major: 13 | 12 } | { missing: string } {
  const need = (v: number) => [`libcudart.so.${v}`, `libcublas.so.${v}`, 'libcuda.so.1'];
  const have13 = loadable(need(13));
  if (have13.length === 3) return { major: 13 };
  const have12 = loadable(need(12));
  if (have12.length === 3 && existsSync(cuda12Backend)) return { major: 12 };
  const lacking = (v: number, have: string[]) =>
    need(v)
      .filter((n) => !have.includes(n))
      .join(', ');
  return {
    missing: `CUDA 13 (${lacking(13, have13)}) or CUDA 12 (${lacking(12, have12)}${existsSync(cuda12Backend) ? '' : ', and @node-llama-cpp/linux-x64-cuda-ext'})`,
  };
}

function openPrebuilt(reason: string): ResolvedBackend {
  const rt = cudaRuntime();
  return open('cuda-prebuilt', cudaPrebuiltAddonPath, reason, {
    dir: cudaBinsDir,
    ...('major' in rt && rt.major === 12 ? { extra: cuda12Backend } : {}),
  });
}

export function resolveBackend(choice: BackendChoice = 'auto'): ResolvedBackend {
  if (!['cpu', 'cuda', 'auto'].includes(choice))
    throw new BackendError(`backend must be cpu, cuda or auto, got '${String(choice)}'`, 'BACKEND_UNAVAILABLE');
  if (choice === 'cpu') return openCpu('CPU requested');
  const source = existsSync(cudaAddonPath);
  const prebuilt = existsSync(cudaPrebuiltAddonPath);
  const driver = nvidiaDriverPresent();
  if (choice === 'cuda') {
    if (!source && !prebuilt) {
      throw new BackendError(
        'CUDA requested but there is no CUDA build: run `npm run build:cuda` on the GPU machine, or install on linux x64 (the prebuilt CUDA libraries)',
        'BACKEND_UNAVAILABLE',
      );
    }
    const b = source
      ? open('cuda-source', cudaAddonPath, 'CUDA requested', { dir: cpuBinsDir })
      : openPrebuilt('CUDA requested (prebuilt CUDA llama.cpp)');
    if (!b.hasGpu) {
      const rt = b.variant === 'cuda-prebuilt' ? cudaRuntime() : null;
      const why = !driver
        ? 'no NVIDIA driver on this machine'
        : rt && 'missing' in rt
          ? `the CUDA runtime libraries are missing: ${rt.missing}`
          : 'no usable device';
      throw new BackendError(
        `CUDA requested but llama.cpp sees no CUDA device (${b.variant}): ${why}`,
        'BACKEND_UNAVAILABLE',
      );
    }
    return b;
  }
  if (driver && source) {
    const b = open('cuda-source', cudaAddonPath, 'auto: CUDA build present and an NVIDIA driver found', {
      dir: cpuBinsDir,
    });
    if (b.hasGpu) return b;
    return openCpu('auto: the CUDA build found no usable GPU, using CPU');
  }
  if (driver && prebuilt) {
    const rt = cudaRuntime();
    if ('missing' in rt)
      return openCpu(`auto: CPU, because the prebuilt CUDA build needs the CUDA runtime libraries: ${rt.missing}`);
    const b = openPrebuilt(
      `auto: an NVIDIA driver and the CUDA ${rt.major} runtime found: prebuilt CUDA llama.cpp (npm run build:cuda is faster on the GPU)`,
    );
    if (b.hasGpu) return b;
    return openCpu('auto: the prebuilt CUDA build found no usable GPU, using CPU');
  }
  const why = !driver
    ? 'no NVIDIA driver on this machine'
    : 'no CUDA build (npm run build:cuda, or the prebuilt CUDA libraries at npm install)';
  return openCpu(`auto: CPU, because there is ${why}`);
}
