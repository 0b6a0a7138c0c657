// deploy/kubernetes rendered as `kubectl apply -k` would send it, without a cluster: every variant
// renders, every object validates against Kubernetes' schemas (kubernetes-models, and its
// declarations for unknown keys), and what the objects say of the server (probe paths, port, env,
// metric names) is held to a real server started from the rendered ConfigMap. kubectl runs only as
// `kubectl kustomize`, which reads files; nothing here contacts an API server.
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { PodMonitor, ServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1';
import { ScaledObject } from '@kubernetes-models/keda/keda.sh/v1alpha1';
import { Deployment } from 'kubernetes-models/apps/v1';
import { ConfigMap, Namespace, PersistentVolumeClaim, Service } from 'kubernetes-models/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EMBEDDED, loadConfig } from '../../src/cml/config.ts';
import { type RunningServer, startServer } from '../../src/server/server.ts';
import { root } from '../helpers.ts';
import { type Facts, problems } from './checks.ts';
import { envOf as imageEnvOf, keywordOf, stage, argsOf } from './dockerfile.ts';
import {
  CORE_TYPES,
  envNamesOf,
  envOf,
  hasKubectl,
  kubernetesModelsFile,
  type Obj,
  ofKind,
  one,
  podOf,
  render,
  unknownKeys,
  variants,
} from './manifests.ts';

const required = process.env.CI === 'true';
const kubectl = hasKubectl();
if (!kubectl && !required) console.warn('kubernetes.test.ts: no kubectl on PATH: skipped');

const MODELS: Record<string, (o: Obj) => { validate(): void }> = {
  Deployment: (o) => new Deployment(o as never),
  Service: (o) => new Service(o as never),
  PodDisruptionBudget: (o) => new PodDisruptionBudget(o as never),
  PersistentVolumeClaim: (o) => new PersistentVolumeClaim(o as never),
  ConfigMap: (o) => new ConfigMap(o as never),
  Namespace: (o) => new Namespace(o as never),
  ServiceMonitor: (o) => new ServiceMonitor(o as never),
  PodMonitor: (o) => new PodMonitor(o as never),
  ScaledObject: (o) => new ScaledObject(o as never),
};

// KServe's v1beta1 PredictorSpec: a PodSpec inline plus its ComponentExtensionSpec (KServe's
// pkg/apis/serving/v1beta1/component.go), and of its predictor kinds `model` and `workerSpec`. No
// kubernetes-models package covers KServe, so these checks are from that Go schema.
const KSERVE_EXTENSION_KEYS = [
  'minReplicas',
  'maxReplicas',
  'scaleTarget',
  'scaleMetric',
  'scaleMetricType',
  'autoScaling',
  'containerConcurrency',
  'timeout',
  'canaryTrafficPercent',
  'logger',
  'batcher',
  'labels',
  'annotations',
  'deploymentStrategy',
  'model',
  'workerSpec',
];
const KSERVE_TARGET_TYPES = ['Utilization', 'Value', 'AverageValue'];

function inferenceServiceProblems(isvc: Obj): string[] {
  const bad: string[] = [];
  if (isvc.apiVersion !== 'serving.kserve.io/v1beta1') bad.push(`apiVersion ${isvc.apiVersion}`);
  const mode = isvc.metadata.annotations?.['serving.kserve.io/deploymentMode'];
  if (!['RawDeployment', 'Standard'].includes(mode)) bad.push(`deploymentMode ${mode}: KEDA needs RawDeployment`);
  if (isvc.metadata.annotations?.['serving.kserve.io/autoscalerClass'] !== 'keda')
    bad.push('autoscalerClass is not keda');
  const p = isvc.spec.predictor;
  const podKeys = readFileSync(kubernetesModelsFile('v1/PodSpec'), 'utf8')
    .match(/^ {4}"([^"]+)"/gm)!
    .map((k) => k.trim().slice(1, -1));
  for (const k of Object.keys(p))
    if (!podKeys.includes(k) && !KSERVE_EXTENSION_KEYS.includes(k)) bad.push(`predictor.${k} is unknown`);
  if (p.containers?.length !== 1 || p.containers[0].name !== 'kserve-container')
    bad.push('one container, named kserve-container');
  for (const c of p.containers ?? [])
    bad.push(...unknownKeys(c, kubernetesModelsFile('v1/Container'), 'predictor.containers'));
  if (!(p.minReplicas >= 1 && p.maxReplicas >= p.minReplicas)) bad.push('replicas: 1 <= minReplicas <= maxReplicas');
  for (const m of p.autoScaling?.metrics ?? []) {
    if (m.type !== 'External' || m.external?.metric?.backend !== 'prometheus')
      bad.push('an External prometheus metric');
    if (!/^https?:\/\//.test(m.external?.metric?.serverAddress ?? '')) bad.push('serverAddress is a URL');
    if (!KSERVE_TARGET_TYPES.includes(m.external?.target?.type)) bad.push(`target type ${m.external?.target?.type}`);
  }
  return bad;
}

/** The image's facts: both runtime targets agree on them (image.test.ts holds them to it). */
function imageFacts(): Omit<Facts, 'probePaths' | 'gauges'> {
  const cuda = stage('cuda');
  const env = imageEnvOf(cuda);
  return {
    imagePort: Number(env.PORT),
    imageUid: Number(argsOf(keywordOf(cuda, 'USER')[0]!).split(':')[0]),
    writablePaths: [env.CACHE_DIR!, env.HF_HOME!, '/tmp'],
    imageTags: ['cpu', 'cuda'],
  };
}

/** Every name the server reads from its environment: config.ts's reads, and names src/ spells out. */
function knownEnvNames(): Set<string> {
  const read = new Set<string>();
  const spy = new Proxy({} as NodeJS.ProcessEnv, {
    get: (_t, k) => {
      read.add(String(k));
      return undefined;
    },
  });
  loadConfig(spy);
  const walk = (dir: string): string[] =>
    readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
      e.isDirectory() ? walk(path.join(dir, e.name)) : e.name.endsWith('.ts') ? [path.join(dir, e.name)] : [],
    );
  for (const f of walk(path.join(root, 'src')))
    for (const m of readFileSync(f, 'utf8').matchAll(/env(?:\.|\[')([A-Z][A-Z0-9_]+)/g)) read.add(m[1]!);
  return read;
}

describe.skipIf(!kubectl && !required)('deploy/kubernetes', () => {
  const rendered = new Map<string, Obj[]>();
  let server: RunningServer;
  let facts: Facts;

  beforeAll(async () => {
    if (!kubectl) throw new Error('CI needs kubectl for these tests (it only renders: kubectl kustomize)');
    for (const v of variants()) rendered.set(v, render(v));
    // The real server, configured by the base's ConfigMap as the pod would be; only the model is
    // the embedded one (the ConfigMap names a 7B on the Hub).
    const objs = rendered.get('base')!;
    const env = { ...imageEnvOf(stage('cuda')), ...envOf(objs, podOf(objs).container) };
    const cfg = loadConfig(env, {
      baseModel: EMBEDDED.baseModel,
      adapter: EMBEDDED.adapter,
      host: '127.0.0.1',
      port: 0,
      threads: 1,
      backend: 'cpu',
      mergeAdapter: false,
    });
    server = await startServer(cfg, pino({ level: 'silent' }));
    await server.ready;
    const url = `http://127.0.0.1:${server.port}`;
    const probePaths: string[] = [];
    const asked = new Set(
      [...rendered.values()].flatMap((o) => {
        const c = podOf(o).container;
        return ['startupProbe', 'readinessProbe', 'livenessProbe'].map((k) => c[k]?.httpGet?.path as string);
      }),
    );
    for (const p of asked) if ((await fetch(url + p)).status === 200) probePaths.push(p);
    const metrics = await (await fetch(`${url}/metrics`)).text();
    const gauges = [...metrics.matchAll(/^# TYPE (\S+) gauge$/gm)].map((m) => m[1]!);
    facts = { ...imageFacts(), probePaths, gauges };
  }, 120_000);
  afterAll(() => server?.close());

  it('renders the base and every overlay', () => {
    expect([...rendered.keys()]).toEqual(['base', 'overlays/keda', 'overlays/kserve']);
    expect(ofKind(rendered.get('base')!, 'Deployment')).toHaveLength(1);
    expect(ofKind(rendered.get('overlays/keda')!, 'ScaledObject')).toHaveLength(1);
    expect(ofKind(rendered.get('overlays/kserve')!, 'InferenceService')).toHaveLength(1);
    expect(ofKind(rendered.get('overlays/kserve')!, 'Deployment')).toHaveLength(0);
  });

  it.each(variants())('%s: every object validates, with no key its type lacks', (v) => {
    for (const o of rendered.get(v)!) {
      if (o.kind === 'InferenceService') {
        expect(inferenceServiceProblems(o), o.kind).toEqual([]);
        continue;
      }
      const model = MODELS[o.kind];
      expect(model, `a schema for ${o.kind}`).toBeDefined();
      expect(() => model!(o).validate(), `${o.kind} ${o.metadata.name}`).not.toThrow();
      if (CORE_TYPES[o.kind]) expect(unknownKeys(o, kubernetesModelsFile(CORE_TYPES[o.kind]!)), o.kind).toEqual([]);
    }
  });

  it.each(variants())(
    '%s: probes, port, user, selectors, grace and scaler agree with the server and the image',
    (v) => {
      expect(facts.probePaths).toContain('/health');
      expect(facts.gauges).toEqual(expect.arrayContaining(['cml_queue_depth', 'cml_busy_slots']));
      expect(problems(rendered.get(v)!, facts)).toEqual([]);
    },
  );

  it.each(variants())('%s: every variable is one the server reads, and its values parse', (v) => {
    const objs = rendered.get(v)!;
    const { container } = podOf(objs);
    const known = knownEnvNames();
    expect(envNamesOf(objs, container).filter((n) => !known.has(n))).toEqual([]);
    expect(() => loadConfig(envOf(objs, container))).not.toThrow();
  });

  it("KServe's predictor runs the base's pod: same image, env, probes, resources, volumes, grace", () => {
    const base = podOf(rendered.get('base')!);
    const kserve = podOf(rendered.get('overlays/kserve')!);
    // Ports are named and probed by number there (KServe's convention), by name here.
    const normal = (c: Obj) => {
      const probes = Object.fromEntries(
        ['startupProbe', 'readinessProbe', 'livenessProbe'].map((k) => [
          k,
          { ...c[k], httpGet: { path: c[k].httpGet.path } },
        ]),
      );
      return { ...c, ...probes, name: undefined, ports: c.ports.map((p: Obj) => p.containerPort) };
    };
    expect(normal(kserve.container)).toEqual(normal(base.container));
    for (const k of ['terminationGracePeriodSeconds', 'securityContext', 'tolerations', 'volumes'])
      expect(kserve.spec[k], k).toEqual(base.spec[k]);
    expect(kserve.spec.deploymentStrategy).toEqual(one(rendered.get('base')!, 'Deployment').spec.strategy);
  });

  describe('each rule fires on a broken copy', () => {
    const broken = (v: string, edit: (objs: Obj[]) => void) => {
      const objs = structuredClone(rendered.get(v)!);
      edit(objs);
      return problems(objs, facts).join('\n');
    };
    const container = (objs: Obj[]) => podOf(objs).container;
    type Edit = (o: Obj[]) => void;
    const cases: [string, string, Edit, string][] = [
      [
        'base',
        'a probe on a path the server lacks',
        (o: Obj[]) => (container(o).readinessProbe.httpGet.path = '/healthz'),
        'does not answer',
      ],
      ['base', 'a probe on another port', (o: Obj[]) => (container(o).livenessProbe.httpGet.port = 9090), 'port 9090'],
      [
        'base',
        'a Service that selects no pod',
        (o: Obj[]) => (one(o, 'Service').spec.selector['app.kubernetes.io/component'] = 'web'),
        'selects no pod',
      ],
      [
        'base',
        'a grace period shorter than the drain',
        (o: Obj[]) => (podOf(o).spec.terminationGracePeriodSeconds = 20),
        'terminationGracePeriodSeconds 20',
      ],
      [
        'base',
        'a liveness probe that kills a draining pod',
        (o: Obj[]) => (container(o).livenessProbe.failureThreshold = 1),
        'liveness',
      ],
      [
        'base',
        'a required Secret that is not shipped',
        (o: Obj[]) => (container(o).env[0].valueFrom.secretKeyRef.optional = false),
        'not shipped',
      ],
      [
        'base',
        "a user other than the image's",
        (o: Obj[]) => (podOf(o).spec.securityContext.runAsUser = 1000),
        'runAsUser 1000',
      ],
      [
        'base',
        '/cache not mounted on a read-only root',
        (o: Obj[]) =>
          (container(o).volumeMounts = container(o).volumeMounts.filter((m: Obj) => m.mountPath !== '/cache')),
        '/cache/cml-lora-serve is written',
      ],
      [
        'overlays/keda',
        'a metric /metrics lacks',
        (o: Obj[]) =>
          (one(o, 'ScaledObject').spec.triggers[0].metadata.query =
            'sum(cml_waiting{namespace="cml-lora-serve",service="cml-lora-serve"})'),
        'cml_waiting',
      ],
      [
        'overlays/keda',
        'a query of another namespace',
        (o: Obj[]) => {
          for (const x of o) if (x.metadata.namespace) x.metadata.namespace = 'ml';
        },
        'is not ml',
      ],
      ['overlays/keda', 'replicas beside the scaler', (o: Obj[]) => (one(o, 'Deployment').spec.replicas = 2), 'reset'],
      [
        'overlays/keda',
        'a target past SLOTS',
        (o: Obj[]) => (one(o, 'ScaledObject').spec.triggers[0].metadata.threshold = '20'),
        'within 1..SLOTS',
      ],
      [
        'overlays/keda',
        'a ServiceMonitor on a port the Service lacks',
        (o: Obj[]) => (one(o, 'ServiceMonitor').spec.endpoints[0].port = 'metrics'),
        "'metrics' is no Service port",
      ],
      [
        'overlays/kserve',
        "a pod pattern missing KServe's pods",
        (o: Obj[]) => {
          const m = one(o, 'InferenceService').spec.predictor.autoScaling.metrics[0].external.metric;
          m.query = m.query.replaceAll('-predictor-.*', '');
        },
        "does not pick KServe's pods",
      ],
      [
        'overlays/kserve',
        'the ConfigMap named without its hash',
        (o: Obj[]) => (container(o).envFrom[0].configMapRef.name = 'cml-lora-serve-config'),
        'not rendered',
      ],
    ];
    it.each(cases)('%s: %s', (v, _what, edit, message) => {
      expect(broken(v, edit)).toContain(message);
    });

    it('a mistyped key, which kubernetes-models alone lets through', () => {
      const dep = structuredClone(one(rendered.get('base')!, 'Deployment'));
      dep.spec.template.spec.containers[0].readinesProbe = dep.spec.template.spec.containers[0].readinessProbe;
      expect(() => new Deployment(dep).validate()).not.toThrow();
      expect(unknownKeys(dep, kubernetesModelsFile('apps/v1/Deployment'))).toEqual([
        '.spec.template.spec.containers[0].readinesProbe',
      ]);
    });

    it('a variable the server never reads', () => {
      expect(knownEnvNames().has('FINE_TUNING_STUDIO_ADAPTER_LOCATION')).toBe(true);
      expect(knownEnvNames().has('FINE_TUNING_STUDIO_ADAPTOR_LOCATION')).toBe(false);
      expect(knownEnvNames().has('HF_TOKEN')).toBe(true);
    });
  });
});
