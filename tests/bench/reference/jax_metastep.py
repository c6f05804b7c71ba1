#!/usr/bin/env python3
"""Benchmark reference: one meta-iteration (B tasks of inner loop + FOMAML / exact MAML / UFOM
outer gradient, task average, Adam step) of the Conv-4 in JAX (jit; tasks as a loop of compiled
per-task calls or as one vmap), timed like our C++ bench. The model is the one of
tests/golden/make_golden.py. Prints one JSON line."""

import argparse
import json
import os
import platform
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "golden"))
import make_golden as mg  # noqa: E402


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--algo", choices=("fomaml", "maml", "ufom"), default="maml")
    ap.add_argument("--r", type=int, default=1, help="inner steps")
    ap.add_argument("--B", type=int, default=32, help="tasks per meta-iteration")
    ap.add_argument("--ways", type=int, default=5)
    ap.add_argument("--shots", type=int, default=1)
    ap.add_argument("--queries", type=int, default=15, help="query examples per class")
    ap.add_argument("--filters", type=int, default=64)
    ap.add_argument("--pool", choices=("max", "stride"), default="max")
    ap.add_argument("--size", type=int, default=28, help="image height = width")
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--inner-lr", type=float, default=0.4)
    ap.add_argument("--outer-lr", type=float, default=1e-3)
    ap.add_argument("--q", type=float, default=0.1, help="UFOM probability of an exact task")
    ap.add_argument("--iters", type=int, default=5, help="timed meta-iterations")
    ap.add_argument("--warmup", type=int, default=2, help="untimed meta-iterations first")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batching", choices=("loop", "vmap"), default="loop",
                    help="loop: one compiled call per task; vmap: all tasks as one vmap, whose "
                         "per-task weights become grouped convolutions (6x slower on XLA:CPU "
                         "at B=32; try it on a GPU)")
    ap.add_argument("--inner-loop", choices=("unroll", "scan"), default="unroll",
                    help="unroll: faster on CPU, compile time grows with r; scan: for large r")
    return ap.parse_args()


def task_functions(args, specs):
    """Per-task outer gradients: fo(θ, task) → (loss, g_fo) and exact(θ, task) →
    (loss, g_fo, g_exact)."""
    alpha, r, pool = args.inner_lr, args.r, args.pool
    unroll = args.inner_loop == "unroll"

    def fo_task(theta, sx, sy, qx, qy):
        phi = mg.inner_loop(theta, sx, sy, alpha, r, specs, pool, unroll)
        return jax.value_and_grad(mg.loss_fn)(phi, qx, qy, specs, pool)

    def exact_task(theta, sx, sy, qx, qy):
        # One pass through the inner loop yields both g_fo (the first adjoint) and g_exact.
        phi, pullback = jax.vjp(
            lambda th: mg.inner_loop(th, sx, sy, alpha, r, specs, pool, unroll), theta)
        loss, g_fo = jax.value_and_grad(mg.loss_fn)(phi, qx, qy, specs, pool)
        (g_exact,) = pullback(g_fo)
        return loss, g_fo, g_exact

    return fo_task, exact_task


def exact_contribution(args, g_fo, g_exact):
    if args.algo == "ufom":  # g = g_fo + (ξ/q)(g_exact − g_fo) with ξ = 1
        return g_fo + (g_exact - g_fo) / args.q
    return g_exact


def task_shapes(args, n=None):
    """Shapes of the four arrays of n tasks (of one task when n is None)."""
    lead = () if n is None else (n,)
    img = (args.channels, args.size, args.size)
    ns, nq = args.ways * args.shots, args.ways * args.queries
    return (jax.ShapeDtypeStruct(lead + (ns,) + img, jnp.float32),
            jax.ShapeDtypeStruct(lead + (ns,), jnp.int32),
            jax.ShapeDtypeStruct(lead + (nq,) + img, jnp.float32),
            jax.ShapeDtypeStruct(lead + (nq,), jnp.int32))


def compile_vmap_step(args, specs, optimizer, theta, opt_state, n_ex):
    """One jitted meta-iteration: the first B − n_ex tasks take the FOMAML path, the last n_ex
    the exact path, each group as one vmap over tasks (task weights become grouped convs)."""
    fo_task, exact_task = task_functions(args, specs)
    n_fo = args.B - n_ex
    over_tasks = dict(in_axes=(None, 0, 0, 0, 0))

    def step(theta, opt_state, fo_batch, ex_batch):
        g_sum = jnp.zeros_like(theta)
        loss_sum = jnp.zeros((), theta.dtype)
        if n_fo:
            loss, g_fo = jax.vmap(fo_task, **over_tasks)(theta, *fo_batch)
            g_sum += g_fo.sum(0)
            loss_sum += loss.sum()
        if n_ex:
            loss, g_fo, g_exact = jax.vmap(exact_task, **over_tasks)(theta, *ex_batch)
            g_sum += exact_contribution(args, g_fo, g_exact).sum(0)
            loss_sum += loss.sum()
        updates, opt_state = optimizer.update(g_sum / args.B, opt_state, theta)
        return optax.apply_updates(theta, updates), opt_state, loss_sum / args.B

    return jax.jit(step).lower(theta, opt_state, task_shapes(args, n_fo),
                               task_shapes(args, n_ex)).compile()


