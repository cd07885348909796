// Test helper (not a test): maps the runtime's ./vendor/* imports to node_modules, as webbuild/site.py
// VENDOR_FILES does when it copies them into a site. Register it before importing runtime modules that use
// vendor.js:   await import("./vendor_hook.js"); const { X } = await import("../tokenizer.js");
import { register } from "node:module";

register("./vendor_loader.js", import.meta.url);
