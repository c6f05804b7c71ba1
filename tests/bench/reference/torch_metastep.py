#!/usr/bin/env python3
"""Independent PyTorch reference of our meta-step, for the GPU benchmark (and a CPU smoke test).

One meta-iteration = B tasks of N-way K-shot episodes (random images of the right shape; speed
only), each adapted by r inner steps phi <- phi - alpha * grad L_S(phi) of a Conv-4
(4 x [conv 3x3 pad 1 no bias, batch norm with batch statistics (affine, no running stats, eps
1e-5), ReLU, 2x2 max-pool], linear head; as models/conv4.cpp) or a ResNet-12 (--model resnet12,
--widths: 4 residual blocks of 3 x [conv 3x3 pad 1 no bias, batch norm with batch statistics,
LeakyReLU(0.1)], the third's activation after the sum with a 1x1 conv + batch norm shortcut,
2x2 max-pool; global average pool; linear head; as models/resnet12.cpp), then the outer
gradient of the query loss: FOMAML (inner gradients detached), exact MAML (differentiating through the inner
loop: torch.func's nested transforms, the functional form of create_graph=True), or UFOM
(exact path on a Bernoulli(q) subset, g = g_F + (xi/q)(g_E - g_F)); task average, one Adam step.
Written with torch.func.functional_call + torch.func.grad / vjp, in two variants: a Python loop
over tasks (what learn2learn / higher users write) and torch.func.vmap over tasks.

--algo, --r, --B and --variant take comma-separated lists: every combination is one row, timed
in this process (seconds per meta-iteration: median over --iters after --warmup, CUDA
synchronised) with its peak device memory measured as our bench_metastep measures it
(peak_device_mib, memory_method = MEMORY_METHOD, the same text in both): the process's device
memory in use, cudaMemGetInfo's total - free (torch.cuda.mem_get_info), the maximum over a
thread sampling every 5 ms during the timed iterations and a reading after each, minus the same
reading right after context creation (before the model exists). So it counts what PyTorch's
caching allocator holds, not only live tensors; the cache is emptied before each row and after
the warm-up (one more untimed iteration then refills it), so cuDNN's trial workspaces and earlier
rows do not count. One batch is on the device at a time (ours holds one too). The old figure,
torch.cuda.max_memory_allocated (tensors only, reset per row), stays as
max_memory_allocated_bytes. On the CPU: the process's peak RSS, which cannot be reset. Prints
one JSON line per row.
--selftest checks the gradients in float64 instead (MAML != FOMAML, UFOM(q=1) == MAML, loop ==
vmap, MAML == finite differences of the meta-loss) and exits non-zero on a failure.
  usage: torch_metastep.py --device cuda --dataset omniglot --algo fomaml,maml,ufom --r 1,5 \
             --B 32 --variant loop,vmap --iters 5 --warmup 2
         torch_metastep.py --device cpu --model resnet12 --dataset miniimagenet --algo maml \
             --B 1 --variant loop --iters 3 --warmup 1
         torch_metastep.py --device cpu --selftest [--model resnet12]
"""

import argparse
import contextlib
import gc
import itertools
import json
import math
import os
import platform
import resource
import sys
import threading
import time
import traceback

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, grad, grad_and_value, vjp, vmap

DATASETS = {  # image size, channels, Conv-4 filters (the paper's set-ups, as our benchmark)
    "omniglot": (28, 1, 64),
    "miniimagenet": (84, 3, 32),
}
BN_EPS = 1e-5
# Word for word the same as kMemoryMethod in tests/bench/bench_metastep.cpp.
MEMORY_METHOD = ("cudaMemGetInfo total-free: max over the timed iterations (5 ms sampler thread + "
                 "after each), minus the same right after context creation")
MEMORY_SAMPLE_PERIOD_S = 0.005


