// What a rendered variant must hold beyond its schemas: each rule is a mistake that would pass
// `kubectl apply` and fail on the cluster (a selector that selects nothing, a probe on a path the
// server lacks, a grace period shorter than the drain, a scaler query on a metric never exported).
// Each returns the problems found, so the tests can show a rule firing on a broken copy.
import { envOf, type Obj, ofKind, podOf, portNumber, queryTerms, selects } from './manifests.ts';

/** What the checks compare the manifests with, read from the real server and the Dockerfile. */
export interface Facts {
  /** Paths the real server answers 200 on once ready (probes may use only these). */
  probePaths: string[];
  /** Gauges the real server's /metrics exports. */
  gauges: string[];
  /** The image's port, user id and writable paths (Dockerfile ENV/USER of the runtime stages). */
  imagePort: number;
  imageUid: number;
  writablePaths: string[];
  /** Image tags the Dockerfile's runtime targets are built as. */
  imageTags: string[];
}

const KSERVE_POD = (isvc: string) => `${isvc}-predictor-7d9f8b6c5-x2x4q`;

export function problems(objs: Obj[], facts: Facts): string[] {
  const bad: string[] = [];
  const { spec, labels, container } = podOf(objs);
  const env = envOf(objs, container);
  const namespace = objs.find((o) => o.kind !== 'Namespace')?.metadata.namespace;

  // References: every name the pod uses exists among the objects, or is optional (the Secrets).
  for (const from of container.envFrom ?? []) {
    const name = from.configMapRef?.name;
    if (!ofKind(objs, 'ConfigMap').some((c) => c.metadata.name === name))
      bad.push(`envFrom names ConfigMap '${name}', not rendered`);
  }
  for (const e of container.env ?? []) {
    const ref = e.valueFrom?.secretKeyRef;
    if (ref && ref.optional !== true)
      bad.push(`env ${e.name} needs Secret '${ref.name}', which is not shipped: make it optional`);
  }
  const volumes = new Map<string, Obj>((spec.volumes ?? []).map((v: Obj) => [v.name, v]));
  for (const v of volumes.values()) {
    const claim = v.persistentVolumeClaim?.claimName;
    if (claim && !ofKind(objs, 'PersistentVolumeClaim').some((p) => p.metadata.name === claim))
      bad.push(`volume ${v.name} claims '${claim}', not rendered`);
  }
  for (const m of container.volumeMounts ?? [])
    if (!volumes.has(m.name)) bad.push(`mount ${m.mountPath} names no volume '${m.name}'`);

  // The image: its port, its user, and the paths it writes with a read-only root filesystem.
  const port = (container.ports ?? [])[0]?.containerPort;
  if (port !== facts.imagePort) bad.push(`containerPort ${port} is not the image's PORT ${facts.imagePort}`);
  if (spec.securityContext?.runAsUser !== facts.imageUid)
    bad.push(`runAsUser ${spec.securityContext?.runAsUser} is not the image's user ${facts.imageUid}`);
  if (container.securityContext?.readOnlyRootFilesystem) {
    const mounts = (container.volumeMounts ?? []).map((m: Obj) => m.mountPath as string);
    for (const p of facts.writablePaths)
      if (!mounts.some((m: string) => p === m || p.startsWith(`${m}/`)))
        bad.push(`read-only root: ${p} is written but not mounted`);
  }
  const tag = String(container.image).split(':')[1];
  if (!tag || !facts.imageTags.includes(tag))
    bad.push(`image ${container.image}: tag is none of ${facts.imageTags.join(', ')}`);
  const gpus = Number(container.resources?.limits?.['nvidia.com/gpu'] ?? 0);
  if (tag === 'cuda' && gpus < 1) bad.push('the CUDA image without an nvidia.com/gpu limit');

  // Probes: paths the server has, on its port.
  for (const kind of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
    const probe = container[kind];
    if (!probe?.httpGet) {
      bad.push(`no ${kind} over HTTP`);
      continue;
    }
    if (!facts.probePaths.includes(probe.httpGet.path))
      bad.push(`${kind} on ${probe.httpGet.path}, which the server does not answer`);
    if (portNumber(container, probe.httpGet.port) !== facts.imagePort)
      bad.push(`${kind} port ${probe.httpGet.port} is not the server's`);
  }

  // Termination: the kubelet's grace covers the preStop pause, the drain and an exit.
  const grace = spec.terminationGracePeriodSeconds ?? 30;
  const pause = Number(
    container.lifecycle?.preStop?.exec?.command?.[0] === 'sleep' ? container.lifecycle.preStop.exec.command[1] : 0,
  );
  const drain = Number(env.DRAIN_TIMEOUT ?? 25);
  if (grace < pause + drain + 5)
    bad.push(`terminationGracePeriodSeconds ${grace} < preStop ${pause} + DRAIN_TIMEOUT ${drain} + 5`);
  const live = container.livenessProbe;
  if (live && (live.periodSeconds ?? 10) * (live.failureThreshold ?? 3) <= grace)
    bad.push('liveness could fail a draining pod (its 503) within the grace period');
  const start = container.startupProbe;
  if (start && (start.periodSeconds ?? 10) * (start.failureThreshold ?? 3) < 600)
    bad.push('startupProbe allows under 10 minutes for a model download and load');

  // Selection: the Service, PDB and monitors pick these pods or this Service.
  const services = ofKind(objs, 'Service');
  for (const s of services) {
    if (!selects(s.spec.selector, labels)) bad.push(`Service ${s.metadata.name} selects no pod`);
    for (const p of s.spec.ports)
      if (portNumber(container, p.targetPort) !== facts.imagePort)
        bad.push(`Service port ${p.name} targets ${p.targetPort}`);
  }
  for (const p of ofKind(objs, 'PodDisruptionBudget'))
    if (!selects(p.spec.selector.matchLabels, labels)) bad.push('PDB selects no pod');
  for (const m of ofKind(objs, 'ServiceMonitor')) {
    const svc = services.find((s) => selects(m.spec.selector.matchLabels, s.metadata.labels ?? {}));
    if (!svc) bad.push('ServiceMonitor selects no Service');
    for (const e of m.spec.endpoints) {
      if (svc && !svc.spec.ports.some((p: Obj) => p.name === e.port))
        bad.push(`ServiceMonitor port '${e.port}' is no Service port`);
      if (e.path !== '/metrics') bad.push(`ServiceMonitor scrapes ${e.path}`);
    }
  }
  for (const m of ofKind(objs, 'PodMonitor')) {
    if (!selects(m.spec.selector.matchLabels, labels)) bad.push('PodMonitor selects no pod');
    for (const e of m.spec.podMetricsEndpoints) {
      if (portNumber(container, e.port) !== facts.imagePort)
        bad.push(`PodMonitor port '${e.port}' is no container port`);
      if (e.path !== '/metrics') bad.push(`PodMonitor scrapes ${e.path}`);
    }
  }

  // Autoscaling: the scaler owns the replicas, and its query reads our gauges from these pods.
  const slots = Number(env.SLOTS ?? 8);
  const deployments = ofKind(objs, 'Deployment');
  for (const so of ofKind(objs, 'ScaledObject')) {
    const target = deployments.find((d) => d.metadata.name === so.spec.scaleTargetRef.name);
    if (!target) bad.push(`ScaledObject targets '${so.spec.scaleTargetRef.name}', no Deployment`);
    if (target?.spec.replicas !== undefined)
      bad.push('a scaled Deployment sets replicas: every apply would reset the count');
    for (const t of so.spec.triggers) {
      if (t.type !== 'prometheus') continue;
      bad.push(...queryProblems(t.metadata.query, facts, namespace, { service: services[0]?.metadata.name }));
      bad.push(...targetProblems(Number(t.metadata.threshold), slots));
    }
  }
  for (const isvc of ofKind(objs, 'InferenceService')) {
    for (const m of isvc.spec.predictor.autoScaling?.metrics ?? []) {
      if (m.type !== 'External') continue;
      bad.push(...queryProblems(m.external.metric.query, facts, namespace, { pod: KSERVE_POD(isvc.metadata.name) }));
      if (m.external.target.type !== 'AverageValue') bad.push('the demand per pod is an AverageValue target');
      bad.push(...targetProblems(Number(m.external.target.averageValue), slots));
    }
  }
  return bad;
}