def compile_loop_step(args, specs, optimizer, theta, opt_state):
    """The same meta-iteration as a Python loop over tasks, each task one compiled call
    (dispatched asynchronously), then one compiled Adam step. Sizes never change shapes here."""
    fo_task, exact_task = task_functions(args, specs)
    one = task_shapes(args)
    d = jax.ShapeDtypeStruct(theta.shape, theta.dtype)
    s = jax.ShapeDtypeStruct((), theta.dtype)
    fo_one = jax.jit(fo_task).lower(theta, *one).compile()
    ex_one = jax.jit(exact_task).lower(theta, *one).compile()
    add_fo = jax.jit(lambda g, l, loss, g_fo: (g + g_fo, l + loss)).lower(d, s, s, d).compile()
    add_ex = jax.jit(lambda g, l, loss, g_fo, g_ex: (g + exact_contribution(args, g_fo, g_ex),
                                                    l + loss)).lower(d, s, s, d, d).compile()

    def update(theta, opt_state, g_sum, loss_sum):
        updates, opt_state = optimizer.update(g_sum / args.B, opt_state, theta)
        return optax.apply_updates(theta, updates), opt_state, loss_sum / args.B

    update = jax.jit(update).lower(theta, opt_state, d, s).compile()

    def step(theta, opt_state, fo_batch, ex_batch):
        g_sum, loss_sum = jnp.zeros_like(theta), jnp.zeros((), theta.dtype)
        for i in range(len(fo_batch[0])):
            g_sum, loss_sum = add_fo(g_sum, loss_sum, *fo_one(theta, *(a[i] for a in fo_batch)))
        for i in range(len(ex_batch[0])):
            g_sum, loss_sum = add_ex(g_sum, loss_sum, *ex_one(theta, *(a[i] for a in ex_batch)))
        return update(theta, opt_state, g_sum, loss_sum)

    return step


def random_tasks(rng, args, n):
    """n tasks of random images and shuffled balanced labels, as float32 / int32 arrays."""
    def part(per_class):
        m = args.ways * per_class
        x = rng.random((n, m, args.channels, args.size, args.size), dtype=np.float32)
        y = np.stack([rng.permutation(np.repeat(np.arange(args.ways, dtype=np.int32),
                                                per_class)) for _ in range(n)])
        return x, y
    sx, sy = part(args.shots)
    qx, qy = part(args.queries)
    return sx, sy, qx, qy


def main():
    args = parse_args()
    specs = mg.param_specs(args.channels, args.filters, args.ways, args.size, args.size,
                           args.pool)
    rng = np.random.default_rng(args.seed)
    params = mg.init_theta(rng, specs)
    theta = jnp.asarray(np.concatenate([params[n].ravel() for n, _ in specs]), jnp.float32)
    optimizer = optax.adam(args.outer_lr)
    opt_state = optimizer.init(theta)

    # Number of exact tasks per iteration, all drawn before timing. For UFOM it varies between
    # iterations; a vmap needs static shapes, so batching=vmap compiles one step per distinct
    # count ahead of time (excluded from the timing) rather than pad the exact subset to a
    # fixed bucket: padding would spend exact-path compute on dummy tasks and inflate the
    # measured cost. batching=loop compiles per-task functions, whose shapes never change.
    total = args.warmup + args.iters
    if args.algo == "maml":
        n_exact = [args.B] * total
    elif args.algo == "fomaml" or args.q <= 0:
        n_exact = [0] * total
    else:
        xi_rng = np.random.default_rng([args.seed, 1])
        n_exact = [int((xi_rng.random(args.B) < args.q).sum()) for _ in range(total)]

    t0 = time.perf_counter()
    if args.batching == "vmap":
        steps = {k: compile_vmap_step(args, specs, optimizer, theta, opt_state, k)
                 for k in sorted(set(n_exact))}
    else:
        loop_step = compile_loop_step(args, specs, optimizer, theta, opt_state)
        steps = {k: loop_step for k in set(n_exact)}
    compile_s = time.perf_counter() - t0

    data_rng = np.random.default_rng([args.seed, 2])
    times, losses = [], []
    for it in range(total):
        k = n_exact[it]
        sx, sy, qx, qy = random_tasks(data_rng, args, args.B)
        split = args.B - k  # which tasks are exact does not matter for random tasks
        if args.batching == "loop":  # per-task arrays, sliced on the host
            sx, sy, qx, qy = (list(a) for a in (sx, sy, qx, qy))
        fo_batch = jax.device_put((sx[:split], sy[:split], qx[:split], qy[:split]))
        ex_batch = jax.device_put((sx[split:], sy[split:], qx[split:], qy[split:]))
        jax.block_until_ready((fo_batch, ex_batch))
        t = time.perf_counter()
        theta, opt_state, loss = steps[k](theta, opt_state, fo_batch, ex_batch)
        jax.block_until_ready((theta, opt_state, loss))
        if it >= args.warmup:
            times.append(time.perf_counter() - t)
            losses.append(float(loss))

    sec = float(np.median(times))
    out = {
        "impl": "jax", "algo": args.algo, "r": args.r, "B": args.B,
        "sec_per_iter": sec, "tasks_per_s": args.B / sec,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "jax_version": jax.__version__, "threads": len(os.sched_getaffinity(0)),
        "device": jax.devices()[0].platform, "cpu": platform.processor() or platform.machine(),
        "ways": args.ways, "shots": args.shots, "queries": args.queries,
        "filters": args.filters, "pool": args.pool, "size": args.size,
        "channels": args.channels, "inner_lr": args.inner_lr, "iters": args.iters,
        "warmup": args.warmup, "batching": args.batching, "inner_loop": args.inner_loop,
        "compile_s": compile_s, "query_loss": float(np.mean(losses)),
    }
    if args.algo == "ufom":
        out["q"] = args.q
        out["exact_tasks_mean"] = float(np.mean(n_exact[args.warmup:]))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
