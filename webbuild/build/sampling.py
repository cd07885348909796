"""Sampling functions compiled into the model library, under the names and signatures WebLLM looks up
(ARTIFACTS.md), so that a token can be chosen on the GPU and only its id crosses back to the page:

- ``apply_logit_bias_inplace(logits [b, v], pos2seq_id [n], token_ids [n], logit_bias [n])``
- ``apply_penalty_inplace(logits, seq_ids [s], pos2seq_id [n], token_ids [n], token_cnt [n], penalties [s, 3])``:
  ``logit - (presence + frequency * count)``, then the repetition penalty (divide positive, multiply negative)
- ``apply_bitmask_inplace(logits, seq_ids [s], bitmask [b, ceil(v / 32)])``: tokens whose bit is 0 get the
  lowest float
- ``softmax_with_temperature(logits [b, 1, v], temperature [b]) -> probs [b, 1, v]``
- ``argsort_probs(probs [b, v]) -> (sorted_probs, sorted_indices)``, most likely first (ties: lower id first)
- ``sample_with_top_p(sorted_probs [b, v], sorted_indices [b, v], uniform_samples [n], sample_indices [n],
  top_p [b]) -> [n]``: the smallest prefix whose mass reaches ``top_p`` of the row's, then the first token
  whose cumulative probability exceeds ``uniform * that mass`` (inverse CDF in the given order)
- ``argmax_logits(logits [b, v]) -> [b]`` (ours): the greedy token, lowest id on ties, NaN never chosen

The browser runtime uses argmax, bias, penalties, softmax and ``sample_with_top_p`` over token-id order: the
rule of its CPU sampler at ``top_p = 1`` (web_runtime/src/sampler.js), in float32 on the GPU.

GPU kernels use one workgroup per row (``THREADS`` threads, shared-memory reductions and scans); the CPU
build gets the same kernels with one thread, so both compile from one definition.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tvm import IRModule, relax, tirx
from tvm.script import tirx as T
from tvm.target import Target

THREADS = 256  # per workgroup: every WebGPU adapter allows it (SwiftShader's maximum)
_LOG_THREADS = THREADS.bit_length() - 1


def _loops(gpu: bool) -> Callable[[Any, str], Any]:
    """``for i in par(n, "threadIdx.x")``: a thread-bound loop on a GPU, a serial one on the CPU."""

    def par(extent: Any, thread: str) -> Any:
        return T.thread_binding(extent, thread=thread) if gpu else T.serial(extent)

    return par


def argmax_kernel(vocab: int, gpu: bool) -> tirx.PrimFunc:
    nt = THREADS if gpu else 1
    steps = _LOG_THREADS if gpu else 0
    scope = "shared" if gpu else "global"
    per_thread = (vocab + nt - 1) // nt
    par = _loops(gpu)

    @T.prim_func(private=True, s_tir=True)
    def argmax(var_logits: T.handle, var_out: T.handle):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        batch = T.int64()
        logits = T.match_buffer(var_logits, (batch, vocab), "float32")
        out = T.match_buffer(var_out, (batch,), "int32")
        for b in par(batch, "blockIdx.x"):
            with T.sblock("row"):
                best_v = T.sblock_alloc_buffer((nt,), "float32", scope=scope)
                best_i = T.sblock_alloc_buffer((nt,), "int32", scope=scope)
                for t in par(nt, "threadIdx.x"):
                    with T.sblock("thread"):
                        v = T.sblock_alloc_buffer((1,), "float32", scope="local")
                        bv = T.sblock_alloc_buffer((1,), "float32", scope="local")
                        bi = T.sblock_alloc_buffer((1,), "int32", scope="local")
                        ci = T.sblock_alloc_buffer((1,), "int32", scope="local")
                        # WGSL has no infinity: "nothing yet" is id `vocab`, with the lowest float as its value.
                        bv[0] = T.min_value("float32")
                        bi[0] = vocab
                        # Strided, increasing ids: a strict > keeps the lowest id of equal values; NaN and -inf
                        # never win, as in the CPU sampler.
                        for k in T.serial(per_thread):
                            if k * nt + t < vocab:
                                v[0] = logits[b, k * nt + t]
                                if v[0] > bv[0] or (bi[0] == vocab and v[0] == bv[0]):
                                    bv[0] = v[0]
                                    bi[0] = T.Cast("int32", k * nt + t)
                        best_v[t] = bv[0]
                        best_i[t] = bi[0]
                        if gpu:
                            T.tvm_storage_sync("shared")
                        # Tree reduction: each thread keeps its best in registers and shows it in its own slot;
                        # reads and writes of the slots are separated by barriers.
                        for s in T.serial(steps):
                            v[0] = T.min_value("float32")
                            ci[0] = vocab
                            if t < T.shift_right(nt, s + 1):
                                v[0] = best_v[t + T.shift_right(nt, s + 1)]
                                ci[0] = best_i[t + T.shift_right(nt, s + 1)]
                            if gpu:
                                T.tvm_storage_sync("shared")
                            if v[0] > bv[0] or (v[0] == bv[0] and ci[0] < bi[0]):
                                bv[0] = v[0]
                                bi[0] = ci[0]
                            best_v[t] = bv[0]
                            best_i[t] = bi[0]
                            if gpu:
                                T.tvm_storage_sync("shared")
                        if t == 0:
                            # As the CPU sampler: no value above -inf (all -inf or NaN) gives token 0.
                            out[b] = T.Select(bi[0] == vocab, 0, bi[0])

    return argmax


def sample_top_p_kernel(vocab: int, gpu: bool) -> tirx.PrimFunc:
    nt = THREADS if gpu else 1
    steps = _LOG_THREADS if gpu else 0
    scope = "shared" if gpu else "global"
    chunk = (vocab + nt - 1) // nt  # each thread owns a contiguous run of the row
    par = _loops(gpu)

    @T.prim_func(private=True, s_tir=True)
    def sample_with_top_p(
        var_probs: T.handle,
        var_ids: T.handle,
        var_uniform: T.handle,
        var_rows: T.handle,
        var_top_p: T.handle,
        var_out: T.handle,
    ):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        batch = T.int64()
        n = T.int64()
        probs = T.match_buffer(var_probs, (batch, vocab), "float32")
        ids = T.match_buffer(var_ids, (batch, vocab), "int32")
        uniform = T.match_buffer(var_uniform, (n,), "float32")
        rows = T.match_buffer(var_rows, (n,), "int32")
        top_p = T.match_buffer(var_top_p, (batch,), "float32")
        out = T.match_buffer(var_out, (n,), "int32")
        for j in par(n, "blockIdx.x"):
            with T.sblock("sample"):
                scan = T.sblock_alloc_buffer((nt,), "float32", scope=scope)
                last = T.sblock_alloc_buffer((nt,), "int32", scope=scope)
                mass = T.sblock_alloc_buffer((1,), "float32", scope=scope)  # of the kept prefix
                pick = T.sblock_alloc_buffer((1,), "int32", scope=scope)  # the chosen position
                for t in par(nt, "threadIdx.x"):
                    with T.sblock("thread"):
                        acc = T.sblock_alloc_buffer((1,), "float32", scope="local")
                        other = T.sblock_alloc_buffer((1,), "float32", scope="local")
                        other_last = T.sblock_alloc_buffer((1,), "int32", scope="local")
                        lo = T.sblock_alloc_buffer((1,), "float32", scope="local")
                        hi = T.sblock_alloc_buffer((1,), "float32", scope="local")
                        goal = T.sblock_alloc_buffer((1,), "float32", scope="local")
                        # 1. each thread's sum, and its last token with a nonzero probability
                        acc[0] = T.float32(0)
                        last[t] = -1
                        for k in T.serial(chunk):
                            if t * chunk + k < vocab:
                                acc[0] = acc[0] + probs[rows[j], t * chunk + k]
                                if probs[rows[j], t * chunk + k] > T.float32(0):
                                    last[t] = T.Cast("int32", t * chunk + k)
                        scan[t] = acc[0]
                        if gpu:
                            T.tvm_storage_sync("shared")
                        # 2. inclusive prefix sums over the threads (Hillis-Steele), and the last nonzero token
                        for s in T.serial(steps):
                            other[0] = T.float32(0)
                            other_last[0] = -1
                            if t >= T.shift_left(1, s):
                                other[0] = scan[t - T.shift_left(1, s)]
                                other_last[0] = last[t - T.shift_left(1, s)]
                            if gpu:
                                T.tvm_storage_sync("shared")
                            scan[t] = scan[t] + other[0]
                            last[t] = T.max(last[t], other_last[0])
                            if gpu:
                                T.tvm_storage_sync("shared")
                        if t == 0:
                            mass[0] = scan[nt - 1]  # if rounding keeps every thread from reaching the limit
                            pick[0] = T.max(last[nt - 1], 0)  # likewise: the last token with a probability
                        if gpu:
                            T.tvm_storage_sync("shared")
                        # 3. the kept mass: the cumulative sum at the first token reaching top_p of the total
                        lo[0] = T.float32(0)
                        if t > 0:
                            lo[0] = scan[t - 1]
                        hi[0] = scan[t]
                        goal[0] = top_p[rows[j]] * scan[nt - 1]
                        if lo[0] < goal[0] and goal[0] <= hi[0]:
                            acc[0] = lo[0]
                            for k in T.serial(chunk):
                                if t * chunk + k < vocab and acc[0] < goal[0]:
                                    acc[0] = acc[0] + probs[rows[j], t * chunk + k]
                                    if acc[0] >= goal[0]:
                                        mass[0] = acc[0]
                        if gpu:
                            T.tvm_storage_sync("shared")
                        # 4. the first token whose cumulative probability exceeds uniform * kept mass
                        goal[0] = uniform[j] * mass[0]
                        if lo[0] <= goal[0] and goal[0] < hi[0]:
                            acc[0] = lo[0]
                            for k in T.serial(chunk):
                                if t * chunk + k < vocab and acc[0] <= goal[0]:
                                    acc[0] = acc[0] + probs[rows[j], t * chunk + k]
                                    if acc[0] > goal[0] and probs[rows[j], t * chunk + k] > T.float32(0):
                                        pick[0] = T.Cast("int32", t * chunk + k)
                        if gpu:
                            T.tvm_storage_sync("shared")
                        if t == 0:
                            out[j] = ids[rows[j], pick[0]]

    return sample_with_top_p


def logit_bias_kernel(vocab: int, gpu: bool) -> tirx.PrimFunc:
    nt = THREADS if gpu else 1
    par = _loops(gpu)

    @T.prim_func(private=True, s_tir=True)
    def apply_logit_bias(var_logits: T.handle, var_pos2seq: T.handle, var_ids: T.handle, var_bias: T.handle):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        batch = T.int64()
        n = T.int64()
        logits = T.match_buffer(var_logits, (batch, vocab), "float32")
        pos2seq = T.match_buffer(var_pos2seq, (n,), "int32")
        ids = T.match_buffer(var_ids, (n,), "int32")
        bias = T.match_buffer(var_bias, (n,), "float32")
        for g in par((n + nt - 1) // nt, "blockIdx.x"):
            for t in par(nt, "threadIdx.x"):
                with T.sblock("bias"):
                    if g * nt + t < n:
                        logits[pos2seq[g * nt + t], ids[g * nt + t]] = (
                            logits[pos2seq[g * nt + t], ids[g * nt + t]] + bias[g * nt + t]
                        )

    return apply_logit_bias


def penalty_kernel(vocab: int, gpu: bool) -> tirx.PrimFunc:
    nt = THREADS if gpu else 1
    par = _loops(gpu)

    @T.prim_func(private=True, s_tir=True)
    def apply_penalty(
        var_logits: T.handle,
        var_seq_ids: T.handle,
        var_pos2seq: T.handle,
        var_ids: T.handle,
        var_cnt: T.handle,
        var_penalties: T.handle,
    ):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        batch = T.int64()
        seqs = T.int64()
        n = T.int64()
        logits = T.match_buffer(var_logits, (batch, vocab), "float32")
        seq_ids = T.match_buffer(var_seq_ids, (seqs,), "int32")
        pos2seq = T.match_buffer(var_pos2seq, (n,), "int32")
        ids = T.match_buffer(var_ids, (n,), "int32")
        cnt = T.match_buffer(var_cnt, (n,), "int32")
        penalties = T.match_buffer(var_penalties, (seqs, 3), "float32")
        for g in par((n + nt - 1) // nt, "blockIdx.x"):
            for t in par(nt, "threadIdx.x"):
                with T.sblock("penalty"):
                    value = T.sblock_alloc_buffer((1,), "float32", scope="local")
                    if g * nt + t < n:
                        value[0] = logits[seq_ids[pos2seq[g * nt + t]], ids[g * nt + t]] - (
                            penalties[pos2seq[g * nt + t], 0]
                            + penalties[pos2seq[g * nt + t], 1] * T.Cast("float32", cnt[g * nt + t])
                        )
                        logits[seq_ids[pos2seq[g * nt + t]], ids[g * nt + t]] = T.Select(
                            value[0] > T.float32(0),
                            value[0] / penalties[pos2seq[g * nt + t], 2],
                            value[0] * penalties[pos2seq[g * nt + t], 2],
                        )

    return apply_penalty


def bitmask_kernel(vocab: int, gpu: bool) -> tirx.PrimFunc:
    nt = THREADS if gpu else 1
    words = (vocab + 31) // 32
    par = _loops(gpu)

    @T.prim_func(private=True, s_tir=True)
    def apply_bitmask(var_logits: T.handle, var_seq_ids: T.handle, var_bitmask: T.handle):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        batch = T.int64()
        seqs = T.int64()
        logits = T.match_buffer(var_logits, (batch, vocab), "float32")
        seq_ids = T.match_buffer(var_seq_ids, (seqs,), "int32")
        bitmask = T.match_buffer(var_bitmask, (batch, words), "int32")
        for s in par(seqs, "blockIdx.y"):
            for g in par((vocab + nt - 1) // nt, "blockIdx.x"):
                for t in par(nt, "threadIdx.x"):
                    with T.sblock("mask"):
                        if g * nt + t < vocab:
                            if (
                                T.bitwise_and(
                                    T.shift_right(bitmask[seq_ids[s], T.shift_right(g * nt + t, 5)], (g * nt + t) % 32),
                                    1,
                                )
                                == 0
                            ):
                                logits[seq_ids[s], g * nt + t] = T.min_value("float32")

    return apply_bitmask


def _sort_padded(vocab: int) -> int:
    return 1 << max(vocab - 1, 1).bit_length()


def sort_init_kernel(vocab: int, gpu: bool) -> tirx.PrimFunc:
    """Copies a row into a power-of-two buffer for the bitonic network: padding sorts last."""
    nt = THREADS if gpu else 1
    size = _sort_padded(vocab)
    par = _loops(gpu)

    @T.prim_func(private=True, s_tir=True)
    def sort_init(var_probs: T.handle, var_keys: T.handle, var_ids: T.handle):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        batch = T.int64()
        probs = T.match_buffer(var_probs, (batch, vocab), "float32")
        keys = T.match_buffer(var_keys, (batch, size), "float32")
        ids = T.match_buffer(var_ids, (batch, size), "int32")
        for b in par(batch, "blockIdx.y"):
            for g in par(size // nt, "blockIdx.x"):
                for t in par(nt, "threadIdx.x"):
                    with T.sblock("init"):
                        keys[b, g * nt + t] = T.if_then_else(
                            g * nt + t < vocab, probs[b, T.min(g * nt + t, vocab - 1)], T.min_value("float32")
                        )
                        ids[b, g * nt + t] = T.Cast("int32", g * nt + t)

    return sort_init


def sort_step_kernel(vocab: int, gpu: bool) -> tirx.PrimFunc:
    """One compare-exchange stage (block ``k``, distance ``j``) of a bitonic sorting network, in place: larger
    key first, lower id first among equal keys (a total order, so the result is what a stable sort gives)."""
    nt = THREADS if gpu else 1
    size = _sort_padded(vocab)
    par = _loops(gpu)

    @T.prim_func(private=True, s_tir=True)
    def sort_step(var_keys: T.handle, var_ids: T.handle, j: T.int64, k: T.int64):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        batch = T.int64()
        keys = T.match_buffer(var_keys, (batch, size), "float32")
        ids = T.match_buffer(var_ids, (batch, size), "int32")
        for b in par(batch, "blockIdx.y"):
            for g in par(size // 2 // nt, "blockIdx.x"):
                for t in par(nt, "threadIdx.x"):
                    with T.sblock("step"):
                        lo = T.sblock_alloc_buffer((1,), "int32", scope="local")  # WGSL has no 64-bit integers
                        hi = T.sblock_alloc_buffer((1,), "int32", scope="local")
                        key = T.sblock_alloc_buffer((2,), "float32", scope="local")
                        idx = T.sblock_alloc_buffer((2,), "int32", scope="local")
                        flag = T.sblock_alloc_buffer((2,), "int32", scope="local")  # hi is better; ascending block
                        # The pair of this thread: lo has bit j clear, hi = lo + j.
                        lo[0] = T.Cast("int32", (g * nt + t) // j * (2 * j) + (g * nt + t) % j)
                        hi[0] = lo[0] + T.Cast("int32", j)
                        key[0] = keys[b, lo[0]]
                        key[1] = keys[b, hi[0]]
                        idx[0] = ids[b, lo[0]]
                        idx[1] = ids[b, hi[0]]
                        # In blocks with bit k clear the pair ends in order (best first), else reversed.
                        flag[0] = T.Cast("int32", key[1] > key[0] or (key[1] == key[0] and idx[1] < idx[0]))
                        flag[1] = T.Cast("int32", T.bitwise_and(lo[0], T.Cast("int32", k)) == 0)
                        if flag[0] == flag[1]:
                            keys[b, lo[0]] = key[1]
                            keys[b, hi[0]] = key[0]
                            ids[b, lo[0]] = idx[1]
                            ids[b, hi[0]] = idx[0]

    return sort_step


def add_sampling_functions(mod: IRModule, vocab: int, target: Target) -> IRModule:
    """``mod`` with the sampling functions above, as Relax functions (what a VM looks up by name)."""
    gpu = target.kind.name != "llvm"
    bb = relax.BlockBuilder(mod)
    batch, n, seqs = tirx.Var("batch_size", "int64"), tirx.Var("num_samples", "int64"), tirx.Var("num_seq", "int64")

    def tensor(name: str, shape: tuple[Any, ...], dtype: str) -> relax.Var:
        return relax.Var(name, relax.TensorType(shape, dtype))

    rows = (batch, vocab)

    def in_place(name: str, kernel: tirx.PrimFunc, params: list[relax.Var]) -> None:
        logits = tensor("logits", rows, "float32")
        with bb.function(name, [logits, *params]):
            gv = bb.add_func(kernel, f"{name}_kernel")
            out = bb.emit(relax.call_tir_inplace(gv, [logits, *params], 0, logits.ty))
            bb.emit_func_output(out)

    in_place(
        "apply_logit_bias_inplace",
        logit_bias_kernel(vocab, gpu),
        [
            tensor("pos2seq_id", (n,), "int32"),
            tensor("token_ids", (n,), "int32"),
            tensor("logit_bias", (n,), "float32"),
        ],
    )
    in_place(
        "apply_penalty_inplace",
        penalty_kernel(vocab, gpu),
        [
            tensor("seq_ids", (seqs,), "int32"),
            tensor("pos2seq_id", (n,), "int32"),
            tensor("token_ids", (n,), "int32"),
            tensor("token_cnt", (n,), "int32"),
            tensor("penalties", (seqs, 3), "float32"),
        ],
    )
    in_place(
        "apply_bitmask_inplace",
        bitmask_kernel(vocab, gpu),
        [tensor("seq_ids", (seqs,), "int32"), tensor("bitmask", (batch, (vocab + 31) // 32), "int32")],
    )

    logits = tensor("logits", rows, "float32")
    with bb.function("argmax_logits", [logits]):
        gv = bb.add_func(argmax_kernel(vocab, gpu), "argmax_logits_kernel")
        out = bb.emit(relax.call_tir(gv, [logits], relax.TensorType((batch,), "int32")))
        bb.emit_func_output(out)

    logits3 = tensor("logits", (batch, 1, vocab), "float32")
    temperature = tensor("temperature", (batch,), "float32")
    with bb.function("softmax_with_temperature", [logits3, temperature]):
        with bb.dataflow():
            scaled = bb.emit(relax.op.divide(logits3, relax.op.reshape(temperature, (batch, 1, 1))))
            probs = bb.emit_output(relax.op.nn.softmax(scaled, axis=-1))
        bb.emit_func_output(probs)

    # TVM's GPU sort launches on blockIdx.z, which WebGPU lacks: a bitonic network instead, one launch a stage.
    size = _sort_padded(vocab)
    probs2 = tensor("probs", rows, "float32")
    with bb.function("argsort_probs", [probs2]):
        with bb.dataflow():
            init = bb.add_func(sort_init_kernel(vocab, gpu), "argsort_probs_init")
            step = bb.add_func(sort_step_kernel(vocab, gpu), "argsort_probs_step")
            padded = [relax.TensorType((batch, size), "float32"), relax.TensorType((batch, size), "int32")]
            state = bb.emit(relax.call_tir(init, [probs2], padded))
            k = 2
            while k <= size:
                j = k // 2
                while j >= 1:
                    args = [relax.TupleGetItem(state, 0), relax.TupleGetItem(state, 1)]
                    args += [relax.prim_value(tirx.IntImm("int64", j)), relax.prim_value(tirx.IntImm("int64", k))]
                    state = bb.emit(relax.call_tir_inplace(step, args, [0, 1], padded))
                    j //= 2
                k *= 2
            ordered = bb.emit(relax.op.strided_slice(relax.TupleGetItem(state, 0), [0, 1], [0, 0], [batch, vocab]))
            order = bb.emit(relax.op.strided_slice(relax.TupleGetItem(state, 1), [0, 1], [0, 0], [batch, vocab]))
            result = bb.emit_output(relax.Tuple([ordered, order]))
        bb.emit_func_output(result)

    sorted_probs, sorted_ids = tensor("sorted_probs", rows, "float32"), tensor("sorted_indices", rows, "int32")
    uniform, sample_rows = tensor("uniform_samples", (n,), "float32"), tensor("sample_indices", (n,), "int32")
    top_p = tensor("top_p", (batch,), "float32")
    with bb.function("sample_with_top_p", [sorted_probs, sorted_ids, uniform, sample_rows, top_p]):
        gv = bb.add_func(sample_top_p_kernel(vocab, gpu), "sample_with_top_p_kernel")
        args = [sorted_probs, sorted_ids, uniform, sample_rows, top_p]
        out = bb.emit(relax.call_tir(gv, args, relax.TensorType((n,), "int32")))
        bb.emit_func_output(out)
    return bb.get()
