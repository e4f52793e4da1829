#!/usr/bin/python3
"""Oracle: the optimizers of cnnc's generated C against torch.optim.

Usage:
    /usr/bin/python3 tests/oracle/optim.py [CNNC] [--only NAME]... [--keep DIR]
                                           [--cc CC]

For each case below, a small model (MODELS) gets the case's train section
(`optimizer sgd(...)` or `adam(...)`); `CNNC MODEL.cnn -o NAME.c` generates its
C (with the options in the environment variable CNNC_FLAGS, if set), which is
compiled with optim_driver.c. The driver loads random weights
(NAME_init(s, 0), then NAME_load), runs K = 5 training steps on fixed batches
that this script writes (steps 0, 2, 4 with NAME_train_step, steps 1 and 3 with
NAME_backward then NAME_update; some cases call NAME_set_lr before a step),
and writes the loss of each step and the final weights (NAME_save).

The reference runs the same steps on graph_train.py's interpreter in training
mode (float64): batch statistics with running-statistic updates, dropout's
mask of draw k + 1 at step k, frozen layers left out of the optimizer and
their batch norms in evaluation mode, with torch.optim.SGD (dampening 0) or
torch.optim.Adam as the train section says. Every loss and every tensor of
the saved weights (parameters, running statistics, num_batches_tracked) must
agree: max|got - expected| <= 1e-4 * max(1, max|expected|) per tensor
(num_batches_tracked exactly), and frozen parameters must be bit-identical
to the loaded ones.

Each case also names a control (the same optimizer without the feature under
test: momentum, nesterov, weight decay, a set_lr, ...); the reference must
differ from its control's by more than 10 tolerances, so that the case would
notice cnnc ignoring the feature.

One line per case, then "N passed, M failed"; exit status 1 on failure.
"""
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import traceback

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import forward  # noqa: E402
import graph_torch  # noqa: E402
import graph_train  # noqa: E402
import st  # noqa: E402

ROOT = graph_torch.ROOT
HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = 5
MODES = [0, 1, 0, 1, 0]     # 0: train_step, 1: backward + update
RTOL = 1e-4

# {NAME}: the model's name; {OPT}: the optimizer. Inputs: x, then labels
# (cross_entropy) or the target (mse). No layer before a batch norm has a
# bias: its gradient is zero, which float32 computes as rounding noise, and
# Adam, which divides by the gradient's size, turns the noise into steps of
# size lr.
MODELS = {
    "conv": ("""
model {NAME} {
  input x[3, 6, 6]
  output y = x -> c1: conv(4, k=3, bias=false) -> b1: bn -> tanh -> dropout(0.25)
    -> c2: conv(4, k=3, p=1) -> b2: bn -> tanh
    -> c3: conv(3, k=3, s=2, p=1, bias=false) -> b3: bn(momentum=0.2) -> relu
    -> flatten -> fc: dense(3)
  freeze c2, b2
  loss cross_entropy(y)
  train {
    batch = 4
    optimizer {OPT}
  }
}
""", False),
    "mse": ("""
model {NAME} {
  input x[6]
  input t[3]
  output y = x -> fc1: dense(5, bias=false) -> b: bn -> sigmoid -> fc2: dense(3)
  loss mse(y, t)
  train {
    batch = 4
    optimizer {OPT}
  }
}
""", True),
    # A second output the loss does not use: its head gets no gradient, and
    # torch.optim leaves a parameter whose gradient is None alone.
    "two_heads": ("""
model {NAME} {
  input x[6]
  h = x -> fc1: dense(5) -> tanh
  output y = h -> fc2: dense(3)
  output aux = h -> fc3: dense(2)
  loss cross_entropy(y)
  train {
    batch = 4
    optimizer {OPT}
  }
}
""", False),
    # The same with a batch norm on the head the loss does not use: the
    # forward pass still runs it, so its running statistics move, as in a
    # PyTorch loop that computes every output.
    "two_heads_bn": ("""
model {NAME} {
  input x[6]
  h = x -> fc1: dense(5) -> tanh
  output y = h -> fc2: dense(3)
  output aux = h -> fc3: dense(2) -> b3: bn(momentum=0.3)
  loss cross_entropy(y)
  train {
    batch = 4
    optimizer {OPT}
  }
}
""", False),
    # A parameter of 2^20 elements, whose update threads share out in runs
    # (lower.c, lower_update); SGD only: among a million gradients some
    # cancel to float32's rounding, whose sign Adam's step then follows.
    "wide": ("""
model {NAME} {
  input x[1024]
  output y = x -> fc1: dense(1024) -> tanh -> fc2: dense(3)
  loss cross_entropy(y)
  train {
    batch = 4
    optimizer {OPT}
  }
}
""", False),
}

