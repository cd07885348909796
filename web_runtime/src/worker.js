// The engine's worker entry (the package's "./worker" export). Imported in a dedicated worker, it starts
// serving an engine there (startWorker() in worker_host.js), whether it is the worker's own script:
//   new Worker(new URL("./runtime/worker.js", import.meta.url), { type: "module" })
// or imported by a wrapper worker script: a bundler's worker file, or a page on another origin that embeds
// a site's model (browsers start workers only from same-origin scripts, so the wrapper imports this one;
// index.js createEngineWorker() builds that wrapper):
//   import "webbuild-runtime/worker";   // or "https://models.example/site/runtime/worker.js"
// Imported anywhere else (a page, node, a SharedWorker) it does nothing. To host the engine on another
// scope, or with an engine of your own, call startWorker() from the package's "./host" entry instead (and
// do not import this one: it would serve the default engine on the worker's scope first).

import { isDedicatedWorker, startWorker } from "./worker_host.js";

if (isDedicatedWorker()) startWorker();