def csv_list(kind):
    def parse(s):
        return [kind(v) for v in s.split(",") if v != ""]
    return parse


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--dataset", choices=tuple(DATASETS), default="omniglot")
    ap.add_argument("--model", choices=("conv4", "resnet12"), default="conv4")
    ap.add_argument("--filters", type=int, default=0, help="override the dataset's filter count")
    ap.add_argument("--widths", type=csv_list(int), default=[64, 160, 320, 640],
                    help="ResNet-12's four widths")
    ap.add_argument("--algo", type=csv_list(str), default=["maml"], help="fomaml,maml,ufom (list)")
    ap.add_argument("--q", type=float, default=0.1, help="UFOM probability of the exact path")
    ap.add_argument("--r", type=csv_list(int), default=[1], help="inner steps (list)")
    ap.add_argument("--B", type=csv_list(int), default=[32], help="tasks per meta-iteration (list)")
    ap.add_argument("--ways", type=int, default=5)
    ap.add_argument("--shots", type=int, default=1)
    ap.add_argument("--queries", type=int, default=15, help="query examples per class")
    ap.add_argument("--variant", type=csv_list(str), default=["loop"], help="loop,vmap (list)")
    ap.add_argument("--inner-lr", type=float, default=0.4)
    ap.add_argument("--outer-lr", type=float, default=1e-3)
    ap.add_argument("--iters", type=int, default=5, help="timed meta-iterations per row")
    ap.add_argument("--warmup", type=int, default=2, help="untimed meta-iterations per row first")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cudnn-benchmark", type=int, choices=(0, 1), default=1,
                    help="let cuDNN time its algorithms per shape (PyTorch's fastest setting)")
    ap.add_argument("--tf32", type=int, choices=(0, 1), default=0,
                    help="allow TF32 in convolutions / matmuls (off: FP32 like ours)")
    ap.add_argument("--bn", choices=("auto", "native", "manual"), default="auto",
                    help="batch norm: native (nn.BatchNorm2d, cuDNN), manual (elementary ops), "
                         "auto: native for loop, manual for vmap (native has no double "
                         "backward under vmap)")
    ap.add_argument("--selftest", action="store_true", help="gradient checks in float64, then exit")
    args = ap.parse_args(argv)
    for a in args.algo:
        if a not in ("fomaml", "maml", "ufom"):
            ap.error(f"--algo: unknown algorithm '{a}' (fomaml, maml, ufom)")
    for v in args.variant:
        if v not in ("loop", "vmap"):
            ap.error(f"--variant: unknown variant '{v}' (loop, vmap)")
    if "ufom" in args.algo and not 0 < args.q <= 1:
        ap.error("--q must be in (0, 1] for ufom")
    if min(args.r) < 1 or min(args.B) < 1 or args.iters < 1 or args.warmup < 0:
        ap.error("--r, --B and --iters must be >= 1, --warmup >= 0")
    if len(args.widths) != 4 or min(args.widths) < 1:
        ap.error("--widths: four positive widths, e.g. 64,160,320,640")
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: torch sees no usable GPU (torch.cuda.is_available() is False)")
    return args


# ---------------------------------------------------------------------------------------------
# Model


class Block(nn.Module):
    def __init__(self, cin, filters):
        super().__init__()
        self.conv = nn.Conv2d(cin, filters, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(filters, eps=BN_EPS, affine=True, track_running_stats=False)

        self.manual_bn = False

    def forward(self, x):
        x = batch_norm(self.bn, self.conv(x), self.manual_bn)
        # Floor semantics of the 2x2 max-pool, as ours: an odd last row / column is dropped.
        return F.max_pool2d(F.relu(x), 2)


def batch_norm(bn, x, manual):
    """Batch norm with the batch's statistics: nn.BatchNorm2d (track_running_stats=False), or
    the same from elementary ops: PyTorch's fused batch norm has no second derivative under
    vmap ("accessing `data` under vmap transform")."""
    if not manual:
        return bn(x)
    mu = x.mean(dim=(0, 2, 3), keepdim=True)
    var = (x - mu).square().mean(dim=(0, 2, 3), keepdim=True)
    x = (x - mu) * torch.rsqrt(var + BN_EPS)
    return x * bn.weight[None, :, None, None] + bn.bias[None, :, None, None]


def bn2d(channels):
    return nn.BatchNorm2d(channels, eps=BN_EPS, affine=True, track_running_stats=False)


LEAKY_SLOPE = 0.1  # kLeakySlope in models/relu.h


class ResBlock(nn.Module):
    """One block of ResNet-12 (models/resnet12.cpp make_resnet12_block): three conv 3x3 - BN
    (- LeakyReLU for the first two), a 1x1 conv + BN shortcut, the sum, LeakyReLU, then the
    2x2 max-pool (a separate layer in ours)."""

    def __init__(self, cin, width):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, padding=1, bias=False)
        self.bn1 = bn2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = bn2d(width)
        self.conv3 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn3 = bn2d(width)
        self.shortcut_conv = nn.Conv2d(cin, width, 1, bias=False)
        self.shortcut_bn = bn2d(width)
        self.manual_bn = False

    def forward(self, x):
        m = self.manual_bn
        y = F.leaky_relu(batch_norm(self.bn1, self.conv1(x), m), LEAKY_SLOPE)
        y = F.leaky_relu(batch_norm(self.bn2, self.conv2(y), m), LEAKY_SLOPE)
        y = batch_norm(self.bn3, self.conv3(y), m)
        y = y + batch_norm(self.shortcut_bn, self.shortcut_conv(x), m)
        return F.max_pool2d(F.leaky_relu(y, LEAKY_SLOPE), 2)


