#!/usr/bin/env python3
"""Checks a `metatrain debug.dump=FILE.h5` dump against the independent JAX model: recomputes
g_fo and g_exact of every dumped task in float64 and compares them with the dumped float32
gradients. The architecture (model.name: conv4 with its pool, or resnet12 with its widths and
activation) is read from the run's configuration stored in /config. Exit status: 0 all within
tolerance, 1 a mismatch, 2 an unreadable or odd dump."""

import argparse
import os
import re
import sys

import h5py
import jax
import numpy as np

jax.config.update("jax_enable_x64", True)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_golden as mg  # noqa: E402


def fail_input(path, msg):
    print(f"check_dump: {path}: {msg}", file=sys.stderr)
    sys.exit(2)


def read_text(f, key):
    """A string stored as dataset or root attribute `key` (fixed or variable length)."""
    if key in f:
        value = f[key][()]
    elif key in f.attrs:
        value = f.attrs[key]
    else:
        return ""
    if isinstance(value, np.ndarray):
        value = value.tobytes() if value.dtype.kind == "S" else value.item()
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace").rstrip("\0")
    return str(value)


def split_flow(text):
    """The items of a flow mapping's body "k: v, k: [a, b]", split at the commas outside [ ]."""
    items, depth, item = [], 0, ""
    for ch in text:
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            items.append(item)
            item = ""
        else:
            item += ch
    return [i for i in (item.strip() for item in items + [item]) if i]


def parse_config(text):
    """The YAML text of /config as {"section.key": "value"} ("key" for a top-level scalar), for
    the two levels and the styles metatrain (block mappings, one key a line) and
    make_golden.py's example dump (a section as one flow mapping {k: v, ...}) write. Values
    stay text, unquoted. No YAML parser needed, nor installed in the reference environment."""
    out, section = {}, None
    for raw in text.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        key, sep, value = line.strip().partition(":")
        if not sep:
            continue
        value = value.strip()
        if line[:1].isspace():
            if section:
                out[f"{section}.{key}"] = value.strip("\"'")
            continue
        section = key if not value else None
        if value.startswith("{") and value.endswith("}"):
            for item in split_flow(value[1:-1]):
                k, _, v = item.partition(":")
                out[f"{key}.{k.strip()}"] = v.strip().strip("\"'")
        elif value:
            out[key] = value.strip("\"'")
    return out


def detect_pool(path, f, config, forced, filters, features, height, width):
    if forced:
        return forced, "--pool"
    pool = config.get("model.pool")
    if pool in ("max", "stride"):
        return pool, "config"
    if read_text(f, "pool") in ("max", "stride"):
        return read_text(f, "pool"), "root attribute"
    candidates = [p for p in ("max", "stride")
                  if mg.head_features(filters, height, width, p) == features]
    if len(candidates) == 1:
        return candidates[0], "head.weight shape"
    if not candidates:
        fail_input(path, f"head.weight has {features} inputs, which fits neither pool=max nor "
                         f"pool=stride for {filters} filters and {height}x{width} images")
    fail_input(path, "cannot tell pool=max from pool=stride (no 'pool:' in /config and both "
                     f"give {features} head inputs for {height}x{width} images); pass --pool")