# name: (model, optimizer text, torch optimizer, {step: set_lr}, control)
# The torch optimizer is (class name, keyword arguments); a control is the
# same tuple without the feature.
CASES = [
    ("sgd", "conv", "sgd(lr=0.1)", ("SGD", dict(lr=0.1)), {},
     (("SGD", dict(lr=0.05)), {})),
    ("sgd_momentum", "conv", "sgd(lr=0.1, momentum=0.9)",
     ("SGD", dict(lr=0.1, momentum=0.9)), {},
     (("SGD", dict(lr=0.1)), {})),
    ("sgd_nesterov", "conv", "sgd(lr=0.1, momentum=0.9, nesterov=true)",
     ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)), {},
     (("SGD", dict(lr=0.1, momentum=0.9)), {})),
    ("sgd_weight_decay", "conv", "sgd(lr=0.1, weight_decay=0.05)",
     ("SGD", dict(lr=0.1, weight_decay=0.05)), {},
     (("SGD", dict(lr=0.1)), {})),
    ("sgd_all_set_lr", "conv",
     "sgd(lr=0.05, momentum=0.8, nesterov=true, weight_decay=0.02)",
     ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.02)), {2: 0.2},
     (("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.02)), {})),
    ("adam", "conv", "adam(lr=0.01)", ("Adam", dict(lr=0.01)), {},
     (("Adam", dict(lr=0.01, betas=(0.5, 0.999))), {})),
    ("adam_weight_decay", "conv",
     "adam(lr=0.01, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.1)",
     ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)), {3: 0.03},
     (("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6)), {3: 0.03})),
    ("adam_mse", "mse", "adam()", ("Adam", dict(lr=1e-3)), {},
     (("Adam", dict(lr=2e-3)), {})),
    ("sgd_momentum_mse", "mse", "sgd(lr=0.2, momentum=0.7)",
     ("SGD", dict(lr=0.2, momentum=0.7)), {1: 0.1},
     (("SGD", dict(lr=0.2, momentum=0.7)), {})),
    ("sgd_unused_head", "two_heads", "sgd(lr=0.1, momentum=0.9, weight_decay=0.05)",
     ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.05)), {},
     (("SGD", dict(lr=0.1, momentum=0.9)), {})),
    ("adam_unused_head", "two_heads", "adam(lr=0.01, weight_decay=0.1)",
     ("Adam", dict(lr=0.01, weight_decay=0.1)), {},
     (("Adam", dict(lr=0.01)), {})),
    ("sgd_wide", "wide", "sgd(lr=0.1, momentum=0.9, weight_decay=0.05)",
     ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.05)), {},
     (("SGD", dict(lr=0.1, momentum=0.9)), {})),
    ("sgd_unused_bn_head", "two_heads_bn", "sgd(lr=0.1, momentum=0.9)",
     ("SGD", dict(lr=0.1, momentum=0.9)), {},
     (("SGD", dict(lr=0.1)), {})),
]


class CaseError(Exception):
    pass


def run(cmd, what, cwd=None):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CaseError(f"{what}: {e}") from None
    if r.returncode != 0:
        raise CaseError(f"{what}: `{' '.join(cmd)}` exited with status {r.returncode}:\n"
                        + r.stderr.strip())
    return r


def make_data(g, count, seed):
    """[(mode, lr, x, y)] for the STEPS steps."""
    gen = torch.Generator().manual_seed(seed)
    (xname, xshape), *rest = g.inputs()
    if xname != "x":
        raise CaseError(f"the first input is {xname}, not x")
    steps = []
    for k in range(STEPS):
        x = torch.randn((count,) + xshape, generator=gen)
        if rest:
            (tname, tshape), = rest
            y = torch.randn((count,) + tshape, generator=gen)
        else:
            ce = next(n for n in g.nodes.values() if n.op == "cross_entropy")
            classes = g.nodes[ce.ins[0]].shape[0]
            y = torch.randint(0, classes, (count,), generator=gen, dtype=torch.int64)
        steps.append((MODES[k], x, y))
    return steps