class ResNet12(nn.Module):
    def __init__(self, channels, widths, ways, size):
        super().__init__()
        cin = channels
        for i, w in enumerate(widths):
            setattr(self, f"block{i + 1}", ResBlock(cin, w))
            cin = w
        if size >> 4 < 1:
            raise ValueError(f"ResNet-12 needs at least 16x16 inputs, got {size}")
        self.head = nn.Linear(cin, ways)

    def blocks(self):
        return (self.block1, self.block2, self.block3, self.block4)

    def set_manual_bn(self, manual):
        for b in self.blocks():
            b.manual_bn = manual

    def forward(self, x):
        for b in self.blocks():
            x = b(x)
        return self.head(x.mean(dim=(2, 3)))  # global average pool


class Conv4(nn.Module):
    def __init__(self, channels, filters, ways, size):
        super().__init__()
        self.block1 = Block(channels, filters)
        self.block2 = Block(filters, filters)
        self.block3 = Block(filters, filters)
        self.block4 = Block(filters, filters)
        s = size
        for _ in range(4):
            s //= 2
        self.head = nn.Linear(filters * s * s, ways)

    def set_manual_bn(self, manual):
        for b in (self.block1, self.block2, self.block3, self.block4):
            b.manual_bn = manual

    def forward(self, x):
        x = self.block4(self.block3(self.block2(self.block1(x))))
        return self.head(x.flatten(1))


def make_model(args, channels, size):
    if args.model == "resnet12":
        return ResNet12(channels, args.widths, args.ways, size)
    return Conv4(channels, args.filters, args.ways, size)


def init_params(model, gen):
    """Our initialisation (models/*.h): He normal convs (fan-in = in channels x k x k), BN gamma 1
    / beta 0, Glorot-uniform head weight, zero head bias. Returns {name: tensor} (no autograd
    state)."""
    out = {}
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[0].rsplit(".", 1)[-1]  # the module's attribute name
        if p.dim() == 4:
            fan_in = p.shape[1] * p.shape[2] * p.shape[3]
            v = torch.randn(p.shape, generator=gen) * math.sqrt(2.0 / fan_in)
        elif "bn" in leaf and name.endswith(".weight"):
            v = torch.ones(p.shape)
        elif ("bn" in leaf and name.endswith(".bias")) or name == "head.bias":
            v = torch.zeros(p.shape)
        elif name == "head.weight":
            lim = math.sqrt(6.0 / (p.shape[0] + p.shape[1]))
            v = (torch.rand(p.shape, generator=gen) * 2 - 1) * lim
        else:
            raise RuntimeError(f"unexpected parameter {name}")
        out[name] = v
    return out


# ---------------------------------------------------------------------------------------------
# Meta-gradients