def model_from_dump(path, f, params, config, args, channels, height, width, ways):
    """(specs, model argument of make_golden's functions, description) of the dumped net, from
    /config's model.* keys; a dump without them is taken for Conv-4 (the older dumps)."""
    name = config.get("model.name") or ("resnet12" if "block1.conv1.weight" in params
                                        else "conv4")
    activation = config.get("model.activation", "auto")
    if activation == "auto":
        activation = "leaky_relu" if name == "resnet12" else "relu"
    if name == "resnet12":
        text = config.get("model.widths", "auto")
        if text == "auto":  # as metatrain resolves it; it writes the widths it ran with
            widths = [64, 160, 320, 640]
        else:
            try:
                widths = [int(w) for w in text.strip("[]").split(",")]
            except ValueError:
                fail_input(path, f"model.widths = {text!r} in /config is not a list of integers")
        if len(widths) != mg.NUM_BLOCKS:
            fail_input(path, f"model.widths = {text!r}: resnet12 has {mg.NUM_BLOCKS} blocks")
        if activation not in ("relu", "leaky_relu"):
            fail_input(path, f"model.activation = {activation!r} is not modelled")
        return (mg.resnet12_specs(channels, widths, ways), mg.ResNet12(activation),
                f"resnet12 widths={','.join(map(str, widths))} activation={activation}")
    if name != "conv4":
        fail_input(path, f"model.name = {name!r} in /config is not modelled (conv4, resnet12)")
    if activation != "relu":
        fail_input(path, f"conv4 with model.activation = {activation!r} is not modelled")
    if "block1.conv.weight" not in params:
        fail_input(path, "missing /params/block1.conv.weight")
    filters = params["block1.conv.weight"].shape[0]
    features = params["head.weight"].shape[1]
    pool, source = detect_pool(path, f, config, args.pool, filters, features, height, width)
    return (mg.param_specs(channels, filters, ways, height, width, pool), pool,
            f"conv4 filters={filters} pool={pool} (from {source})")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("dump", help="HDF5 file written by metatrain debug.dump=FILE.h5")
    ap.add_argument("--tol", type=float, default=1e-3,
                    help="max allowed max|diff|/max|ref| per task and gradient (default 1e-3)")
    ap.add_argument("--pool", choices=("max", "stride"), help="override conv4's pool detection")
    args = ap.parse_args()
    path = args.dump
    if not os.path.isfile(path):
        fail_input(path, "no such file")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        fail_input(path, f"not a readable HDF5 file ({e})")

    with f:
        for key in ("params", "tasks"):
            if key not in f:
                fail_input(path, f"missing group /{key}; is this a debug.dump file?")
        for key in ("inner_lr", "inner_steps"):
            if key not in f.attrs:
                fail_input(path, f"missing root attribute '{key}'")
        alpha = float(f.attrs["inner_lr"])
        steps = int(f.attrs["inner_steps"])
        config = parse_config(read_text(f, "config"))
        truncate = int(config.get("inner.truncate", "-1"))
        truncate = truncate if truncate >= 0 else None
        if float(config.get("ufom.adjoint_clip", "0")) != 0:
            fail_input(path, "ufom.adjoint_clip clips the dumped g_exact; the JAX model does not")
        plain = {"inner.rates": "fixed", "inner.adapt": "all", "inner.multi_step_loss": "false"}
        algo = config.get("algo", "maml")
        if algo not in ("maml", "fomaml", "ufom") or any(
                config.get(k, v) != v for k, v in plain.items()):
            fail_input(path, f"algo {algo} with inner.rates={config.get('inner.rates')}, "
                             f"inner.adapt={config.get('inner.adapt')}, inner.multi_step_loss="
                             f"{config.get('inner.multi_step_loss')}: this checker recomputes "
                             "MAML's gradients only (tests/golden/family_small.h5 and "
                             "tests/core/golden_test.cpp cover the other algorithms)")

        task_ids = sorted(f["tasks"].keys(), key=lambda s: (len(s), s))
        if not task_ids:
            fail_input(path, "/tasks is empty")
        sx0 = f[f"tasks/{task_ids[0]}/support_x"]
        if sx0.ndim != 4:
            fail_input(path, f"/tasks/{task_ids[0]}/support_x has shape {sx0.shape}, "
                             "expected [n, C, H, W]")
        _, channels, height, width = sx0.shape
        params = f["params"]
        if "head.weight" not in params:
            fail_input(path, "missing /params/head.weight")
        ways = params["head.weight"].shape[0]
        specs, model, arch = model_from_dump(path, f, params, config, args, channels, height,
                                             width, ways)
        expected = [n for n, _ in specs]
        if sorted(params.keys()) != sorted(expected):
            fail_input(path, f"/params holds {sorted(params.keys())}, expected {expected}")
        for name, shape in specs:
            if params[name].shape != shape:
                fail_input(path, f"/params/{name} has shape {params[name].shape}, "
                                 f"expected {shape} for {arch}")
        # The gradients are flat vectors in the C++ layout: its order must be the model's.
        if "layout/names" in f:
            names = [n.decode() if isinstance(n, bytes) else str(n)
                     for n in f["layout/names"][()]]
            if names != expected:
                fail_input(path, f"/layout/names is {names}, the JAX model's order {expected}")
        theta = np.concatenate([params[n][()].astype(np.float64).ravel() for n in expected])
        d = theta.size
        trunc_txt = f", truncate {truncate}" if truncate is not None else ""
        print(f"{path}: {arch}, C={channels} {height}x{width} ways={ways}, d={d}, r={steps}, "
              f"alpha={alpha}{trunc_txt}, {len(task_ids)} tasks")

        grads = jax.jit(lambda th, task: mg.meta_grads(th, task, alpha, steps, specs, model,
                                                        truncate))
        worst = 0.0
        for t in task_ids:
            g = f[f"tasks/{t}"]
            for key in ("support_x", "support_y", "query_x", "query_y", "g_fo", "g_exact"):
                if key not in g:
                    fail_input(path, f"missing /tasks/{t}/{key}")
            task = (g["support_x"][()].astype(np.float64), g["support_y"][()].astype(np.int32),
                    g["query_x"][()].astype(np.float64), g["query_y"][()].astype(np.int32))
            for key, lab, x in (("support_y", task[1], task[0]), ("query_y", task[3], task[2])):
                if lab.shape != (x.shape[0],) or lab.min() < 0 or lab.max() >= ways:
                    fail_input(path, f"/tasks/{t}/{key} must be {x.shape[0]} labels in "
                                     f"[0, {ways})")
            ref_fo, ref_ex, qloss, _ = grads(theta, task)
            line, details = [f"task {t}: query_loss {float(qloss):.6f}"], []
            for key, ref in (("g_fo", ref_fo), ("g_exact", ref_ex)):
                got = g[key][()].astype(np.float64).ravel()
                if got.size != d:
                    fail_input(path, f"/tasks/{t}/{key} has {got.size} values, expected {d}")
                ref = np.asarray(ref)
                diff = np.abs(got - ref)
                rel = float(diff.max() / max(np.abs(ref).max(), 1e-30))
                worst = max(worst, rel)
                line.append(f"{key} max|diff|/max|ref| {rel:.2e}")
                if rel > args.tol:
                    off = 0
                    for name, shape in specs:
                        n = int(np.prod(shape))
                        part = float(diff[off:off + n].max() / max(np.abs(ref).max(), 1e-30))
                        if part > args.tol:
                            details.append(f"    {key} {name}: {part:.2e}")
                        off += n
            print("  " + "  ".join(line))
            for d_line in details:
                print(d_line)
        ok = worst <= args.tol
        print(f"{'PASS' if ok else 'FAIL'}: worst relative error {worst:.2e} "
              f"(tolerance {args.tol:.0e})")
        sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