def write_data(path, steps, lrs):
    count = steps[0][1].shape[0]
    xn, yn = steps[0][1].numel(), steps[0][2].numel()
    with open(path, "wb") as f:
        f.write(struct.pack("<4q", STEPS, count, xn, yn))
        for k, (mode, x, y) in enumerate(steps):
            f.write(struct.pack("<qf", mode, lrs.get(k, 0.0)))
            f.write(st._raw(x.float()))
            f.write(st._raw(y))


def reference(g, weights, steps, opt, lrs, yname):
    """(losses, final {name: tensor}) of torch.optim on the interpreter."""
    f = graph_train.build(g)
    state = {k: v.detach().clone().double() if v.is_floating_point() else v.clone()
             for k, v in weights.items()}
    params = []
    for k in graph_train.trainable(g):
        state[k].requires_grad_(True)
        params.append(state[k])
    cls, kw = opt
    optimizer = getattr(torch.optim, cls)(params, **kw)
    losses = []
    for k, (mode, x, y) in enumerate(steps):
        if k in lrs:
            for group in optimizer.param_groups:
                group["lr"] = lrs[k]
        optimizer.zero_grad()
        loss, _, buffers = f(state, {"x": x.double(), yname: y.double()
                                     if y.is_floating_point() else y}, draws=k + 1)
        loss.backward()
        optimizer.step()
        for b, v in buffers.items():
            state[b] = v.detach()
        losses.append(loss.item())
    return losses, {k: v.detach() for k, v in state.items()}


def max_rel(a, b):
    """max over tensors of max|a - b| / max(1, max|b|)."""
    out = 0.0
    for k, v in b.items():
        if v.is_floating_point():
            d = (a[k].double() - v.double()).abs().max().item()
            out = max(out, d / max(1.0, v.abs().max().item()))
    return out


