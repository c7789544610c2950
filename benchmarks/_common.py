"""Shared helpers for the benchmark scripts (not a benchmark itself).

Import order matters: `limit_threads()` must run before `jax` is imported,
because XLA sizes its CPU thread pools once, from the process's CPU affinity
mask, when the backend starts.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python benchmarks/x.py` from anywhere, without `pip install -e .`
    sys.path.insert(0, str(REPO))

# The PyTorch reference and its FLOP model live next to the repository (../shared/bench);
# S2S_BENCH_REF=DIR points elsewhere.
REF_DIR = Path(os.environ.get("S2S_BENCH_REF", REPO.parent / "shared" / "bench"))


def limit_threads(n: int) -> dict:
    """Restricts this process to `n` CPUs, the XLA analogue of torch.set_num_threads(n).

    XLA:CPU has no thread-count knob in jax 0.10 (`--xla_cpu_multi_thread_eigen=false`
    only gives 1 thread); it sizes its Eigen/intra-op pools from the CPUs this process
    may run on (tsl::port::MaxParallelism -> sched_getaffinity), so pinning the process
    to the first `n` allowed CPUs before jax starts gives it `n` compute threads -- the
    method the jax maintainers recommend (jax-ml/jax#1539). On a 2-core machine with
    n=2 this changes nothing. n <= 0 leaves the affinity alone.
    """
    info = {"requested": n, "cpus_visible": os.cpu_count()}
    # OpenBLAS (numpy's, and scipy's, which jaxlib's CPU LAPACK kernels call: the QR of
    # nn.initializers.orthogonal at parameter init) runs single-threaded. With 2 OpenBLAS
    # threads on a busy 2-core machine one 2048x512 QR intermittently stalled ~9 s (4 of 6
    # calls), making init take 6-50 s; with 1 thread it took 0.3-0.4 s (3 of 3). XLA's own
    # matmuls do not use OpenBLAS, so this changes no timed number. Respects a value the
    # caller has set. Must happen before numpy/scipy/jax are imported.
    # (OMP_NUM_THREADS is left alone: XLA does not use OpenMP, and neither does this OpenBLAS.)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    info["openblas_threads"] = os.environ["OPENBLAS_NUM_THREADS"]
    if "jax" in sys.modules:
        info["note"] = "jax was imported before limit_threads(); affinity may not apply"
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        info["applied"] = False
        return info
    if n > 0 and len(allowed) > n:
        os.sched_setaffinity(0, allowed[:n])
    info["applied"] = n > 0
    info["cpus_used"] = sorted(os.sched_getaffinity(0))
    return info


def summarize(xs: list[float]) -> dict:
    """Same shape and rounding as torch_ref.py's summarize()."""
    return {
        "median": round(statistics.median(xs), 2),
        "min": round(min(xs), 2),
        "max": round(max(xs), 2),
        "repeats": [round(x, 2) for x in xs],
    }


def peak_rss_mb() -> float:
    """Peak resident set size of this process (Linux reports ru_maxrss in KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if sys.platform == "darwin":
        kib /= 1024  # bytes there
    return round(kib / 1024, 1)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def environment(threads_info: dict) -> dict:
    import flax
    import jax
    import jaxlib
    import optax

    dev = jax.devices()[0]
    return {
        "device": f"{dev.platform}:{getattr(dev, 'device_kind', dev)} ({cpu_name()})",
        "jax_version": jax.__version__,
        "jaxlib_version": jaxlib.__version__,
        "flax_version": flax.__version__,
        "optax_version": optax.__version__,
        "python": platform.python_version(),
        "threads": threads_info,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def measure_matmul_peak(n: int = 2048, repeats: int = 3, min_time: float = 0.3) -> float:
    """Median GFLOP/s of a jitted float32 [n, n] @ [n, n] in this process (peak.py's method)."""
    return measure_matmul_rate(n, n, n, repeats, min_time)


def measure_matmul_rate(m: int, k: int, n: int, repeats: int = 3, min_time: float = 0.3) -> float:
    """Median GFLOP/s of a jitted float32 [m, k] @ [k, n] over `repeats` windows of >= `min_time` s."""
    import time

    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.standard_normal((m, k), dtype=np.float32))
    b = jnp.asarray(rng.standard_normal((k, n), dtype=np.float32))
    mm = jax.jit(lambda x, y: x @ y)
    mm(a, b).block_until_ready()
    rates = []
    for _ in range(repeats):
        count, t0 = 0, time.perf_counter()
        while True:
            mm(a, b).block_until_ready()
            count += 1
            dt = time.perf_counter() - t0
            if dt >= min_time and count >= 3:
                break
        rates.append(2.0 * m * k * n * count / dt / 1e9)
    return round(statistics.median(rates), 1)


def add_protocol_size_flags(ap) -> None:
    """The reference protocol's size flags (torch_ref.py's names and defaults), for every script on its batches."""
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--emb", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--maxlen", type=int, default=32)