class MetaStep:
    """Per-task outer gradients and the summed meta-gradient of one iteration."""

    def __init__(self, model, alpha, r, bn="auto"):
        self.model, self.alpha, self.r, self.bn = model, alpha, r, bn

        def loss_fn(p, x, y):
            return F.cross_entropy(functional_call(model, p, (x,)), y)

        self.loss_fn = loss_fn
        self.inner_grad = grad(loss_fn)

    def adapt(self, theta, sx, sy, first_order):
        phi = theta
        for _ in range(self.r):
            g = self.inner_grad(phi, sx, sy)
            if first_order:  # FOMAML: the inner gradients are constants
                g = {k: v.detach() for k, v in g.items()}
            phi = {k: phi[k] - self.alpha * g[k] for k in phi}
        return phi

    def fo_task(self, theta, sx, sy, qx, qy):
        """(query loss, g_F): gradient of L_Q at phi_r, taken as a function of phi_r."""
        phi = {k: v.detach() for k, v in self.adapt(theta, sx, sy, True).items()}
        g_f, loss = grad_and_value(self.loss_fn)(phi, qx, qy)
        return loss, g_f

    def exact_task(self, theta, sx, sy, qx, qy):
        """(query loss, g_F, g_E): one pass through the inner loop gives both, g_E being g_F
        pulled back through the r inner steps (second order)."""
        phi, pullback = vjp(lambda th: self.adapt(th, sx, sy, False), theta)
        g_f, loss = grad_and_value(self.loss_fn)(phi, qx, qy)
        # No graph of the pullback itself (a third order nobody needs), and free the inner
        # loop's graph now rather than when the task's tensors die.
        (g_e,) = pullback(g_f, retain_graph=False, create_graph=False)
        return loss, g_f, g_e

    @staticmethod
    def combine(algo, q, g_f, g_e):
        if algo == "maml":
            return g_e
        # UFOM, exact task (xi = 1): g_F + (1/q)(g_E - g_F)
        return {k: g_f[k] + (g_e[k] - g_f[k]) / q for k in g_f}

    def meta_gradient(self, variant, algo, q, theta, batch, exact):
        """Sum over tasks of each task's estimate, and the summed query loss. batch: (sx, sy,
        qx, qy) with a leading task axis; exact: list of bools (which tasks take the exact path)."""
        sx, sy, qx, qy = batch
        g_sum = {k: torch.zeros_like(v) for k, v in theta.items()}
        loss_sum = torch.zeros((), dtype=next(iter(theta.values())).dtype, device=sx.device)
        if variant == "loop":
            self.model.set_manual_bn(self.bn == "manual")
            for t, ex in enumerate(exact):
                if ex:
                    loss, g_f, g_e = self.exact_task(theta, sx[t], sy[t], qx[t], qy[t])
                    g = self.combine(algo, q, g_f, g_e)
                else:
                    loss, g = self.fo_task(theta, sx[t], sy[t], qx[t], qy[t])
                for k in g_sum:
                    g_sum[k].add_(g[k])
                loss_sum = loss_sum + loss
            return g_sum, loss_sum
        self.model.set_manual_bn(self.bn != "native")
        idx_ex = [t for t, ex in enumerate(exact) if ex]
        idx_fo = [t for t, ex in enumerate(exact) if not ex]
        over_tasks = dict(in_dims=(None, 0, 0, 0, 0))
        if idx_fo:
            i = torch.tensor(idx_fo, device=sx.device)
            loss, g = vmap(self.fo_task, **over_tasks)(theta, sx[i], sy[i], qx[i], qy[i])
            for k in g_sum:
                g_sum[k].add_(g[k].sum(0))
            loss_sum = loss_sum + loss.sum()
        if idx_ex:
            i = torch.tensor(idx_ex, device=sx.device)
            loss, g_f, g_e = vmap(self.exact_task, **over_tasks)(theta, sx[i], sy[i], qx[i], qy[i])
            g = self.combine(algo, q, g_f, g_e)
            for k in g_sum:
                g_sum[k].add_(g[k].sum(0))
            loss_sum = loss_sum + loss.sum()
        return g_sum, loss_sum


def exact_flags(algo, q, B, gen):
    if algo == "maml":
        return [True] * B
    if algo == "fomaml":
        return [False] * B
    return (torch.rand(B, generator=gen) < q).tolist()


def random_batch(args, B, gen, device, dtype):
    """B tasks of random images and balanced, shuffled labels: (sx, sy, qx, qy)."""
    size, channels = args.size, args.channels

    def part(per_class):
        m = args.ways * per_class
        x = torch.rand((B, m, channels, size, size), generator=gen, dtype=dtype)
        base = torch.arange(args.ways).repeat_interleave(per_class)
        y = torch.stack([base[torch.randperm(m, generator=gen)] for _ in range(B)])
        return x.to(device), y.to(device)

    sx, sy = part(args.shots)
    qx, qy = part(args.queries)
    return sx, sy, qx, qy


# ---------------------------------------------------------------------------------------------
# Benchmark rows


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_used(device):
    """Bytes of the GPU's memory in use (cudaMemGetInfo total - free); the first call creates
    the CUDA context."""
    free, total = torch.cuda.mem_get_info(device)
    return total - free


