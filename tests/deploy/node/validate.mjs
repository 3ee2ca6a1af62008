// node validate.mjs DIR — validates every Kubernetes manifest in DIR (*.yaml, every document) against the
// Kubernetes API schemas, offline, two ways, and exits non-zero on any finding:
//  1. the JSON-schema validators of the kubernetes-models packages (generated from Kubernetes 1.27's OpenAPI spec
//     and the Prometheus Operator's CRDs): required fields, types, enums, formats;
//  2. the TypeScript declarations generated from the same spec, with the TypeScript compiler: these are exact about
//     field names, so a misspelt or unknown field fails (the JSON schemas let unknown fields through, as the API
//     server's non-strict decoding would, silently dropping them).
// kustomization.yaml is checked for what kustomize needs here: each listed resource exists, and every manifest but
// the *.example.yaml files and the adapter's ConfigMap is listed. Run by tests/deploy/k8s_test.sh.
import { readFileSync, readdirSync, writeFileSync, mkdtempSync, rmSync } from "node:fs";
import { join, dirname } from "node:path";
import { tmpdir } from "node:os";
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";

const here = dirname(fileURLToPath(import.meta.url));
const dir = process.argv[2];
if (!dir) {
  console.error("usage: node validate.mjs DIR");
  process.exit(2);
}
const findings = [];

// apiVersion "apps/v1" + kind "Deployment" -> the module of its model, and the name of its interface.
function modelModule(apiVersion, kind) {
  if (apiVersion.startsWith("monitoring.coreos.com/")) {
    return `@kubernetes-models/prometheus-operator/${apiVersion}/${kind}`;
  }
  return `kubernetes-models/${apiVersion}/${kind}`;
}

const documents = [];  // {file, index, object, module, kind}
const files = readdirSync(dir).filter((f) => f.endsWith(".yaml")).sort();
let kustomization = null;
for (const file of files) {
  const text = readFileSync(join(dir, file), "utf8");
  const parsed = parseAllDocuments(text);
  parsed.forEach((doc, index) => {
    const where = `${file}#${index}`;
    if (doc.errors.length) {
      findings.push(`${where}: YAML: ${doc.errors.map((e) => e.message).join("; ")}`);
      return;
    }
    const object = doc.toJS();
    if (object === null) return;
    if (object.kind === "Kustomization") {
      kustomization = { file, object };
      return;
    }
    if (typeof object.apiVersion !== "string" || typeof object.kind !== "string") {
      findings.push(`${where}: no apiVersion/kind`);
      return;
    }
    documents.push({ file, where, object, module: modelModule(object.apiVersion, object.kind), kind: object.kind });
  });
}

// 1. JSON schemas.
for (const d of documents) {
  let Model;
  try {
    Model = (await import(d.module))[d.kind];
  } catch {
    findings.push(`${d.where}: no schema for ${d.object.apiVersion} ${d.kind}`);
    continue;
  }
  try {
    new Model(d.object).validate();
  } catch (e) {
    findings.push(`${d.where}: ${d.object.apiVersion} ${d.kind}: ${e.message}`);
  }
}

