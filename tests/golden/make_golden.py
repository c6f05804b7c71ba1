#!/usr/bin/env python3
"""Independent JAX re-implementation of the MAML meta-gradients of Conv-4 and ResNet-12 (and of
the algorithm family's: Meta-SGD, LSLR with the multi-step loss, ANIL, BOIL on Conv-4), and the
writer of the golden files tests/golden/conv4_small.h5, resnet12_small.h5 and family_small.h5
that the C++ meta-gradient tests compare against. The model functions here are also imported by
check_dump.py and tests/bench/reference/."""

import argparse
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

BN_EPS = 1e-5
NUM_BLOCKS = 4
LEAKY_SLOPE = 0.1


# ---------------------------------------------------------------------------------------------
# Models. Parameters travel as one flat vector in the layout given by the specs [(name, shape)];
# the functions below take the architecture as `model`: Conv-4's pool ("max" or "stride") or a
# ResNet12(...). Both end in a linear head and the mean cross-entropy.
#
# Conv-4: 4 x [conv 3x3 pad 1 (no bias), batch norm (batch statistics), ReLU, 2x2 max-pool] or
# 4 x [stride-2 conv, BN, ReLU] + spatial mean.


def spatial_out(size, pool):
    """Spatial size after the four blocks."""
    for _ in range(NUM_BLOCKS):
        size = size // 2 if pool == "max" else (size + 2 - 3) // 2 + 1
    return size


def head_features(filters, height, width, pool):
    if pool == "max":
        return filters * spatial_out(height, pool) * spatial_out(width, pool)
    return filters


def param_specs(channels, filters, ways, height, width, pool):
    """[(name, shape)] in flat-vector order; conv weights OIHW, linear weight [out, in]."""
    specs = []
    cin = channels
    for i in range(1, NUM_BLOCKS + 1):
        specs.append((f"block{i}.conv.weight", (filters, cin, 3, 3)))
        specs.append((f"block{i}.bn.gamma", (filters,)))
        specs.append((f"block{i}.bn.beta", (filters,)))
        cin = filters
    specs.append(("head.weight", (ways, head_features(filters, height, width, pool))))
    specs.append(("head.bias", (ways,)))
    return specs


# ResNet-12 (MetaOptNet, learn2learn): 4 x residual block, each
#   main branch  conv3x3 pad 1 - BN - act - conv3x3 - BN - act - conv3x3 - BN (no act before sum)
#   shortcut     conv1x1 - BN
#   act(main + shortcut), then a 2x2 max-pool (floor);
# then the spatial mean and the head. Convs without bias, BN with the batch's statistics, act ReLU
# or LeakyReLU (negative slope 0.1, the default). Tensor names and order as the C++ checkpoints.


class ResNet12(NamedTuple):
    activation: str = "leaky_relu"  # or "relu"


def resnet12_specs(channels, widths, ways):
    """[(name, shape)] in flat-vector order: per block the main branch's conv1, bn1, conv2, bn2,
    conv3, bn3, then the shortcut's conv and bn; conv weights OIHW."""
    specs = []
    cin = channels
    for i, width in enumerate(widths, 1):
        for j in (1, 2, 3):
            specs.append((f"block{i}.conv{j}.weight", (width, cin if j == 1 else width, 3, 3)))
            specs.append((f"block{i}.bn{j}.gamma", (width,)))
            specs.append((f"block{i}.bn{j}.beta", (width,)))
        specs.append((f"block{i}.shortcut.conv.weight", (width, cin, 1, 1)))
        specs.append((f"block{i}.shortcut.bn.gamma", (width,)))
        specs.append((f"block{i}.shortcut.bn.beta", (width,)))
        cin = width
    specs.append(("head.weight", (ways, cin)))
    specs.append(("head.bias", (ways,)))
    return specs


def unflatten(flat, specs):
    out, off = {}, 0
    for name, shape in specs:
        size = int(np.prod(shape))
        out[name] = flat[off:off + size].reshape(shape)
        off += size
    return out


def batch_norm(x, gamma, beta):
    mu = jnp.mean(x, axis=(0, 2, 3), keepdims=True)
    var = jnp.mean((x - mu) ** 2, axis=(0, 2, 3), keepdims=True)
    xhat = (x - mu) / jnp.sqrt(var + BN_EPS)
    return gamma[None, :, None, None] * xhat + beta[None, :, None, None]