class DeviceMemorySampler:
    """Maximum of device_used over a background thread (every MEMORY_SAMPLE_PERIOD_S) and the
    explicit sample() calls, while the `with` block runs."""

    def __init__(self, device):
        self.device, self.peak, self.samples, self.error = device, 0, 0, None
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self):
        used = device_used(self.device)
        with self._lock:
            self.peak = max(self.peak, used)
            self.samples += 1

    def _run(self):
        try:
            while not self._stop.is_set():
                self.sample()
                self._stop.wait(MEMORY_SAMPLE_PERIOD_S)
        except Exception as e:  # noqa: BLE001 - reported in the row; after-each samples remain
            self.error = f"{type(e).__name__}: {e}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        return False


def versions(device):
    v = {"torch_version": torch.__version__, "cuda_version": torch.version.cuda,
         "python": platform.python_version()}
    try:
        v["cudnn_version"] = torch.backends.cudnn.version()
    except Exception:  # noqa: BLE001 - a CPU-only build
        v["cudnn_version"] = None
    if device.type == "cuda":
        v["device_name"] = torch.cuda.get_device_name(device)
        try:
            v["nccl_version"] = ".".join(map(str, torch.cuda.nccl.version()))
        except Exception:  # noqa: BLE001
            v["nccl_version"] = None
    else:
        v["device_name"] = platform.processor() or platform.machine()
    return v


