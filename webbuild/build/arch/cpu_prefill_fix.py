"""Two repairs to TVM 0.27's CPU kernel that attends a prefill chunk to the cached prefix (paged KV cache).

Its online softmax keeps a running maximum ``m_val`` and a candidate ``new_m``, but ``new_m`` is set only when a
cached position is visible to the query: a query whose first cached positions are masked (every one of a
sliding-window layer's once the sequence outgrows its window) rescales with an uninitialized value, and the
logits turn to NaN. And the rescaling of the partial output reads ``scale_O[d_idx]`` from a one-element buffer.
Here ``new_m`` starts each query at ``m_val``'s initial value and the rescaling reads ``scale_O[0]``. GPU
targets use other kernels, which have neither problem.
"""

from __future__ import annotations

import tvm
from tvm import IRModule, tirx

from webbuild.errors import BuildError

PREFILL_FUNCTIONS = ("batch_prefill_paged_kv_cpu", "batch_prefill_paged_kv_cpu_sliding_window")


# Each repair: a line of the kernel's TVMScript and what replaces it (kept at its indentation).
_REPAIRS = {
    "m_val[0] = T.float32(-50000.0)": "m_val[0] = T.float32(-50000.0)\n{indent}new_m[0] = T.float32(-50000.0)",
    "O_local[d_idx] = O_local[d_idx] * scale_O[d_idx]": "O_local[d_idx] = O_local[d_idx] * scale_O[0]",
}


def _fixed(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """The kernel printed as TVMScript, each repaired line replaced, parsed back. TIR has no Python mutator in
    TVM 0.27; the text of a kernel that changes shape fails the count check instead of being patched wrongly."""
    lines = func.script().splitlines()
    for old, new in _REPAIRS.items():
        hits = [i for i, line in enumerate(lines) if line.strip() == old]
        if len(hits) != 1:
            raise BuildError(f"TVM's CPU prefill kernel changed: {old!r} found {len(hits)} times")
        indent = lines[hits[0]][: len(lines[hits[0]]) - len(lines[hits[0]].lstrip())]
        lines[hits[0]] = indent + new.format(indent=indent)
    return tvm.script.from_source("\n".join(lines))


def fix_cpu_prefill(mod: IRModule) -> IRModule:
    """``mod`` with the CPU prefill kernels it holds repaired (GPU modules hold none and pass unchanged)."""
    names = {gv.name_hint for gv in mod.get_global_vars()}
    for name in PREFILL_FUNCTIONS:
        if name in names:
            mod[name] = _fixed(mod[name])
    return mod
