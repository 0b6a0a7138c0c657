// Chooses the compute backend at run time and says why. Two builds of the same native/ sources exist:
//   build/Release/cml_llama.node       CPU, linked to node-llama-cpp's prebuilt llama.cpp (npm install)
//   build-cuda/Release/cml_llama.node  CUDA, llama.cpp compiled from source for this GPU (npm run build:cuda)
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BackendError } from './errors.ts';
import { loadAddon, type NativeAddon, type NativeDevice } from './native.ts';

export type BackendChoice = 'cpu' | 'cuda' | 'auto';

export interface ResolvedBackend {
  name: 'cpu' | 'cuda';
  addon: NativeAddon;
  addonPath: string;
  devices: NativeDevice[];
  hasGpu: boolean;
  /** Why this backend was chosen, in words (logged at start-up). */
  reason: string;
}

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const cpuAddonPath = path.join(root, 'build/Release/cml_llama.node');
export const cudaAddonPath = path.join(root, 'build-cuda/Release/cml_llama.node');

// binding.gyp links against this folder (and sets it as rpath); the CPU backend variants live there too.
const cpuBinsDir = path.join(root, 'node_modules/@node-llama-cpp/linux-x64/bins/linux-x64');

const cache = new Map<string, ResolvedBackend>();

function open(name: 'cpu' | 'cuda', addonPath: string, reason: string): ResolvedBackend {
  const hit = cache.get(addonPath);
  if (hit) return hit;
  if (!existsSync(addonPath)) {
    const how = name === 'cpu' ? 'npm run build:native' : 'npm run build:cuda';
    throw new BackendError(`the ${name} addon is not built (${addonPath}); run \`${how}\``, 'BACKEND_UNAVAILABLE');
  }
  const addon = loadAddon(addonPath);
  let warnings = '';
  if (addon.dynamicBackends) warnings = addon.loadBackends(cpuBinsDir);
  const devices = addon.devices();
  if (devices.length === 0) {
    throw new BackendError(`no compute device could be loaded${warnings ? `: ${warnings}` : ''}`, 'BACKEND_UNAVAILABLE');
  }
  const hasGpu = devices.some((d) => d.type === 'gpu');
  const resolved = { name, addon, addonPath, devices, hasGpu, reason };
  cache.set(addonPath, resolved);
  return resolved;
}

function nvidiaDriverPresent(): boolean {
  return existsSync('/proc/driver/nvidia/version') || existsSync('/dev/nvidia0');
}

export function resolveBackend(choice: BackendChoice = 'auto'): ResolvedBackend {
  if (choice === 'cpu') return open('cpu', cpuAddonPath, 'CPU requested');
  const cudaBuilt = existsSync(cudaAddonPath);
  const driver = nvidiaDriverPresent();
  if (choice === 'cuda') {
    if (!cudaBuilt) {
      throw new BackendError('CUDA requested but there is no CUDA build: run `npm run build:cuda` on the GPU machine', 'BACKEND_UNAVAILABLE');
    }
    const b = open('cuda', cudaAddonPath, 'CUDA requested');
    if (!b.hasGpu) throw new BackendError('CUDA requested but llama.cpp sees no CUDA device', 'BACKEND_UNAVAILABLE');
    return b;
  }
  if (cudaBuilt && driver) {
    const b = open('cuda', cudaAddonPath, 'auto: CUDA build present and an NVIDIA driver found');
    if (b.hasGpu) return b;
    return open('cpu', cpuAddonPath, 'auto: the CUDA build found no usable GPU, using CPU');
  }
  const why = !cudaBuilt ? 'no CUDA build (npm run build:cuda)' : 'no NVIDIA driver on this machine';
  return open('cpu', cpuAddonPath, `auto: CPU, because there is ${why}`);
}