def run_row(args, device, model, algo, r, B, variant, common):
    dtype = torch.float32
    gen = torch.Generator().manual_seed(args.seed)
    theta = {k: v.to(device=device, dtype=dtype) for k, v in init_params(model, gen).items()}
    opt = torch.optim.Adam(list(theta.values()), lr=args.outer_lr)
    step = MetaStep(model, args.inner_lr, r, args.bn)
    total = args.warmup + args.iters
    xi_gen = torch.Generator().manual_seed(args.seed * 1000003 + 1)
    flags = [exact_flags(algo, args.q, B, xi_gen) for _ in range(total)]
    # vmap changes shapes with the number of exact tasks: warm every count up (cuDNN's
    # per-shape algorithm search stays out of the timing, like JAX's per-count compilation).
    warm = list(range(args.warmup))
    if variant == "vmap" and algo == "ufom":
        seen = {sum(flags[i]) for i in warm}
        for i in range(args.warmup, total):
            if sum(flags[i]) not in seen:
                seen.add(sum(flags[i]))
                warm.append(i)
    data_gen = torch.Generator().manual_seed(args.seed * 1000003 + 2)
    # Made on the host, moved to the device one at a time outside the timing.
    batches = [random_batch(args, B, data_gen, torch.device("cpu"), dtype) for _ in range(total)]
    cuda = device.type == "cuda"

    def empty_cache():
        gc.collect()
        if cuda:
            sync(device)
            torch.cuda.empty_cache()

    empty_cache()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)

    def iteration(i):
        batch = tuple(t.to(device) for t in batches[i])
        sync(device)
        t0 = time.perf_counter()
        g_sum, loss_sum = step.meta_gradient(variant, algo, args.q, theta, batch, flags[i])
        for k, p in theta.items():
            p.grad = g_sum[k].div_(B)
        opt.step()
        sync(device)
        return time.perf_counter() - t0, loss_sum / B

    for i in warm:
        iteration(i)
    if cuda and warm:
        empty_cache()  # drop the warm-up's cache (cuDNN's trial workspaces) ...
        iteration(warm[-1])  # ... and let one untimed iteration take what the steady state needs
    sync(device)
    times, losses = [], []
    with DeviceMemorySampler(device) if cuda else contextlib.nullcontext() as memory:
        for i in range(args.warmup, total):
            dt, loss = iteration(i)
            times.append(dt)
            losses.append(float(loss))
            if cuda:
                memory.sample()
    times_sorted = sorted(times)
    med = times_sorted[len(times) // 2] if len(times) % 2 else 0.5 * (
        times_sorted[len(times) // 2 - 1] + times_sorted[len(times) // 2])
    row = {"impl": "pytorch", "algo": algo, "trajectory": "autograd", "r": r, "B": B,
           "sec_per_iter": med, "sec_per_iter_min": times_sorted[0], "tasks_per_s": B / med,
           "it_per_s": 1.0 / med, "variant": variant, "batching": variant,
           "bn": ("manual" if args.bn != "native" else "native") if variant == "vmap" else
                 ("manual" if args.bn == "manual" else "native")}
    if cuda:
        peak = max(memory.peak - args.device_baseline, 0)
        row["peak_device_mib"] = round(peak / 2**20, 1)
        row["baseline_device_mib"] = round(args.device_baseline / 2**20, 1)
        row["memory_method"] = MEMORY_METHOD + (
            f" (sampler failed: {memory.error}; after-each readings only)" if memory.error else "")
        row["memory_samples"] = memory.samples
        row["peak_mem_bytes"] = peak
        row["peak_mem_kind"] = "device memory in use (memory_method)"
        row["max_memory_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
        row["peak_reserved_bytes"] = torch.cuda.max_memory_reserved(device)
        row["base_mem_bytes"] = base
    else:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        row["peak_mem_bytes"] = rss
        row["peak_mem_kind"] = "process peak RSS (not reset between rows)"
        row["peak_rss_mb"] = rss / 2**20
    if algo == "ufom":
        row["q"] = args.q
        row["exact_tasks_mean"] = sum(sum(f) for f in flags[args.warmup:]) / args.iters
    row.update(common)
    row["query_loss"] = sum(losses) / len(losses)
    return row


# ---------------------------------------------------------------------------------------------
# Self-test (float64)


def flat(g):
    return torch.cat([v.reshape(-1) for v in g.values()])


def rel(a, b):
    a, b = a.detach(), b.detach()
    return float((a - b).norm() / max(float(b.norm()), 1e-300))


def selftest(args, device):
    torch.manual_seed(args.seed)
    size, channels, _ = DATASETS[args.dataset]
    filters = args.filters or 8
    if args.model == "resnet12":
        # Small, and a step size and seed (0) where no LeakyReLU sign or max-pool argmax flips
        # within the finite-difference step (a flip shows as an O(1e-3) or worse error; seed 1
        # hits one), as tests/models/resnet12_test.cpp chooses its seeds.
        args.widths = [2, 3, 4, 5]
        size = min(size, 16)
        args.inner_lr = min(args.inner_lr, 0.1)
    args.filters = filters
    r, B = 2, 3
    dtype = torch.float64
    ns = argparse.Namespace(size=size, channels=channels, ways=args.ways, shots=args.shots,
                            queries=min(args.queries, 3))
    model = make_model(args, channels, size).to(device=device, dtype=dtype)
    gen = torch.Generator().manual_seed(args.seed)
    theta = {k: v.to(device=device, dtype=dtype) for k, v in init_params(model, gen).items()}
    batch = random_batch(ns, B, torch.Generator().manual_seed(7), device, dtype)
    step = MetaStep(model, args.inner_lr, r, args.bn)
    results, ok = {}, True

    def check(name, cond, value):
        nonlocal ok
        results[name] = {"value": value, "pass": bool(cond)}
        ok &= bool(cond)

    g = {}
    for variant in ("loop", "vmap"):
        for algo, q, flags in (("fomaml", 1.0, [False] * B), ("maml", 1.0, [True] * B),
                               ("ufom", 1.0, [True] * B), ("ufom", 0.5, [True, False, True])):
            g[(variant, algo, q)] = flat(step.meta_gradient(variant, algo, q, theta, batch, flags)[0])
    for variant in ("loop", "vmap"):
        check(f"{variant}: rel|g_MAML - g_FOMAML| > 1e-4",
              rel(g[(variant, "maml", 1.0)], g[(variant, "fomaml", 1.0)]) > 1e-4,
              rel(g[(variant, "maml", 1.0)], g[(variant, "fomaml", 1.0)]))
        check(f"{variant}: rel|g_UFOM(q=1) - g_MAML| < 1e-12",
              rel(g[(variant, "ufom", 1.0)], g[(variant, "maml", 1.0)]) < 1e-12,
              rel(g[(variant, "ufom", 1.0)], g[(variant, "maml", 1.0)]))
    for key in [k for k in g if k[0] == "loop"]:
        other = ("vmap",) + key[1:]
        check(f"loop == vmap for {key[1]} q={key[2]} (rel < 1e-10)", rel(g[other], g[key]) < 1e-10,
              rel(g[other], g[key]))
    # UFOM q=0.5 with xi = (1, 0, 1) from its parts: tasks 0, 2 give g_F + 2 (g_E - g_F).
    per_task = []
    for t in range(B):
        args_t = tuple(a[t] for a in batch)
        _, g_f, g_e = step.exact_task(theta, *args_t)
        per_task.append((flat(g_f), flat(g_e)))
    want = sum(per_task[t][0] + 2 * (per_task[t][1] - per_task[t][0]) for t in (0, 2)) + per_task[1][0]
    check("UFOM(q=0.5, xi=101) == sum of g_F + (xi/q)(g_E - g_F) (rel < 1e-10)",
          rel(g[("loop", "ufom", 0.5)], want) < 1e-10, rel(g[("loop", "ufom", 0.5)], want))
    # Exact MAML against central differences of the meta-loss sum_t L_Q(adapt_t(theta)).
    def meta_loss(th):
        total = 0.0
        for t in range(B):
            sx, sy, qx, qy = (a[t] for a in batch)
            total = total + step.loss_fn(step.adapt(th, sx, sy, False), qx, qy)
        return float(total)

    v = {k: torch.randn(x.shape, generator=gen, dtype=dtype).to(device) for k, x in theta.items()}
    norm = float(flat(v).norm())
    v = {k: x / norm for k, x in v.items()}
    eps = 1e-5
    plus = meta_loss({k: theta[k] + eps * v[k] for k in theta})
    minus = meta_loss({k: theta[k] - eps * v[k] for k in theta})
    fd = (plus - minus) / (2 * eps)
    an = float(g[("loop", "maml", 1.0)] @ flat(v))
    an_fo = float(g[("loop", "fomaml", 1.0)] @ flat(v))
    check("MAML directional derivative == central difference (rel < 1e-5)",
          abs(an - fd) <= 1e-5 * max(abs(fd), 1e-12), {"analytic": an, "fd": fd, "fomaml": an_fo})
    out = {"selftest": "pass" if ok else "FAIL", "device": device.type, "dtype": "float64",
           "r": r, "B": B, "model": args.model, "filters": filters,
           "widths": ",".join(map(str, args.widths)), "dataset": args.dataset, "checks": results}
    out.update(versions(device))
    print(json.dumps(out, indent=1))
    return 0 if ok else 1


# ---------------------------------------------------------------------------------------------


def main():
    args = parse_args()
    device = torch.device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = bool(args.cudnn_benchmark)
    torch.backends.cudnn.allow_tf32 = bool(args.tf32)
    torch.backends.cuda.matmul.allow_tf32 = bool(args.tf32)
    if args.selftest:
        return selftest(args, device)
    args.size, args.channels, filters = DATASETS[args.dataset]
    args.filters = args.filters or filters
    if device.type == "cuda":
        # The baseline of peak_device_mib: the context alone, before anything is allocated.
        device = torch.device("cuda", torch.cuda.current_device())
        args.device_baseline = device_used(device)
    model = make_model(args, args.channels, args.size).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    # "widths" as bench_metastep prints it: Conv-4's filter count, or ResNet-12's four widths.
    widths = str(args.filters) if args.model == "conv4" else ",".join(map(str, args.widths))
    common = {"device": device.type, "dataset": args.dataset, "model": args.model,
              "widths": widths, "ways": args.ways,
              "shots": args.shots, "queries": args.queries, "filters": args.filters,
              "size": args.size, "channels": args.channels, "inner_lr": args.inner_lr,
              "iters": args.iters, "warmup": args.warmup, "params": n_params,
              "threads": torch.get_num_threads(), "cudnn_benchmark": args.cudnn_benchmark,
              "tf32": args.tf32}
    common.update(versions(device))
    failed = 0
    for algo, r, B, variant in itertools.product(args.algo, args.r, args.B, args.variant):
        try:
            row = run_row(args, device, model, algo, r, B, variant, common)
        except Exception as e:  # noqa: BLE001 - one failed row must not lose the others
            failed += 1
            oom = isinstance(e, torch.OutOfMemoryError) if hasattr(torch, "OutOfMemoryError") else False
            row = {"impl": "pytorch", "algo": algo, "r": r, "B": B, "variant": variant,
                   "batching": variant, "error": "out of memory" if oom else f"{type(e).__name__}: {e}"}
            row.update(common)
            traceback.print_exc(file=sys.stderr)
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        print(json.dumps(row), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
