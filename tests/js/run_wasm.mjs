// Loads a webbuild model library in Node with tvmjs (@mlc-ai/web-runtime) and reports on it as JSON.
//
// usage: node run_wasm.mjs <lib.wasm> < request.json
// request: {"functions": ["name", ...],   VM functions to look up
//           "globals": ["name", ...],     runtime global functions to look up
//           "kernels": true,              list the WebGPU kernels the library carries (Node has no WebGPU:
//                                         shaders are registered with a stub that is never called)
//           "call": {"name": str, "args": [{"shape": [..], "dtype": "float32", "data": [..]}]}}
//                                         run a VM function on the CPU (CPU-only libraries)
// reply:   {"functions": {name: bool}, "globals": {name: bool}, "kernels": [..] | null,
//           "result": {"shape", "data"} | null}
// A TVM error ends the process with code 1 and TVM's message on stderr.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
// tvmjs is installed in web_runtime/node_modules; resolve it from there, not from tests/.
const require = createRequire(path.join(here, "..", "..", "web_runtime", "package.json"));
const tvmjs = require("@mlc-ai/web-runtime");

const request = JSON.parse(fs.readFileSync(0, "utf8") || "{}");
const tvm = await tvmjs.instantiate(fs.readFileSync(process.argv[2]), tvmjs.createPolyfillWASI(), () => {});
const reply = { functions: {}, globals: {}, kernels: null, result: null };

const globalNames = new Set(tvm.listGlobalFuncNames());
for (const name of request.globals ?? []) reply.globals[name] = globalNames.has(name);

if (request.kernels && !globalNames.has("wasm.WebGPUCreateShader")) {
  // Loading a WebGPU module needs a shader factory; listing its kernels never calls it.
  tvm.registerFunc("wasm.WebGPUCreateShader", () => {
    throw new Error("WebGPU is not available in Node");
  });
}

tvm.beginScope();
const vm = tvm.createVirtualMachine(tvm.cpu());
for (const name of request.functions ?? []) reply.functions[name] = vm.getFunction(name) != null;
if (request.kernels) {
  const getFmap = vm.getInternalModule().getFunction("webgpu.get_fmap", true);
  reply.kernels = getFmap ? Object.keys(JSON.parse(getFmap())).sort() : [];
}
if (request.call) {
  const args = request.call.args.map((a) => tvm.empty(a.shape, a.dtype, tvm.cpu()).copyFrom(a.data));
  const out = vm.getFunction(request.call.name)(...args);
  reply.result = { shape: Array.from(out.shape), data: Array.from(out.toArray()) };
}
tvm.endScope();
process.stdout.write(JSON.stringify(reply));
