#!/usr/bin/env node
// Validates Kubernetes manifests (YAML, several documents per file) against
// the published schemas and typed models of the npm packages pinned in
// tests/k8s/package-lock.json (installed by scripts/install.sh,
// install_k8s_validator):
//
//   1. the JSON schema of each kind (types, enums, patterns, required fields,
//      limits), through the package's model class `validate()`:
//      Istio (@kubernetes-models/istio, generated from Istio's CRDs),
//      Envoy Gateway (@kubernetes-models/envoy-gateway, from its API types),
//      Gateway API (@kubernetes-models/gateway-api) and Kubernetes itself
//      (kubernetes-models);
//   2. the same packages' TypeScript interfaces, with the TypeScript compiler:
//      every document is type-checked as an object literal of its kind, so a
//      field the API does not have (a typo, a wrong nesting) is an error,
//      which the JSON schemas alone let through.
//
// A document of a kind no package models is an error, never a pass.
//
// Usage: node tests/k8s/validate.mjs --modules DIR/node_modules FILE.yaml...
// Exit status 0 when every document passes, 1 otherwise (each problem printed).

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";

const args = process.argv.slice(2);
let modules = null;
const files = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--modules") modules = args[++i];
  else files.push(args[i]);
}
if (!modules || files.length === 0) {
  console.error("usage: validate.mjs --modules DIR/node_modules FILE.yaml...");
  process.exit(2);
}
modules = path.resolve(modules);
if (!fs.existsSync(path.join(modules, "@kubernetes-models", "istio"))) {
  console.error(`no validator packages under ${modules}: run scripts/install.sh`);
  process.exit(2);
}

const load = (rel) => import(pathToFileURL(path.join(modules, rel)).href);
const YAML = await load("yaml/dist/index.js");
const ts = (await load("typescript/lib/typescript.js")).default;

// apiVersion → the package directory holding its models.
function modelDir(apiVersion) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  if (group === "") return `kubernetes-models/${version}`;
  if (group === "apps") return `kubernetes-models/apps/${version}`;
  if (group === "networking.k8s.io") return `kubernetes-models/networking.k8s.io/${version}`;
  if (group.endsWith(".istio.io")) return `@kubernetes-models/istio/${group}/${version}`;
  if (group === "gateway.envoyproxy.io") return `@kubernetes-models/envoy-gateway/${group}/${version}`;
  if (group === "gateway.networking.k8s.io") return `@kubernetes-models/gateway-api/${group}/${version}`;
  return null;
}

const problems = [];
const checked = [];
let tsSource = "";
let n = 0;
for (const file of files) {
  const text = fs.readFileSync(file, "utf8");
  const docs = YAML.parseAllDocuments(text);
  for (const doc of docs) {
    if (doc.errors.length) {
      problems.push(`${file}: YAML: ${doc.errors.map((e) => e.message).join("; ")}`);
      continue;
    }
    const obj = doc.toJS();
    if (obj === null || obj === undefined) continue;
    const where = `${file}: ${obj.apiVersion}/${obj.kind} ${obj.metadata?.namespace ?? ""}/${obj.metadata?.name ?? "?"}`;
    const dir = obj.apiVersion && obj.kind ? modelDir(obj.apiVersion) : null;
    const modelJs = dir && path.join(modules, dir, `${obj.kind}.js`);
    if (!modelJs || !fs.existsSync(modelJs)) {
      problems.push(`${where}: no published model for this kind (not validated)`);
      continue;
    }
    // 1. JSON schema.
    try {
      const mod = await import(pathToFileURL(modelJs).href);
      const Model = mod[obj.kind];
      new Model(obj).validate();
    } catch (e) {
      problems.push(`${where}: schema: ${e.message}`);
    }
    // 2. TypeScript interface (excess property checks on the literal).
    const dts = path.join(modules, dir, `${obj.kind}.js`);
    tsSource += `import type { I${obj.kind} as T${n} } from ${JSON.stringify(dts)};\n`;
    tsSource += `// ${where.replace(/\n/g, " ")}\nexport const d${n}: T${n} = ${JSON.stringify(obj, null, 1)};\n`;
    checked.push(where);
    n++;
  }
}

if (n > 0) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tollgate-k8s-validate-"));
  const src = path.join(dir, "manifests.ts");
  fs.writeFileSync(src, tsSource);
  const program = ts.createProgram([src], {
    noEmit: true,
    strict: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    skipLibCheck: true,
    types: [],
    typeRoots: [],
  });
  const diags = ts.getPreEmitDiagnostics(program);
  const lines = tsSource.split("\n");
  for (const d of diags) {
    const msg = ts.flattenDiagnosticMessageText(d.messageText, "\n  ");
    if (d.file && d.file.fileName === src && d.start !== undefined) {
      const { line } = d.file.getLineAndCharacterOfPosition(d.start);
      // The comment line above each literal names the document.
      let doc = "";
      for (let l = line; l >= 0; l--) {
        if (lines[l].startsWith("// ")) {
          doc = lines[l].slice(3);
          break;
        }
      }
      problems.push(`${doc}: type: ${lines[line].trim()}: ${msg}`);
    } else {
      problems.push(`type: ${msg}`);
    }
  }
  fs.rmSync(dir, { recursive: true, force: true });
}

for (const c of checked) console.log(`checked ${c}`);
for (const p of problems) console.log(`INVALID ${p}`);
console.log(`${checked.length} documents checked, ${problems.length} problems`);
process.exit(problems.length === 0 && checked.length > 0 ? 0 : 1);
