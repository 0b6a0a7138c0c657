// What the Kubernetes tests read the manifests with: `kubectl kustomize` (client side only: it never
// contacts an API server), the objects it renders, and an unknown-key check. kubernetes-models
// validates types and required fields but lets a mistyped key through (`readinesProbe` would be
// dropped by the API server, silently), so every key of a core object is also looked up in the
// property lists of kubernetes-models' own type declarations, which are generated from Kubernetes'
// OpenAPI schema.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { root } from '../helpers.ts';

export const kubeDir = path.join(root, 'deploy/kubernetes');

// biome-ignore lint/suspicious/noExplicitAny: rendered manifests are untyped YAML
export type Obj = Record<string, any>;

/** kubectl on PATH (CI: required; elsewhere the tests skip without it). */
export function hasKubectl(): boolean {
  try {
    execFileSync('kubectl', ['version', '--client'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** The kustomizations a user can apply: the base and every overlay. */
export function variants(): string[] {
  const overlays = readdirSync(path.join(kubeDir, 'overlays')).map((d) => `overlays/${d}`);
  return ['base', ...overlays.sort()];
}

/** `kubectl kustomize <dir>`: the objects `kubectl apply -k` would send. */
export function render(dir: string): Obj[] {
  const out = execFileSync('kubectl', ['kustomize', path.join(kubeDir, dir)], {
    encoding: 'utf8',
    // kubectl reads no kubeconfig for this; an empty one makes sure no cluster is ever reachable.
    env: { ...process.env, KUBECONFIG: '/dev/null' },
  });
  return parseAllDocuments(out).map((d) => d.toJSON() as Obj);
}

export const ofKind = (objs: Obj[], kind: string) => objs.filter((o) => o.kind === kind);
export const one = (objs: Obj[], kind: string): Obj => {
  const found = ofKind(objs, kind);
  if (found.length !== 1) throw new Error(`expected one ${kind}, rendered ${found.length}`);
  return found[0]!;
};

// --- unknown keys, from kubernetes-models' declarations --------------------------------------------

interface Declared {
  props: Map<string, string>; // property -> its type text
  file: string;
}

const declCache = new Map<string, Declared>();

/** The interface declared in a kubernetes-models .d.ts file: its properties and their types. */
function declared(file: string): Declared | null {
  const hit = declCache.get(file);
  if (hit) return hit;
  const text = readFileSync(file, 'utf8');
  const body = /export interface I\w+(?: extends [\w, ]+)? \{([\s\S]*?)\n\}/.exec(text);
  // A type alias (IntOrString, Quantity): a value, not an object with keys.
  if (!body) return null;
  const props = new Map<string, string>();
  // One property a line, at the interface's indentation; a map's type opens a block (`{`): a leaf.
  for (const m of body[1]!.matchAll(/^ {4}"([^"]+)"\??: (.*?);?$/gm)) props.set(m[1]!, m[2]!);
  // TypeMeta's fields, which the interfaces extend.
  if (/extends TypeMeta/.test(text)) for (const k of ['apiVersion', 'kind']) props.set(k, 'string');
  const d = { props, file };
  declCache.set(file, d);
  return d;
}

/** The file declaring a type named in `from`'s imports, or null for a type that is no interface. */
function importedFile(from: string, typeText: string): string | null {
  const name = /^(?:Array<)?(I[A-Za-z0-9]+)>?$/.exec(typeText.trim())?.[1];
  if (!name) return null;
  const text = readFileSync(from, 'utf8');
  const imp = new RegExp(`import \\{ ${name} \\} from "([^"]+)";`).exec(text);
  if (!imp) return null;
  const spec = imp[1]!;
  const resolved = spec.startsWith('.')
    ? path.resolve(path.dirname(from), spec)
    : path.join(root, 'node_modules', spec);
  return `${resolved.replace(/\.js$/, '')}.d.ts`;
}

/** Where a core type is declared: kubernetesModelsFile('apps/v1/Deployment'). */
export const kubernetesModelsFile = (type: string) => path.join(root, 'node_modules/kubernetes-models', `${type}.d.ts`);

/** Every key of `value` (and below) that its Kubernetes type does not declare, as paths. */
export function unknownKeys(value: unknown, declFile: string, at = ''): string[] {
  if (Array.isArray(value)) return value.flatMap((v, i) => unknownKeys(v, declFile, `${at}[${i}]`));
  if (value === null || typeof value !== 'object') return [];
  const d = declared(declFile);
  if (!d) return [];
  const bad: string[] = [];
  for (const [key, child] of Object.entries(value)) {
    const type = d.props.get(key);
    if (type === undefined) {
      bad.push(`${at}.${key}`);
      continue;
    }
    const next = importedFile(d.file, type);
    if (next) bad.push(...unknownKeys(child, next, `${at}.${key}`));
  }
  return bad;
}

/** The core kinds the manifests use, and where kubernetes-models declares each. */
export const CORE_TYPES: Record<string, string> = {
  Deployment: 'apps/v1/Deployment',
  Service: 'v1/Service',
  PodDisruptionBudget: 'policy/v1/PodDisruptionBudget',
  PersistentVolumeClaim: 'v1/PersistentVolumeClaim',
  ConfigMap: 'v1/ConfigMap',
  Namespace: 'v1/Namespace',
};

// --- reading the manifests' own values -------------------------------------------------------------

/** The pod a variant runs: the Deployment's template, or the InferenceService's predictor. */
export function podOf(objs: Obj[]): { spec: Obj; labels: Record<string, string>; container: Obj } {
  const dep = ofKind(objs, 'Deployment')[0];
  if (dep) {
    const spec = dep.spec.template.spec;
    return { spec, labels: dep.spec.template.metadata.labels, container: spec.containers[0] };
  }
  const isvc = one(objs, 'InferenceService');
  // KServe labels the predictor's pods with the InferenceService's name.
  const labels = { 'serving.kserve.io/inferenceservice': isvc.metadata.name };
  return { spec: isvc.spec.predictor, labels, container: isvc.spec.predictor.containers[0] };
}

/** The container's environment as the server sees it: the ConfigMap's data, then env values. */
export function envOf(objs: Obj[], container: Obj): Record<string, string> {
  const env: Record<string, string> = {};
  for (const from of container.envFrom ?? []) {
    const cm = ofKind(objs, 'ConfigMap').find((c) => c.metadata.name === from.configMapRef?.name);
    Object.assign(env, cm?.data ?? {});
  }
  for (const e of container.env ?? []) if (e.value !== undefined) env[e.name] = e.value;
  return env;
}

/** Names of every variable the container is given (ConfigMap keys, env entries, secret refs too). */
export function envNamesOf(objs: Obj[], container: Obj): string[] {
  return [...Object.keys(envOf(objs, container)), ...(container.env ?? []).map((e: Obj) => e.name as string)];
}

/** A probe's or a monitor's port (a name or a number) as the container's port number. */
export function portNumber(container: Obj, port: string | number): number | undefined {
  if (typeof port === 'number') return port;
  return (container.ports ?? []).find((p: Obj) => p.name === port)?.containerPort;
}

/** Does a selector's matchLabels (or a Service's plain selector) pick these labels? */
export const selects = (selector: Record<string, string> | undefined, labels: Record<string, string>) =>
  selector !== undefined &&
  Object.keys(selector).length > 0 &&
  Object.entries(selector).every(([k, v]) => labels[k] === v);

/** The metric names and label matchers of a PromQL query like ours: sum(a{l="v"}) + sum(b{...}). */
export function queryTerms(query: string): { metric: string; labels: Record<string, string> }[] {
  return [...query.matchAll(/([a-z_:][a-z0-9_:]*)\{([^}]*)\}/g)].map((m) => ({
    metric: m[1]!,
    labels: Object.fromEntries([...m[2]!.matchAll(/([a-z_]+)(=~|=)"([^"]*)"/g)].map((l) => [l[1]!, `${l[2]}${l[3]}`])),
  }));
}