# ---------------------------------------------------------------------------------------
# FLOP model: torch_ref's peak.py when importable, else the same formulas re-stated here.
# Matmul FLOPs only (1 multiply-add = 2 FLOPs); training step = 3x forward.
# ---------------------------------------------------------------------------------------


def profile_top_ops(run, directory: str, top: int = 15) -> dict:
    """Runs `run()` under jax.profiler with a Perfetto trace and sums the XLA ops' time.

    Counts the events on XLA's threads (not Python's, not the executor's wrappers) and
    returns {"wall_ms", "op_ms", "kinds": [[kind, ms, share]], "ops": [[op, ms, share]]},
    where a kind is an op name without its numeric suffix (ynn_fusion, fusion, dot, ...).
    The trace stays in `directory` for TensorBoard or Perfetto.
    """
    import collections
    import glob
    import gzip
    import re
    import time

    import jax

    start = time.perf_counter()
    with jax.profiler.trace(directory, create_perfetto_trace=True):
        run()
    wall_ms = 1000 * (time.perf_counter() - start)
    paths = sorted(glob.glob(os.path.join(directory, "**", "*.trace.json.gz"), recursive=True), key=os.path.getmtime)
    if not paths:
        return {"error": f"no Perfetto trace written under {directory}"}
    with gzip.open(paths[-1], "rt") as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    python_threads = {
        (e.get("pid"), e.get("tid"))
        for e in events
        if e.get("ph") == "M" and e.get("name") == "thread_name" and e.get("args", {}).get("name") == "python"
    }
    ops: dict[str, float] = collections.Counter()
    for e in events:
        name = e.get("name", "")
        if e.get("ph") != "X" or "dur" not in e or (e.get("pid"), e.get("tid")) in python_threads:
            continue
        if name.startswith(("$", "ThunkExecutor")):
            continue
        ops[name] += e["dur"] / 1000.0
    kinds: dict[str, float] = collections.Counter()
    for name, ms in ops.items():
        kinds[re.sub(r"\.\d+$", "", name)] += ms
    total = sum(ops.values())

    def ranked(counter):
        return [[n[:100], round(ms, 1), round(ms / max(total, 1e-9), 4)] for n, ms in counter.most_common(top)]

    return {
        "trace": paths[-1],
        "wall_ms": round(wall_ms, 1),
        "op_ms": round(total, 1),
        "kinds": ranked(kinds),
        "ops": ranked(ops),
    }


def load_flop_model():
    """(train_step_flops, greedy_flops, beam_flops, source) -- peak.py's if importable."""
    if REF_DIR.is_dir() and str(REF_DIR) not in sys.path:
        sys.path.append(str(REF_DIR))
    try:
        from peak import beam_flops, greedy_flops, train_step_flops  # type: ignore

        return train_step_flops, greedy_flops, beam_flops, str(REF_DIR / "peak.py")
    except ImportError:
        return _train_step_flops, _greedy_flops, _beam_flops, "benchmarks/_common.py (copy of peak.py's model)"


def _lstm_flops(in_dim, H, layers):
    f, d = 0, in_dim
    for _ in range(layers):
        f += 2 * (d + H) * 4 * H
        d = H
    return f


def _dec_flops(E, H, V, layers, attention=False, src_len=32, input_feed=False, score="general"):
    f = _lstm_flops(E + (H if (attention and input_feed) else 0), H, layers)
    if attention:
        if score == "general":
            f += 2 * H * H
        f += 4 * src_len * H + 4 * H * H
    return f + 2 * H * V


def _train_step_flops(
    src_lens,
    tgt_lens,
    E=256,
    H=512,
    V=8000,
    layers=2,
    attention=False,
    input_feed=False,
    score="general",
    padded_len=32,
    padded=False,
):
    fwd = 0
    for ls, lt in zip(src_lens, tgt_lens):
        ls_, lt_ = (padded_len, padded_len) if padded else (ls, lt)
        fwd += ls_ * _lstm_flops(E, H, layers)
        fwd += lt_ * _dec_flops(E, H, V, layers, attention, ls_, input_feed, score)
    return 3 * fwd


