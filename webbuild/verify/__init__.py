"""``webbuild verify``'s parts: the prompts, the references (CPU/CUDA/HF), the browser scorer, the agreement
metrics and the report."""