def max_pool_2x2(x):
    # Floor semantics: an odd last row/column is dropped. Reshape + max is differentiable to
    # any order (ties only occur among ReLU zeros, whose gradient is zero either way).
    n, c, h, w = x.shape
    h2, w2 = h // 2, w // 2
    x = x[:, :, :2 * h2, :2 * w2].reshape(n, c, h2, 2, w2, 2)
    return jnp.max(x, axis=(3, 5))


def conv(x, w, stride, pad):
    return lax.conv_general_dilated(
        x, w, window_strides=(stride, stride), padding=((pad, pad), (pad, pad)),
        dimension_numbers=("NCHW", "OIHW", "NCHW"), precision=lax.Precision.HIGHEST)


def conv4_logits(p, x, pool):
    stride = 2 if pool == "stride" else 1
    h = x
    for i in range(1, NUM_BLOCKS + 1):
        h = conv(h, p[f"block{i}.conv.weight"], stride, 1)
        h = batch_norm(h, p[f"block{i}.bn.gamma"], p[f"block{i}.bn.beta"])
        h = jax.nn.relu(h)
        if pool == "max":
            h = max_pool_2x2(h)
    feats = h.reshape(h.shape[0], -1) if pool == "max" else jnp.mean(h, axis=(2, 3))
    return feats @ p["head.weight"].T + p["head.bias"]


def resnet12_logits(p, x, arch):
    slope = {"leaky_relu": LEAKY_SLOPE, "relu": 0.0}[arch.activation]

    def act(h):  # the derivative at 0 is the slope's, as the C++ mask x > 0
        return jnp.where(h > 0, h, slope * h)

    def conv_bn(h, name, pad):
        h = conv(h, p[f"{name}.weight"], 1, pad)
        bn = name.replace("conv", "bn")
        return batch_norm(h, p[f"{bn}.gamma"], p[f"{bn}.beta"])

    h = x
    for i in range(1, NUM_BLOCKS + 1):
        m = act(conv_bn(h, f"block{i}.conv1", 1))
        m = act(conv_bn(m, f"block{i}.conv2", 1))
        m = conv_bn(m, f"block{i}.conv3", 1)
        h = max_pool_2x2(act(m + conv_bn(h, f"block{i}.shortcut.conv", 0)))
    return jnp.mean(h, axis=(2, 3)) @ p["head.weight"].T + p["head.bias"]


def logits_fn(flat, x, specs, model):
    p = unflatten(flat, specs)
    if isinstance(model, ResNet12):
        return resnet12_logits(p, x, model)
    return conv4_logits(p, x, model)