def _greedy_flops(
    src_lens,
    steps,
    E=256,
    H=512,
    V=8000,
    layers=2,
    attention=False,
    input_feed=False,
    score="general",
    padded_len=32,
    padded=False,
):
    f = 0
    for ls in src_lens:
        ls_ = padded_len if padded else ls
        f += ls_ * _lstm_flops(E, H, layers)
        f += steps * _dec_flops(E, H, V, layers, attention, ls_, input_feed, score)
    return f


def _beam_flops(src_lens, steps, beam, **kw):
    enc = _greedy_flops(src_lens, 0, **kw)
    return enc + beam * (_greedy_flops(src_lens, steps, **kw) - enc)


# ---------------------------------------------------------------------------------------
# Model construction through the project's own config path
# ---------------------------------------------------------------------------------------


def build_model(
    *,
    vocab: int,
    emb: int,
    hidden: int,
    layers: int,
    dropout: float = 0.0,
    attention: str = "none",
    input_feeding: bool = False,
    unroll: int = 1,
    dtype: str = "float32",
    recurrence: str = "auto",
    cell: str = "lstm",
    bidirectional: bool = False,
    lr: float = 1e-3,
    clip: float = 1.0,
):
    """(config, model, optimizer) built the way train.py builds them.

    configs/default.py's get_config() with the benchmark's sizes, then
    s2s_jax.models.seq2seq.make_model / s2s_jax.training.optimizers.make_optimizer. Attention goes through the config keys
    `model.attention` / `model.input_feeding` when configs/default.py has them, else
    straight into ModelConfig's fields of the same names; a library without either
    raises a clear error. make_model has no dtype argument, so bfloat16 is applied with
    dataclasses.replace on the resulting ModelConfig (params stay float32; matmuls and
    the LSTM carry outputs run in bfloat16, gates/softmax in float32, as the model does).
    """
    import dataclasses

    from s2s_jax.configs import default as default_config
    from s2s_jax.models.seq2seq import DTYPES, ModelConfig, Seq2Seq, make_model
    from s2s_jax.training.optimizers import make_optimizer

    config = default_config.get_config()
    with config.unlocked():
        config.model.emb_dim = emb
        config.model.hidden_size = hidden
        config.model.num_layers = layers
        config.model.dropout = dropout
        config.model.cell = cell
        config.model.bidirectional = bidirectional
        config.model.feed_context = False
        config.model.tie_embeddings = False
        config.model.scan_unroll = unroll
        config.model.recurrence = recurrence
        config.train.optimizer = "adam"
        config.train.learning_rate = lr
        # "constant" = linear warm-up over max(1, warmup_steps) steps then constant: with
        # 0 the very first update has lr 0 and every later one lr; the work is identical.
        config.train.lr_schedule = "constant"
        config.train.warmup_steps = 0
        config.train.clip_norm = clip
        config.train.label_smoothing = 0.0
        config.train.teacher_forcing_ratio = 1.0
        extra = {}
        wants_attention = attention != "none" or input_feeding
        if "attention" in config.model:
            config.model.attention = attention
            if "input_feeding" in config.model:
                config.model.input_feeding = input_feeding
            elif input_feeding:
                extra["input_feeding"] = True
        elif wants_attention:
            extra = {"attention": attention, "input_feeding": input_feeding}
    config.lock()

    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    missing = sorted(set(extra) - fields)
    if missing:
        raise SystemExit(
            f"this s2s_jax has no ModelConfig field(s) {missing}: attention / input feeding "
            "are not available in the library yet (see s2s_jax/models/seq2seq.py)"
        )
    model = make_model(config, vocab, vocab)
    replace = dict(extra)
    if dtype not in DTYPES:
        raise SystemExit(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if dtype != "float32":
        replace["dtype"] = DTYPES[dtype]
    if replace:
        model = Seq2Seq(dataclasses.replace(model.config, **replace))
    optimizer = make_optimizer(config.train)
    return config, model, optimizer


def model_summary(model) -> dict:
    import dataclasses

    out = {}
    for f in dataclasses.fields(model.config):
        v = getattr(model.config, f.name)
        out[f.name] = v if isinstance(v, (int, float, str, bool)) or v is None else str(getattr(v, "__name__", v))
    return out
