// Validates custom resources (ServiceMonitor, PrometheusRule, AlertmanagerConfig, cert-manager's
// Certificate and Issuer …) against the OpenAPI schemas of their CustomResourceDefinitions, as
// packaged by the kubernetes-models project (@kubernetes-models/prometheus-operator,
// @kubernetes-models/cert-manager on npm).
//
//   node deploy/tests/validate-custom-resources.mjs <node_modules dir> <custom-resources.json>
//
// The JSON file is what deploy/tests/validate_k8s.py writes: [{source, object}, …].
// Checked: types, required fields, enums, patterns (durations, label names …) of every field the
// CRD describes. Not checked: unknown fields, because CRD schemas allow them (the API server prunes
// them silently); an object of a kind with no packaged schema is an error, never a silent pass.
// Prints one line per problem; exits 1 when there is any.

import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const SCHEMA_PACKAGES = [
  "@kubernetes-models/prometheus-operator",
  "@kubernetes-models/cert-manager",
];

const [nodeModules, inputFile] = process.argv.slice(2);
if (!nodeModules || !inputFile) {
  console.error("usage: validate-custom-resources.mjs <node_modules dir> <custom-resources.json>");
  process.exit(2);
}

// The model class for apiVersion `group/version` and `kind` lives at
// <package>/<group>/<version>/<kind>.mjs (ES module builds) or .js; importing it by path sidesteps
// package export maps.
function modelPath(apiVersion, kind) {
  const [group, version] = String(apiVersion).split("/");
  if (!group || !version) return null;
  for (const pkg of SCHEMA_PACKAGES) {
    for (const extension of [".mjs", ".js"]) {
      const candidate = join(nodeModules, pkg, group, version, `${kind}${extension}`);
      if (existsSync(candidate)) return candidate;
    }
  }
  return null;
}

const entries = JSON.parse(readFileSync(inputFile, "utf8"));
const problems = [];
const kinds = new Set();
for (const { source, object } of entries) {
  const name = `${object.kind}/${object.metadata?.name ?? "?"}`;
  const path = modelPath(object.apiVersion, object.kind);
  if (path === null) {
    problems.push(`${source}: ${name}: no schema available for ${object.apiVersion} ${object.kind}`);
    continue;
  }
  const module = await import(pathToFileURL(path).href);
  const Model = module[object.kind] ?? module.default?.[object.kind];
  if (typeof Model !== "function") {
    problems.push(`${source}: ${name}: ${path} does not export a ${object.kind} model`);
    continue;
  }
  try {
    new Model(object).validate();
    kinds.add(`${object.apiVersion} ${object.kind}`);
  } catch (error) {
    const details = Array.isArray(error.details)
      ? error.details.map((d) => `${d.instancePath || "/"} ${d.message}`).join("; ")
      : error.message;
    problems.push(`${source}: ${name}: ${details}`);
  }
}

for (const problem of problems) console.log(problem);
if (problems.length > 0) {
  console.error(`${problems.length} problems`);
  process.exit(1);
}
console.error(`${entries.length} custom resources valid against their CRD schemas (${[...kinds].sort().join(", ")})`);