def loss_fn(flat, x, y, specs, model):
    logp = jax.nn.log_softmax(logits_fn(flat, x, specs, model), axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


# ---------------------------------------------------------------------------------------------
# MAML. φ_0 = θ, φ_{j+1} = φ_j − α ∇L_S(φ_j); g_fo = ∇L_Q(φ_r); g_exact = d L_Q(φ_r(θ)) / dθ.


def inner_loop(theta, sx, sy, alpha, steps, specs, model, unroll=False):
    """φ_r. unroll=True traces the r steps one by one instead of a lax.scan: the compile time
    grows with r, but XLA on CPU runs convolutions inside a loop body several times slower."""
    grad_s = jax.grad(loss_fn)
    if unroll:
        for _ in range(steps):
            theta = theta - alpha * grad_s(theta, sx, sy, specs, model)
        return theta

    def step(phi, _):
        return phi - alpha * grad_s(phi, sx, sy, specs, model), None

    phi, _ = lax.scan(step, theta, None, length=steps)
    return phi


def meta_objective(theta, task, alpha, steps, specs, model, truncate=None):
    """L_Q(φ_r(θ)). With truncate = k < r, only the last k inner steps are differentiated
    (the C++ inner.truncate): φ_{r−k} enters as θ plus a constant offset."""
    sx, sy, qx, qy = task
    if truncate is not None and 0 <= truncate < steps:
        phi = inner_loop(theta, sx, sy, alpha, steps - truncate, specs, model)
        phi = theta + lax.stop_gradient(phi - theta)
        steps = truncate
    else:
        phi = theta
    phi = inner_loop(phi, sx, sy, alpha, steps, specs, model)
    return loss_fn(phi, qx, qy, specs, model)


def meta_grads(theta, task, alpha, steps, specs, model, truncate=None):
    """Returns (g_fo, g_exact, query_loss at φ_r, φ_r)."""
    sx, sy, qx, qy = task
    phi_r = inner_loop(theta, sx, sy, alpha, steps, specs, model)
    query_loss, g_fo = jax.value_and_grad(loss_fn)(phi_r, qx, qy, specs, model)
    g_exact = jax.grad(meta_objective)(theta, task, alpha, steps, specs, model, truncate)
    return g_fo, g_exact, query_loss, phi_r


def adjoint_exact(theta, task, alpha, steps, specs, model):
    """Exact MAML by the adjoint recursion of DESIGN §3.3 (λ ← λ − α H_S(φ_j) λ), with HVPs
    as forward-over-reverse products; a cross-check of the autodiff-through-the-loop result."""
    sx, sy, qx, qy = task
    grad_s = jax.grad(loss_fn)
    phis = [theta]
    for _ in range(steps):
        phis.append(phis[-1] - alpha * grad_s(phis[-1], sx, sy, specs, model))
    lam = jax.grad(loss_fn)(phis[-1], qx, qy, specs, model)
    for j in range(steps - 1, -1, -1):
        _, hv = jax.jvp(lambda p: grad_s(p, sx, sy, specs, model), (phis[j],), (lam,))
        lam = lam - alpha * hv
    return lam


# ---------------------------------------------------------------------------------------------
# The algorithm family (core/meta_params.h, core/meta_engine.h). Meta-parameters ψ = θ followed by
# one rate tensor per adapted tensor of θ, in θ's order: Meta-SGD's "lr.<tensor>" (the tensor's
# shape), LSLR's "lslr.<tensor>" (shape [r]); a fixed rate adds none (ψ = θ). Inner steps
#   φ_{j+1} = φ_j − P_j ⊙ ∇L_S(φ_j),  φ_0 = θ,
# P_j elementwise: α (fixed), the element's rate (Meta-SGD), rate[tensor][j] (LSLR); 0 on the
# tensors the inner loop leaves alone (ANIL adapts the "head.*" tensors only, BOIL all others).
# Objective L_Q(φ_r), or MAML++'s multi-step loss Σ_{j=1..r} w_j L_Q(φ_j).


class Family(NamedTuple):
    rates: str = "fixed"  # or "per_param" (Meta-SGD), "per_layer_step" (LSLR)
    adapt: str = "all"  # or "head" (ANIL), "body" (BOIL)
    multi_step_loss: bool = False
    msl_anneal_steps: int = 0


def family_adapts(family, name):
    head = name.startswith("head.")
    return {"all": True, "head": head, "body": not head}[family.adapt]


def family_specs(specs, family, steps):
    """ψ's [(name, shape)] (the C++ meta_layout): θ's, then the rate tensors."""
    if family.rates == "fixed":
        return list(specs)
    return list(specs) + [("lr." + name, shape) if family.rates == "per_param"
                          else ("lslr." + name, (max(steps, 1),))
                          for name, shape in specs if family_adapts(family, name)]


def msl_weights(r, step, anneal_steps):
    """MAML++'s w_1 … w_r at outer step `step`, with core/meta_params.cpp's operations: 1/r each
    at step 0; the first r − 1 fall to 0.03/r over anneal_steps; the last takes 1 − the others."""
    if r <= 0:
        return []
    uniform, floor = 1.0 / r, 0.03 / r
    early = uniform
    if anneal_steps > 0:
        early = max(uniform * (1.0 - step / anneal_steps), floor)
    w, rest = [], 1.0
    for _ in range(r - 1):
        w.append(early)
        rest -= early
    return w + [rest]


def objective_weights(family, steps):
    """w_1 … w_r of the objective: the multi-step loss's at outer step 0, else the last only."""
    if family.multi_step_loss:
        return msl_weights(steps, 0, family.msl_anneal_steps)
    return [0.0] * (steps - 1) + [1.0]


def step_rates(psi, specs, family, alpha, steps, j):
    """P_j as a θ-shaped vector, differentiable in ψ's rates."""
    off = sum(int(np.prod(shape)) for _, shape in specs)
    parts = []
    for name, shape in specs:
        size = int(np.prod(shape))
        if not family_adapts(family, name):
            parts.append(jnp.zeros(size, psi.dtype))
        elif family.rates == "fixed":
            parts.append(jnp.full(size, alpha, psi.dtype))
        elif family.rates == "per_param":
            parts.append(psi[off:off + size])
            off += size
        else:
            parts.append(jnp.broadcast_to(psi[off + j], (size,)))
            off += max(steps, 1)
    return jnp.concatenate(parts)


def family_trajectory(psi, task, alpha, steps, specs, model, family, first_order=False):
    """φ_0 … φ_r. first_order: each ∇L_S(φ_j) enters as a constant, so that autodiff of the
    objective drops every Hessian term and gives the first-order gradient."""
    sx, sy, _, _ = task
    d = sum(int(np.prod(shape)) for _, shape in specs)
    phis = [psi[:d]]
    for j in range(steps):
        g = jax.grad(loss_fn)(phis[-1], sx, sy, specs, model)
        if first_order:
            g = lax.stop_gradient(g)
        phis.append(phis[-1] - step_rates(psi, specs, family, alpha, steps, j) * g)
    return phis


def family_objective(psi, task, alpha, steps, specs, model, family, first_order=False):
    _, _, qx, qy = task
    phis = family_trajectory(psi, task, alpha, steps, specs, model, family, first_order)
    if not family.multi_step_loss:
        return loss_fn(phis[-1], qx, qy, specs, model)
    w = objective_weights(family, steps)
    return sum(w[j - 1] * loss_fn(phis[j], qx, qy, specs, model) for j in range(1, steps + 1))


def family_first_order(psi, task, alpha, steps, specs, model, family):
    """(g_fo, L_Q(φ_r)) by the engine's first-order sweep without Hessian terms:
    λ_{j+1} = Σ_{i>j} w_i ∇L_Q(φ_i); the θ part λ_0; the rate gradients −∇L_S(φ_j) ⊙ λ_{j+1},
    summed over j per element (Meta-SGD) or over the tensor's elements for rate (tensor, j)
    (LSLR)."""
    sx, sy, qx, qy = task
    phis = family_trajectory(psi, task, alpha, steps, specs, model, family)
    grad = jax.grad(loss_fn)
    w = objective_weights(family, steps)
    d = phis[0].size
    lam = np.zeros(d)
    rate_grad = np.zeros(psi.size - d)
    for j in range(steps - 1, -1, -1):
        lam = lam + w[j] * np.asarray(grad(phis[j + 1], qx, qy, specs, model))
        step = -np.asarray(grad(phis[j], sx, sy, specs, model)) * lam
        at = off = 0  # tensor's offset in θ, its rates' offset in ψ's rate part
        for name, shape in specs:
            size = int(np.prod(shape))
            if family.rates != "fixed" and family_adapts(family, name):
                if family.rates == "per_param":
                    rate_grad[off:off + size] += step[at:at + size]
                    off += size
                else:
                    rate_grad[off + j] += np.sum(step[at:at + size])
                    off += max(steps, 1)
            at += size
    query_loss = float(loss_fn(phis[-1], qx, qy, specs, model))
    return np.concatenate([lam, rate_grad]), query_loss


def directional_fd_check(f, x, g, rng, dirs, mask=None, tol=1e-6, what="psi"):
    """As finite_difference_check, for a jitted f(x) and its gradient g: the worst relative
    error of g·v against central differences over `dirs` random unit v (v zero off `mask`)."""
    g_norm = float(np.linalg.norm(g if mask is None else g * mask))
    worst = 0.0
    for k in range(dirs):
        v = rng.normal(size=x.shape)
        if mask is not None:
            v = v * mask
        v /= np.linalg.norm(v)
        an = float(np.dot(g, v))
        best = np.inf
        for eps in (1e-5, 1e-6):
            fd = float((f(x + eps * v) - f(x - eps * v)) / (2 * eps))
            rel = abs(fd - an) / max(abs(an), 1e-2 * g_norm)
            print(f"    {what} dir {k}: fd {fd:+.10e}  g_exact.v {an:+.10e}  rel err {rel:.2e}"
                  + (f"  (step {eps:.0e})" if eps != 1e-5 else ""))
            best = min(best, rel)
            if best <= tol:
                break
        worst = max(worst, best)
    return worst


# ---------------------------------------------------------------------------------------------
# Golden file.


def init_theta(rng, specs):
    params = {}
    for name, shape in specs:
        if len(shape) == 4:  # conv weight, OIHW
            fan_in = shape[1] * shape[2] * shape[3]
            params[name] = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        elif name.endswith(".gamma"):
            params[name] = 1.0 + 0.1 * rng.normal(size=shape)
        elif name.endswith(".beta"):
            params[name] = 0.1 * rng.normal(size=shape)
        else:  # head.weight [ways, features], head.bias [ways]
            features = specs[-2][1][1]
            params[name] = rng.normal(0.0, np.sqrt(1.0 / features), shape)
    return params


def make_task(rng, ways, shots, queries, channels, size):
    def split(per_class):
        y = rng.permutation(np.repeat(np.arange(ways, dtype=np.int32), per_class))
        # Uniform on the grid k/256, k = 0..256: exact in float32 too (a float32 run sees the
        # same images) and compressible, which keeps the golden file small.
        x = rng.integers(0, 257, (len(y), channels, size, size)) / 256.0
        return x, y
    sx, sy = split(shots)
    qx, qy = split(queries)
    return sx, sy, qx, qy


def finite_difference_check(theta, task, alpha, steps, specs, model, g_exact, rng, dirs=4,
                            tol=1e-6):
    """Worst relative error of g_exact·v against central differences over `dirs` random unit v.
    The meta-objective jumps (by ~α times a jump of ∇L_S) wherever an inner-loop activation
    crosses a ReLU / LeakyReLU kink or a max-pool argmax switches, and in ResNet-12's many small
    maps a step of 1e-5 often crosses one; so a direction that misses `tol` at 1e-5 is retried
    at 1e-6 (the best of the two counts: agreement to 1e-6 by chance is not plausible)."""
    f = jax.jit(lambda t: meta_objective(t, task, alpha, steps, specs, model))
    return directional_fd_check(f, theta, np.asarray(g_exact), rng, dirs, tol=tol, what="theta")


def write_variant(group, label, specs, model, attrs, seed, num_tasks, cfg, rng_fd, ufom=None):
    """θ drawn from `seed`, then `num_tasks` tasks with their gradients, under `group`; `attrs`
    (the architecture and the inner loop) become the group's attributes. With `ufom` (q, the
    C++ draw's seed and step, and its outcome ξ per task), also each task's UFOM gradient
    g_F + (ξ/q)(g_E − g_F)."""
    rng = np.random.default_rng(seed)
    params = init_theta(rng, specs)
    theta = np.concatenate([params[n].ravel() for n, _ in specs])
    alpha, steps = cfg["inner_lr"], cfg["inner_steps"]
    print(f"[{label}] d = {theta.size}")
    for name, shape in specs:
        group.create_dataset(f"params/{name}", data=params[name].reshape(shape))
    group.create_dataset("flat/theta", data=theta)
    for key, value in attrs.items():
        group.attrs[key] = value
    group.attrs["bn_eps"] = BN_EPS
    if ufom:
        for key in ("q", "seed", "step"):
            group.attrs[f"ufom_{key}"] = ufom[key]
    worst = 0.0
    for t in range(num_tasks):
        task_np = make_task(rng, cfg["ways"], cfg["shots"], cfg["queries"], cfg["channels"],
                            cfg["size"])
        task = tuple(jnp.asarray(a) for a in task_np)
        g_fo, g_exact, qloss, phi_r = meta_grads(jnp.asarray(theta), task, alpha, steps, specs,
                                                 model)
        g_adj = adjoint_exact(jnp.asarray(theta), task, alpha, steps, specs, model)
        adj_rel = float(jnp.max(jnp.abs(g_adj - g_exact)) / jnp.max(jnp.abs(g_exact)))
        fo_gap = float(jnp.linalg.norm(g_exact - g_fo) / jnp.linalg.norm(g_exact))
        print(f"  task {t}: query_loss {float(qloss):.6f}  |g_exact-g_fo|/|g_exact| {fo_gap:.3f}"
              f"  adjoint-vs-autodiff rel {adj_rel:.1e}")
        worst = max(worst, adj_rel)
        worst = max(worst, finite_difference_check(jnp.asarray(theta), task, alpha, steps, specs,
                                                   model, g_exact, rng_fd))
        tg = group.create_group(f"tasks/{t}")
        for key, arr in zip(("support_x", "support_y", "query_x", "query_y"), task_np):
            if arr.ndim == 4:
                tg.create_dataset(key, data=arr, chunks=arr.shape, compression="gzip",
                                  compression_opts=9, shuffle=True)
            else:
                tg.create_dataset(key, data=arr)
        tg.create_dataset("g_fo", data=np.asarray(g_fo))
        tg.create_dataset("g_exact", data=np.asarray(g_exact))
        tg.create_dataset("phi_r", data=np.asarray(phi_r))
        tg["query_loss"] = float(qloss)
        if ufom:
            xi = ufom["exact"][t]
            tg["ufom_exact"] = np.int32(xi)
            g_ufom = g_fo + (xi / ufom["q"]) * (g_exact - g_fo)
            tg.create_dataset("g_ufom", data=np.asarray(g_ufom))
    return worst


def write_conv4(f, rng_fd):
    """conv4_small.h5: max-pool Conv-4 (2 tasks) at the root, stride Conv-4 (1 task) under
    /stride; 28x28x1 images, 4 filters, 3-way 1-shot, r = 3."""
    cfg = dict(channels=1, size=28, filters=4, ways=3, shots=1, queries=2, inner_steps=3,
               inner_lr=0.1)
    worst = 0.0
    # The /stride group is created only after the root's data, as the file has always been.
    for name, pool, seed, num_tasks in (("", "max", 20240601, 2),
                                        ("stride", "stride", 20240602, 1)):
        group = f.create_group(name) if name else f
        specs = param_specs(cfg["channels"], cfg["filters"], cfg["ways"], cfg["size"],
                            cfg["size"], pool)
        attrs = {key: cfg[key] for key in ("inner_lr", "inner_steps", "ways", "filters")}
        attrs["pool"] = np.bytes_(pool)  # fixed-length ASCII, easy to read from C
        worst = max(worst, write_variant(group, pool, specs, pool, attrs, seed, num_tasks, cfg,
                                         rng_fd))
    return worst


# UFOM at q = 0.4 on the LeakyReLU tasks. ξ_t is the C++ draw (core/ufom.h, Philox keyed by seed,
# step, task) for seed 2, step 0: task 0 takes the exact path, task 1 not. It is recorded, not
# recomputed here; the C++ test checks that its draw still gives it.
RESNET12_UFOM = dict(q=0.4, seed=2, step=0, exact=(1, 0))


def write_resnet12(f, rng_fd):
    """resnet12_small.h5: ResNet-12 with LeakyReLU (2 tasks, also UFOM) at the root, with ReLU
    (1 task) under /relu; widths 2,3,4,4, 20x20x1 images (20, 10, 5, 2, 1 through the pools: an
    odd size exercises the floor), 3-way 2-shot, r = 2."""
    cfg = dict(channels=1, size=20, widths=(2, 3, 4, 4), ways=3, shots=2, queries=2,
               inner_steps=2, inner_lr=0.1)
    specs = resnet12_specs(cfg["channels"], cfg["widths"], cfg["ways"])
    worst = 0.0
    for name, activation, seed, num_tasks in (("", "leaky_relu", 20261207, 2),
                                              ("relu", "relu", 20261208, 1)):
        group = f.create_group(name) if name else f
        attrs = {key: cfg[key] for key in ("inner_lr", "inner_steps", "ways")}
        attrs["model"] = np.bytes_("resnet12")
        attrs["widths"] = np.asarray(cfg["widths"], dtype=np.int64)
        attrs["activation"] = np.bytes_(activation)
        attrs["leaky_slope"] = LEAKY_SLOPE
        ufom = RESNET12_UFOM if activation == "leaky_relu" else None
        worst = max(worst, write_variant(group, f"resnet12 {activation}", specs,
                                         ResNet12(activation), attrs, seed, num_tasks, cfg,
                                         rng_fd, ufom))
    return worst


# The family's groups (family_small.h5): one per algorithm, all on one θ and the same 2 tasks.
FAMILY = (("metasgd", Family("per_param", "all")),
          ("lslr_msl", Family("per_layer_step", "all", True, 100)),
          ("anil", Family("fixed", "head")),
          ("boil", Family("fixed", "body")),
          ("metasgd_anil", Family("per_param", "head")))


def family_psi(theta, fspecs, alpha):
    """θ, then the rates spread around α: element i of ψ gets α (1 + 0.3 sin i), so that every
    rate differs (a uniform α would hide a rate applied to the wrong element or step)."""
    total = sum(int(np.prod(shape)) for _, shape in fspecs)
    idx = np.arange(theta.size, total, dtype=np.float64)
    return np.concatenate([theta, alpha * (1.0 + 0.3 * np.sin(idx))])


def write_family_group(group, shared, specs, family, attrs, theta, tasks_np, cfg, rng_fd):
    """One algorithm of the family under `group`. θ (params/, flat/theta) and the episodes are
    hard links to `shared`'s (stored once) when given, else written here."""
    alpha, steps, model = cfg["inner_lr"], cfg["inner_steps"], "max"
    fspecs = family_specs(specs, family, steps)
    psi = family_psi(theta, fspecs, alpha)
    print(f"[family {group.name[1:]}] {family}  dim psi = {psi.size}")
    for key, value in attrs.items():
        group.attrs[key] = value
    group.attrs["bn_eps"] = BN_EPS
    group.attrs["rates"] = np.bytes_(family.rates)
    group.attrs["adapt"] = np.bytes_(family.adapt)
    group.attrs["multi_step_loss"] = int(family.multi_step_loss)
    group.attrs["msl_anneal_steps"] = int(family.msl_anneal_steps)
    if family.multi_step_loss:
        group.create_dataset("msl_weights", data=np.asarray(objective_weights(family, steps)))
    shared_names = [f"params/{name}" for name, _ in specs] + ["flat/theta"] + [
        f"tasks/{t}/{key}" for t in range(len(tasks_np))
        for key in ("support_x", "support_y", "query_x", "query_y")]
    if shared is None:
        write_theta_and_tasks(group, specs, theta, tasks_np)
    for path in shared_names if shared is not None else ():
        group.require_group(os.path.dirname(path))
        group[path] = shared[path]  # a hard link
    off = 0
    for name, shape in fspecs:
        size = int(np.prod(shape))
        if off >= theta.size:
            group.create_dataset(f"params/{name}", data=psi[off:off + size].reshape(shape))
        off += size
    group.create_dataset("flat/psi", data=psi)

    obj = lambda p, task, fo=False: family_objective(p, task, alpha, steps, specs, model,  # noqa
                                                     family, fo)
    f_obj = jax.jit(obj)
    g_obj = jax.jit(jax.grad(obj))
    g_obj_fo = jax.jit(jax.grad(lambda p, task: obj(p, task, True)))
    rate_mask = (np.arange(psi.size) >= theta.size).astype(np.float64)
    worst = 0.0
    for t, task_np in enumerate(tasks_np):
        task = tuple(jnp.asarray(a) for a in task_np)
        psi_j = jnp.asarray(psi)
        g_exact = np.asarray(g_obj(psi_j, task))
        g_fo, qloss = family_first_order(psi_j, task, alpha, steps, specs, model, family)
        fo_rel = float(np.linalg.norm(g_fo - np.asarray(g_obj_fo(psi_j, task)))
                       / np.linalg.norm(g_fo))
        gap = float(np.linalg.norm(g_exact - g_fo) / np.linalg.norm(g_exact))
        rates_norm = float(np.linalg.norm(g_exact * rate_mask))
        print(f"  task {t}: query_loss {qloss:.6f}  |g_exact-g_fo|/|g_exact| {gap:.3f}"
              f"  |rate part of g_exact| {rates_norm:.3e}  g_fo sweep-vs-autodiff rel {fo_rel:.1e}")
        worst = max(worst, fo_rel)
        f_task = lambda p: f_obj(p, task)  # noqa: E731
        worst = max(worst, directional_fd_check(f_task, psi_j, g_exact, rng_fd, dirs=4))
        if psi.size > theta.size:
            worst = max(worst, directional_fd_check(f_task, psi_j, g_exact, rng_fd, dirs=2,
                                                    mask=rate_mask, what="rates"))
        tg = group.require_group(f"tasks/{t}")
        tg.create_dataset("g_fo", data=g_fo)
        tg.create_dataset("g_exact", data=g_exact)
        tg["query_loss"] = qloss
    return worst


def write_theta_and_tasks(group, specs, theta, tasks_np):
    off = 0
    for name, shape in specs:
        size = int(np.prod(shape))
        group.create_dataset(f"params/{name}", data=theta[off:off + size].reshape(shape))
        off += size
    group.create_dataset("flat/theta", data=theta)
    for t, task_np in enumerate(tasks_np):
        for key, arr in zip(("support_x", "support_y", "query_x", "query_y"), task_np):
            if arr.ndim == 4:
                group.create_dataset(f"tasks/{t}/{key}", data=arr, chunks=arr.shape,
                                     compression="gzip", compression_opts=9, shuffle=True)
            else:
                group.create_dataset(f"tasks/{t}/{key}", data=arr)


def write_family(f, rng_fd):
    """family_small.h5: the algorithm family on the max-pool Conv-4 of conv4_small.h5 (28x28x1,
    4 filters, 3-way 1-shot, r = 3, α = 0.1), one group per algorithm (FAMILY), all on one θ
    and the same 2 tasks (a θ and episodes of their own, not conv4_small.h5's)."""
    cfg = dict(channels=1, size=28, filters=4, ways=3, shots=1, queries=2, inner_steps=3,
               inner_lr=0.1)
    specs = param_specs(cfg["channels"], cfg["filters"], cfg["ways"], cfg["size"], cfg["size"],
                        "max")
    rng = np.random.default_rng(20261209)
    params = init_theta(rng, specs)
    theta = np.concatenate([params[n].ravel() for n, _ in specs])
    tasks_np = [make_task(rng, cfg["ways"], cfg["shots"], cfg["queries"], cfg["channels"],
                          cfg["size"]) for _ in range(2)]
    attrs = {key: cfg[key] for key in ("inner_lr", "inner_steps", "ways", "filters")}
    attrs["pool"] = np.bytes_("max")
    worst, shared = 0.0, None
    for name, family in FAMILY:
        group = f.create_group(name)
        worst = max(worst, write_family_group(group, shared, specs, family, attrs, theta,
                                              tasks_np, cfg, rng_fd))
        if shared is None:
            shared = group
    return worst


def write_example_dump(golden_path, out_path, pool_in_config=True):
    """Writes a dump in the `metatrain debug.dump` format (float32) from the golden file's
    max-pool variant, so check_dump.py can be exercised without the C++ program."""
    import h5py
    with h5py.File(golden_path, "r") as g, h5py.File(out_path, "w") as d:
        _, channels, height, width = g["tasks/0/support_x"].shape
        pool = g.attrs["pool"].decode()
        specs = param_specs(channels, int(g.attrs["filters"]), int(g.attrs["ways"]), height,
                            width, pool)
        for name, _ in specs:
            d.create_dataset(f"params/{name}", data=g[f"params/{name}"][()].astype(np.float32))
        for t in g["tasks"]:
            for key in ("support_x", "query_x", "g_fo", "g_exact"):
                d.create_dataset(f"tasks/{t}/{key}",
                                 data=g[f"tasks/{t}/{key}"][()].astype(np.float32))
            for key in ("support_y", "query_y"):
                d.create_dataset(f"tasks/{t}/{key}",
                                 data=g[f"tasks/{t}/{key}"][()].astype(np.int32))
        d.attrs["inner_lr"] = float(g.attrs["inner_lr"])
        d.attrs["inner_steps"] = int(g.attrs["inner_steps"])
        model = (f"model: {{name: conv4, filters: {int(g.attrs['filters'])}, "
                 f"pool: {pool}}}\n" if pool_in_config else "")
        d["config"] = (f"algo: maml\ntask: {{ways: {int(g.attrs['ways'])}, shots: 1, "
                       f"queries: 2}}\ninner: {{steps: {int(g.attrs['inner_steps'])}, "
                       f"lr: {float(g.attrs['inner_lr'])}, trajectory: store, truncate: -1}}\n"
                       + model)


GOLDEN = {"conv4": ("conv4_small.h5", write_conv4),
          "resnet12": ("resnet12_small.h5", write_resnet12),
          "family": ("family_small.h5", write_family)}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", default="conv4,resnet12,family",
                    help="golden files to write, of conv4, resnet12 and family (default all)")
    ap.add_argument("--out-dir", default=here)
    ap.add_argument("--example-dump", metavar="PATH",
                    help="also write a float32 dump in the metatrain debug.dump format (conv4)")
    args = ap.parse_args()

    jax.config.update("jax_enable_x64", True)
    import h5py

    for name in args.models.split(","):
        if name not in GOLDEN:
            raise SystemExit(f"--models: unknown model {name!r} (conv4, resnet12, family)")
        filename, write = GOLDEN[name]
        out = os.path.join(args.out_dir, filename)
        tmp = out + ".tmp"
        rng_fd = np.random.default_rng(1234)
        # Object formats readable by HDF5 1.10 (Debian 12), which the C++ tests link against.
        with h5py.File(tmp, "w", libver=("earliest", "v110")) as f:
            worst = write(f, rng_fd)
        print(f"worst relative error of g_exact (finite differences, adjoint): {worst:.2e}")
        if worst > 1e-6:
            os.remove(tmp)
            raise SystemExit(f"g_exact failed its self-check; {out} not written")
        os.replace(tmp, out)
        print(f"wrote {out} ({os.path.getsize(out)} bytes)")
        if args.example_dump and name == "conv4":
            write_example_dump(out, args.example_dump)
            print(f"wrote example dump {args.example_dump}")


if __name__ == "__main__":
    main()