function targetProblems(target: number, slots: number): string[] {
  return Number.isFinite(target) && target >= 1 && target <= slots
    ? []
    : [`scaling target ${target} is not within 1..SLOTS (${slots}) requests per pod`];
}

/** The query reads exported gauges, of this namespace, and of these pods or this Service. */
function queryProblems(
  query: string,
  facts: Facts,
  namespace: string | undefined,
  own: { service?: string; pod?: string },
): string[] {
  const bad: string[] = [];
  const terms = queryTerms(query);
  if (terms.length === 0) bad.push(`query '${query}' reads no metric`);
  for (const { metric, labels } of terms) {
    if (!facts.gauges.includes(metric)) bad.push(`query reads ${metric}, which /metrics does not export as a gauge`);
    if (namespace && labels.namespace !== `=${namespace}`)
      bad.push(`${metric}: namespace ${labels.namespace} is not ${namespace}`);
    if (own.service && labels.service !== `=${own.service}`)
      bad.push(`${metric}: service ${labels.service} is not ${own.service}`);
    if (own.pod) {
      const re = labels.pod?.startsWith('=~') ? new RegExp(`^(?:${labels.pod.slice(2)})$`) : null;
      if (!re?.test(own.pod) || re.test('other-predictor-7d9f8b6c5-x2x4q'))
        bad.push(`${metric}: pod ${labels.pod} does not pick KServe's pods`);
    }
  }
  return bad;
}
