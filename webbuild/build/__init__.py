"""The build pipeline, in the order ``webbuild package`` runs it.

presets/download/source + weights/ (load) -> quantize -> tensor_cache + chat_config + prepare (model files)
-> arch/ (model definitions) -> export -> compile -> library (cached per target) -> link (+ wasm_runtime/)
-> site (the static site).
"""