def run_case(case, cnnc, cc, work):
    name, model, opt_text, opt, lrs, control = case
    os.makedirs(work, exist_ok=True)
    mname = "optim_" + name
    text, target = MODELS[model]
    src = os.path.join(work, mname + ".cnn")
    with open(src, "w") as f:
        f.write(text.replace("{NAME}", mname).replace("{OPT}", opt_text))
    g = graph_torch.load(cnnc, src)
    seed = forward.seed_of(name, 0)
    weights = forward.random_weights(g, seed)
    steps = make_data(g, 4, seed + 1)
    yname = "t" if target else "labels"
    wpath, dpath, lpath, opath = (os.path.join(work, n) for n in
                                  ("weights.safetensors", "data.bin", "losses.txt",
                                   "out.safetensors"))
    st.write(wpath, weights)
    write_data(dpath, steps, lrs)
    t0 = time.time()
    run([cnnc, src, "-o", os.path.join(work, mname + ".c")] +
        os.environ.get("CNNC_FLAGS", "").split(), "cnnc")
    cmd = cc.split() + ["-std=c99", "-O2", "-Wall", "-Wextra", f"-DMODEL={mname}",
                        f'-DMODEL_H="{mname}.h"', "-I", work] + \
        (["-DTARGET"] if target else []) + \
        ["-o", os.path.join(work, "driver"), os.path.join(HERE, "optim_driver.c"),
         os.path.join(work, mname + ".c"), "-lm"]
    r = run(cmd, "cc")
    warnings = r.stderr.strip()
    run([os.path.join(work, "driver"), wpath, dpath, lpath, opath], "driver")
    secs = time.time() - t0
    with open(lpath) as f:
        got_losses = [float(l) for l in f.read().split()]
    got = st.read(opath)

    want_losses, want = reference(g, weights, steps, opt, lrs, yname)
    problems, worst, worst_name = [], 0.0, None
    if len(got_losses) != STEPS:
        problems.append(f"{len(got_losses)} losses, expected {STEPS}")
    for k, (a, b) in enumerate(zip(got_losses, want_losses)):
        err = abs(a - b) / max(1.0, abs(b))
        if err > RTOL:
            problems.append(f"loss of step {k}: {a:.9g}, expected {b:.9g}")
        elif err > worst:
            worst, worst_name = err, f"loss {k}"
    frozen = {p.name for p in g.params if p.frozen}
    for k in sorted(set(got) ^ set(want)):
        problems.append(f"{k}: only in {'cnnc' if k in got else 'the reference'}'s weights")
    for k in sorted(set(got) & set(want)):
        a, b = got[k], want[k]
        if tuple(a.shape) != tuple(b.shape):
            problems.append(f"{k}: shape {list(a.shape)}, expected {list(b.shape)}")
            continue
        if not b.is_floating_point():
            if not torch.equal(a, b):
                problems.append(f"{k}: {a.tolist()}, expected {b.tolist()}")
            continue
        if k in frozen and not torch.equal(a, weights[k]):
            problems.append(f"{k} is frozen but changed: max change "
                            f"{(a - weights[k]).abs().max().item():.3g}")
        d = (a.double() - b).abs()
        err = d.max().item()
        scale = b.abs().max().item()
        if err > RTOL * max(1.0, scale):
            i = tuple(int(j) for j in (d == d.max()).nonzero()[0])
            moved = (b - weights[k].double()).abs().max().item()
            problems.append(f"{k}: max err {err:.3g} > {RTOL * max(1.0, scale):.3g} at "
                            f"{list(i)}: got {a[i].item():.7g}, expected {b[i].item():.7g}, "
                            f"loaded {weights[k][i].item():.7g} (the reference moved it "
                            f"by up to {moved:.3g})")
        elif err / max(1.0, scale) > worst:
            worst, worst_name = err / max(1.0, scale), k
    # The case must be able to see its feature.
    (copt, clrs) = control
    _, cwant = reference(g, weights, steps, copt, clrs, yname)
    sens = max_rel(cwant, want) / RTOL
    if sens < 10:
        problems.append(f"the control differs from the reference by only {sens:.2g} "
                        f"tolerances: the case does not test its feature")
    note = f"; the C compiler warned:\n{warnings}" if warnings else ""
    if problems:
        return (name, False, "\n".join("  " + p for p in problems) + note)
    return (name, True, f"{STEPS} steps, losses {got_losses[0]:.4g} .. {got_losses[-1]:.4g}; "
                        f"worst relative err {worst:.2g} ({worst_name}); control "
                        f"{sens:.0f} tolerances away; {secs:.1f} s{note}")


def main(argv):
    args = argv[1:]
    cnnc, cc = os.path.join(ROOT, "build", "cnnc"), "cc"
    only, keep = [], None
    while args:
        a = args.pop(0)
        if a == "--only" and args:
            only.append(args.pop(0))
        elif a == "--keep" and args:
            keep = os.path.abspath(args.pop(0))
        elif a == "--cc" and args:
            cc = args.pop(0)
        elif a in ("-h", "--help"):
            print(__doc__)
            return 0
        elif a.startswith("-"):
            print(f"optim.py: unknown option {a}\n{__doc__}", file=sys.stderr)
            return 2
        else:
            cnnc = a
    cnnc = os.path.abspath(cnnc) if os.sep in cnnc else cnnc
    unknown = [n for n in only if n not in {c[0] for c in CASES}]
    if unknown:
        print(f"optim.py: no case named {', '.join(unknown)}", file=sys.stderr)
        return 2
    t0 = time.time()
    tmp = keep or tempfile.mkdtemp(prefix="cnnc-optim-")
    try:
        passed = failed = 0
        for case in CASES:
            if only and case[0] not in only:
                continue
            try:
                name, ok, msg = run_case(case, cnnc, cc, os.path.join(tmp, case[0]))
            except (CaseError, graph_torch.GraphError) as e:
                name, ok, msg = case[0], False, "  " + str(e).replace("\n", "\n  ")
            except Exception:
                name, ok, msg = case[0], False, "  oracle error:\n" + traceback.format_exc()
            if ok:
                passed += 1
                print(f"ok   {name} ({msg})")
            else:
                failed += 1
                print(f"FAIL {name}\n{msg}")
            sys.stdout.flush()
        if keep:
            print(f"files kept in {keep}")
        print(f"({time.time() - t0:.0f} s)")
        print(f"{passed} passed, {failed} failed")
        return 1 if failed else 0
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