// 2. Field names and types, with the TypeScript compiler's excess-property checks (one document per line, so a
// diagnostic's line names its document).
if (documents.length) {
  const work = mkdtempSync(join(here, ".check-"));
  try {
    const lines = documents.map((d, i) => `import type { I${d.kind} as T${i} } from "${d.module}";`);
    const first = lines.length;
    documents.forEach((d, i) => lines.push(`export const doc${i}: T${i} = ${JSON.stringify(d.object)};`));
    writeFileSync(join(work, "manifests.ts"), lines.join("\n") + "\n");
    try {
      execFileSync(process.execPath, [join(here, "node_modules/typescript/bin/tsc"), "--noEmit", "--strict",
        "--module", "nodenext", "--moduleResolution", "nodenext", "--skipLibCheck", "--pretty", "false",
        join(work, "manifests.ts")], { cwd: here, encoding: "utf8", stdio: "pipe" });
    } catch (e) {
      const out = `${e.stdout ?? ""}${e.stderr ?? ""}`;
      for (const line of out.split("\n").filter(Boolean)) {
        const m = line.match(/manifests\.ts\((\d+),\d+\): (.*)$/);
        const d = m ? documents[Number(m[1]) - 1 - first] : undefined;
        findings.push(d ? `${d.where}: ${d.object.apiVersion} ${d.kind}: ${m[2]}` : `typescript: ${line}`);
      }
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

// References between the manifests, which no schema sees: selectors that match the pods, names that exist.
const byKind = (kind) => documents.filter((d) => d.kind === kind).map((d) => d.object);
const matches = (selector, labels) =>
  Object.entries(selector ?? {}).every(([k, v]) => (labels ?? {})[k] === v) && Object.keys(selector ?? {}).length > 0;
for (const deployment of byKind("Deployment")) {
  const pod = deployment.spec.template;
  const ports = pod.spec.containers.flatMap((c) => c.ports ?? []).map((p) => p.name);
  if (!matches(deployment.spec.selector.matchLabels, pod.metadata?.labels)) {
    findings.push(`Deployment ${deployment.metadata.name}: its selector does not match its pod labels`);
  }
  for (const service of byKind("Service")) {
    if (!matches(service.spec.selector, pod.metadata?.labels)) findings.push(`Service ${service.metadata.name}: selects no pod of ${deployment.metadata.name}`);
    for (const p of service.spec.ports) {
      if (typeof p.targetPort === "string" && !ports.includes(p.targetPort)) findings.push(`Service ${service.metadata.name}: targetPort ${p.targetPort} is no container port`);
    }
    for (const monitor of byKind("ServiceMonitor")) {
      if (!matches(monitor.spec.selector.matchLabels, service.metadata.labels)) findings.push(`ServiceMonitor ${monitor.metadata.name}: selects no Service`);
      for (const e of monitor.spec.endpoints) {
        if (!service.spec.ports.some((p) => p.name === e.port)) findings.push(`ServiceMonitor ${monitor.metadata.name}: port ${e.port} is not a Service port`);
      }
    }
  }
  for (const pdb of byKind("PodDisruptionBudget")) {
    if (!matches(pdb.spec.selector.matchLabels, pod.metadata?.labels)) findings.push(`PodDisruptionBudget ${pdb.metadata.name}: selects no pod`);
  }
  for (const hpa of byKind("HorizontalPodAutoscaler")) {
    const ref = hpa.spec.scaleTargetRef;
    if (ref.kind === "Deployment" && ref.name !== deployment.metadata.name) findings.push(`HorizontalPodAutoscaler ${hpa.metadata.name}: scales no Deployment`);
  }
  const secrets = byKind("Secret");
  for (const env of pod.spec.containers.flatMap((c) => c.env ?? [])) {
    const ref = env.valueFrom?.secretKeyRef;
    if (ref && !secrets.some((s) => s.metadata.name === ref.name && ref.key in (s.stringData ?? s.data ?? {}))) {
      findings.push(`Deployment ${deployment.metadata.name}: env ${env.name} reads Secret ${ref.name}/${ref.key}, which no example defines`);
    }
  }
}
// The HPA's custom metrics must be ones the Prometheus adapter's rules serve.
const served = byKind("ConfigMap").flatMap((c) => {
  const config = c.data?.["config.yaml"];
  if (!config) return [];
  return (parseAllDocuments(config)[0].toJS()?.rules ?? []).map((r) => r.name?.as);
});
for (const hpa of byKind("HorizontalPodAutoscaler")) {
  for (const m of hpa.spec.metrics ?? []) {
    if (m.type === "Pods" && !served.includes(m.pods.metric.name)) findings.push(`HorizontalPodAutoscaler ${hpa.metadata.name}: metric ${m.pods.metric.name} is served by no adapter rule`);
  }
}

// kustomization.yaml.
if (kustomization) {
  const listed = kustomization.object.resources ?? [];
  for (const r of listed) {
    if (!files.includes(r)) findings.push(`${kustomization.file}: resource ${r} does not exist`);
  }
  for (const f of files) {
    const meant = f !== kustomization.file && !f.endsWith(".example.yaml") && f !== "prometheus-adapter-rules.yaml";
    if (meant && !listed.includes(f)) findings.push(`${kustomization.file}: ${f} is not listed in resources`);
  }
}

if (findings.length) {
  for (const f of findings) console.error(f);
  process.exit(1);
}
console.log(`validate: ${documents.length} manifests in ${dir} valid (${[...new Set(documents.map((d) => d.kind))].join(", ")})`);
