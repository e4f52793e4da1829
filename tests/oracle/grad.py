#!/usr/bin/python3
"""Oracle: cnnc's gradients (`cnnc grad`, training mode) against PyTorch.

Usage (Debian's python3 with torch and torchvision):
    /usr/bin/python3 tests/oracle/grad.py [CNNC] [--only NAME]... [-j N]
                                          [--keep DIR] [--fresh] [--seed S]

CNNC defaults to build/cnnc; the environment variable CNNC_FLAGS adds options
to its grad commands (e.g. CNNC_FLAGS=-fno-tile; fd.py uses them too). The
cases are every model in tests/oracle/grad_ops/
(named grad_ops/STEM) and every example of dsl-examples/ (named by its stem),
the big ones at a reduced input size (SIZES below). For each case:

  1. `CNNC check --dump-after=elaborate` gives the graph; graph_train.py builds
     the training-mode reference from it (batch statistics, cnnc's dropout
     mask, the loss), in float64, gradients by autograd;
  2. random weights with a fixed seed (forward.py's: He-uniform conv, deconv
     and dense weights, biases in [-0.2, 0.2], normalization weights in
     [0.5, 1.5], running_var positive; for the examples, batch norm weights
     in [0.3, 0.6] and biases in [1, 1.5], see condition_bn, and running
     statistics calibrated to the data, which frozen batch norms use), random
     inputs (and mse targets) from N(0, 1), random labels, written as
     safetensors;
  3. `CNNC grad MODEL.cnn --weights W --input I --output G --batch B` runs one
     training step; G must hold `loss` and the gradient of exactly the
     trainable parameters (frozen ones and buffers absent), float32, each
     with max|got - expected| <= 1e-3 * max(1, max|expected|).

When a case is off, relu inputs within float32 rounding of zero (the
float64 forward against PyTorch's float32 one) may be to blame: float32 can
put them on the other side of the kink, and batch norm's backward spreads
that over a channel. The case then passes only if inverting relu's decision
at some of them (at most MAX_FLIPS, chosen greedily, each effect computed in
float64) brings every tensor within the tolerance; its line names them.

The batch B is 2, or the `train { batch }` of a grad_ops model; a grad_ops
model may say `# oracle: count N` to run N < B samples, and `# oracle:
labels int32` to write its labels as int32. resnet18 runs at
64x64 with batch 4 and is also compared with torchvision's resnet18 in train
mode on the same weights (case resnet18/torchvision; the interpreter must
agree with torchvision to 1e-9 too).

One line per case, `ok   NAME (...)` or `FAIL NAME` with details (cnnc's
stderr when it fails), then "N passed, M failed"; the exit status is 1 when a
case failed. Options as forward.py's: --only NAME (repeatable; `bn` or
`grad_ops/bn`), -j N cases at once (default: CPUs, at most 2), --keep DIR
keeps the resized examples and every case's files, --fresh compiles
everything again (an empty XDG_CACHE_HOME), --seed S changes the data.
"""
import concurrent.futures
import glob
import os
import re
import shutil
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
OPS_DIR = os.path.join(ROOT, "tests", "oracle", "grad_ops")
BATCH = 2
RTOL = 1e-3
MAX_FLIPS = 12
RUN_TIMEOUT = 900

# Input [C, H, W] of the examples (None: as written): 64x64 where the
# architecture accepts it, else the smallest size it accepts (67 for the
# paper's AlexNet); U-Net's valid convolutions need 188 + 16k.
SIZES = {
    "densenet121": (3, 64, 64),
    "resnet152": (3, 64, 64),
    "googlenet": (3, 64, 64),
    "resnet50": (3, 64, 64),
    "resnet34": (3, 64, 64),
    "vgg19": (3, 64, 64),
    "vgg16": (3, 64, 64),
    "resnet18": (3, 64, 64),
    "unet": (1, 188, 188),
    "transfer": (3, 64, 64),
    "alexnet": (3, 67, 67),
    "alexnet_tv": (3, 64, 64),
    "zfnet": (3, 64, 64),
    "lenet5": None,
}
# Batch of the examples that do not run at BATCH.
EXAMPLE_BATCH = {"resnet18": 4}


class CaseError(Exception):
    pass


def model_batch(path):
    """(batch, count) for a grad_ops model: its `train { batch = B }` (else
    BATCH) and its `# oracle: count N` (else B)."""
    with open(path) as f:
        text = f.read()
    m = re.search(r"\btrain\s*\{[^}]*\bbatch\s*=\s*(\d+)", text)
    batch = int(m.group(1)) if m else BATCH
    m = re.search(r"#\s*oracle:\s*count\s+(\d+)", text)
    count = int(m.group(1)) if m else batch
    return batch, count


def int32_labels(path):
    """Whether a grad_ops model says `# oracle: labels int32` (the labels
    are then written as int32, which cnnc widens)."""
    with open(path) as f:
        return re.search(r"#\s*oracle:\s*labels\s+int32", f.read()) is not None


def random_data(g, count, seed):
    """{name: tensor}: every float input [count, ...] from N(0, 1) and, for a
    cross_entropy loss, `labels` (int64) uniform over the classes."""
    gen = torch.Generator().manual_seed(seed + 1)
    data = {name: torch.randn((count,) + shape, generator=gen)
            for name, shape in g.inputs()}
    for n in g.nodes.values():
        if n.op == "cross_entropy":
            logits, labels = (g.nodes[i] for i in n.ins)
            k = logits.shape[0]
            data[labels.name] = torch.randint(0, k, (count,) + labels.shape,
                                              generator=gen, dtype=torch.int64)
    return data


def condition_bn(g, weights, seed):
    """Batch norm weights in [0.3, 0.6] and biases in [1.0, 1.5], for the
    examples. With forward.py's [0.5, 1.5] and [-0.2, 0.2], deep batch-norm
    networks in training mode put many relu inputs within float32 rounding
    of zero (DenseNet-121 at 64x64: 18 of its 2.6 million within 1e-6 of the
    layer's largest, some at 1e-7); float32 then switches a few of them off
    or on, and batch norm's backward spreads each switch over its channel:
    PyTorch in float32 differs from float64 by 5e-3 (DenseNet-121), 6e-2
    (ResNet-50) and 0.4 (ResNet-152) relative, far above the tolerance, and
    cnnc by as much. With the relu inputs moved away from zero, float32
    PyTorch agrees with float64 to ~1e-5 on every example. The grad_ops
    models keep forward.py's values (relu kinks covered there)."""
    gen = torch.Generator().manual_seed(seed + 3)
    for n in g.nodes.values():
        if n.op == "bn":
            c = n.shape[0]
            weights[n.name + ".weight"] = torch.rand(c, generator=gen) * 0.3 + 0.3
            weights[n.name + ".bias"] = torch.rand(c, generator=gen) * 0.5 + 1.0


def case_weights(name, g, seed, data):
    """Random weights as forward.py makes them; for the examples, batch
    norm's affine parameters away from relu's kink (condition_bn) and its
    statistics calibrated to the data (what frozen batch norms use)."""
    weights = forward.random_weights(g, seed)
    if not name.startswith("grad_ops/"):
        condition_bn(g, weights, seed)
        floats = {k: v for k, v in data.items() if v.is_floating_point()}
        forward.calibrate_bn(g, graph_torch.build(g), weights, floats, seed)
    return weights


def run_grad(cnnc, path, wpath, ipath, opath, batch, env=None, extra=()):
    """Runs `cnnc grad` (with the options extra); returns the seconds it took."""
    cmd = [cnnc, "grad", path, "--weights", wpath, "--input", ipath, "--output", opath,
           "--batch", str(batch)] + os.environ.get("CNNC_FLAGS", "").split() + list(extra)
    if os.path.exists(opath):
        os.remove(opath)
    t0 = time.time()
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT,
                             env=env)
    except subprocess.TimeoutExpired:
        raise CaseError(f"`cnnc grad` did not finish in {RUN_TIMEOUT} s") from None
    except OSError as e:
        raise CaseError(f"could not run {cnnc}: {e}") from None
    if run.returncode != 0:
        lines = run.stderr.strip().splitlines()
        shown = lines[:40] + ([f"... ({len(lines) - 40} more lines)"] if len(lines) > 40 else [])
        raise CaseError(f"`{' '.join(cmd)}` exited with status {run.returncode}:\n"
                        + "\n".join("  " + l for l in shown))
    return time.time() - t0


def read_grads(opath):
    try:
        return st.read(opath)
    except (OSError, ValueError) as e:
        raise CaseError(f"cannot read cnnc's output {opath}: {e}") from None


def compare(name, got, want, rtol=RTOL):
    """(ok, max err, scale, message) for one tensor."""
    if got.dtype != torch.float32:
        return False, None, None, f"{name}: dtype {got.dtype}, expected float32"
    if tuple(got.shape) != tuple(want.shape):
        return False, None, None, (f"{name}: shape {list(got.shape)}, "
                                   f"expected {list(want.shape)}")
    g64, w64 = got.double(), want.double()
    bad = ~torch.isfinite(g64)
    if bad.any():
        idx = tuple(int(i) for i in bad.nonzero()[0])
        return False, float("inf"), None, (f"{name}: {int(bad.sum())} non-finite "
                                           f"values, first at {list(idx)}: {g64[idx].item()}")
    diff = (g64 - w64).abs()
    err = diff.max().item() if diff.numel() else 0.0
    scale = w64.abs().max().item() if w64.numel() else 0.0
    tol = rtol * max(1.0, scale)
    if err <= tol:
        return True, err, scale, None
    idx = tuple(int(i) for i in (diff == diff.max()).nonzero()[0])
    nbad = int((diff > tol).sum())
    return False, err, scale, (
        f"{name}: max err {err:.3g} > tolerance {tol:.3g} (max |expected| "
        f"{scale:.3g}); {nbad} of {diff.numel()} elements off; worst at "
        f"{list(idx)}: got {g64[idx].item():.7g}, expected {w64[idx].item():.7g}")


def check_grads(g, got, loss, grads):
    """(problems, worst (err, name, scale) by err / max(1, scale)) comparing
    cnnc's gradient file with the reference loss and gradients."""
    problems, worst = [], (0.0, None, 0.0, 0.0)
    want = dict(grads)
    want["loss"] = loss
    frozen = {p.name for p in g.params if p.frozen}
    buffers = {p.name for p in g.params if p.kind == "buffer"}
    for name in sorted(set(got) - set(want)):
        what = ("a frozen parameter" if name in frozen else
                "a buffer" if name in buffers else "not a trainable parameter")
        problems.append(f"{name} is in cnnc's gradients but is {what}")
    for name in want:
        if name not in got:
            problems.append(f"{name} is missing from cnnc's gradients")
            continue
        ok, err, scale, msg = compare(name, got[name], want[name])
        if not ok:
            problems.append(msg)
        elif err is not None:
            rel = err / max(1.0, scale)
            if rel >= worst[3]:
                worst = (err, name, scale, rel)
    return problems, worst


def near_kinks(g, f, weights, data, limit=MAX_FLIPS):
    """[(|x|, tau, relu node id, flat index)] of the relu inputs that float32
    may put on the other side of zero: |x| < tau in the float64 forward pass,
    tau = 3 * the largest difference between PyTorch's float32 and float64
    inputs of that relu. At most `limit`, closest to zero (relative to tau)
    first."""
    rec = {}

    def hook(tag):
        def before(n, xs):
            if n.op == "relu":
                rec.setdefault(n.id, {})[tag] = xs[0].detach()
        return before

    with torch.no_grad():
        f({k: v.double() if v.is_floating_point() else v for k, v in weights.items()},
          {k: v.double() if v.is_floating_point() else v for k, v in data.items()},
          before=hook(64))
        f(weights, data, before=hook(32))
    out = []
    for nid, r in rec.items():
        a = r[64].flatten()
        tau = 3 * (a - r[32].double().flatten()).abs().max().item()
        for i in (a.abs() < tau).nonzero().flatten().tolist():
            out.append((abs(a[i].item()), tau, nid, i))
    out.sort(key=lambda t: t[0] / t[1])
    return out[:limit]


def explain_by_flips(g, weights, data, got, loss, grads):
    """When cnnc's gradients are off, whether inverting the relu decisions
    at a few inputs within float32 rounding of zero (near_kinks) explains
    the difference: each such decision's effect on the loss and gradients
    is computed in float64, then a greedy choice of decisions must bring
    every tensor within the tolerance. Returns (explained, message)."""
    want = dict(grads)
    want["loss"] = loss
    names = [k for k in want if k in got and tuple(got[k].shape) == tuple(want[k].shape)]
    if len(names) != len(want):
        return False, None
    f = graph_train.build(g)
    cands = near_kinks(g, f, weights, data)
    if not cands:
        return False, "no relu input lies within float32 rounding of zero"
    tol = {k: RTOL * max(1.0, want[k].abs().max().item()) for k in names}
    resid = {k: got[k].double() - want[k].double() for k in names}
    effects = []
    for a, tau, nid, i in cands:
        fl = graph_train.build(g, flips={nid: {i}})
        l2, g2, _ = graph_train.gradients(g, weights, data, f=fl)
        g2["loss"] = l2
        effects.append(((a, tau, nid, i), {k: g2[k] - want[k] for k in names}))

    def badness(r):
        return sum(((r[k] / tol[k]) ** 2).sum().item() for k in names)

    chosen, cur = [], badness(resid)
    improved = True
    while improved:
        improved = False
        for j, (c, e) in enumerate(effects):
            if j in [x for x, _ in chosen]:
                continue
            trial = {k: resid[k] - e[k] for k in names}
            b = badness(trial)
            if b < cur:
                resid, cur, improved = trial, b, True
                chosen.append((j, c))
    worst = max((resid[k].abs().max().item() / tol[k], k) for k in names)
    where = ", ".join(f"{g.nodes[nid].name}[{i}] (|x| {a:.2g}, float32 error ~{tau / 3:.2g})"
                      for _, (a, tau, nid, i) in chosen)
    if worst[0] <= 1.0 and chosen:
        return True, (f"explained by float32 deciding relu the other way at "
                      f"{len(chosen)} of {len(cands)} inputs within rounding of zero: {where}; "
                      f"then worst {worst[1]} at {worst[0]:.2g} tolerances")
    return False, (f"inverting relu at {len(chosen)} of {len(cands)} inputs near zero "
                   f"({where or '-'}) leaves {worst[1]} at {worst[0]:.3g} tolerances")


def torchvision_resnet18_grads(weights, data):
    """(loss, {param: grad}) of torchvision's resnet18 in train mode, float64."""
    import warnings
    import torchvision.models
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = torchvision.models.resnet18()
    net.load_state_dict(weights)
    net.double().train()
    out = net(data["x"].double())
    loss = torch.nn.functional.cross_entropy(out, data["labels"])
    loss.backward()
    return loss.detach(), {k: p.grad for k, p in net.named_parameters()}


def run_case(case, cnnc, work, seed, env=None):
    """[(name, ok, message)] for one case (two for resnet18)."""
    name, path, batch, count = case
    results = []
    os.makedirs(work, exist_ok=True)
    try:
        g = graph_torch.load(cnnc, path)
        if g.loss is None:
            raise CaseError("the model has no loss")
        s = forward.seed_of(name, seed)
        data = random_data(g, count, s)
        weights = case_weights(name, g, s, data)
        f = graph_train.build(g)
        loss, grads, _ = graph_train.gradients(g, weights, data, f=f)
        wpath, ipath, opath = (os.path.join(work, n) for n in
                               ("weights.safetensors", "input.safetensors",
                                "grads.safetensors"))
        st.write(wpath, weights)
        if name.startswith("grad_ops/") and int32_labels(path):
            data = {k: v.int() if k == "labels" else v for k, v in data.items()}
        st.write(ipath, data)
        secs = run_grad(cnnc, path, wpath, ipath, opath, batch, env)
        got = read_grads(opath)
        problems, (err, wname, scale, _) = check_grads(g, got, loss, grads)
        nfrozen = sum(1 for p in g.params if p.kind == "param" and p.frozen)
        excuse = None
        if problems and not any("cnnc's gradients but" in p or "missing" in p
                                for p in problems):
            explained, excuse = explain_by_flips(g, weights, data, got, loss, grads)
            if explained:
                problems = []
        if problems:
            results.append((name, False, "\n".join("  " + p for p in problems)
                            + (f"\n  ({excuse})" if excuse else "")))
        else:
            results.append((name, True, f"loss {loss.item():.4g}, {len(grads)} gradients"
                                        f"{f' ({nfrozen} frozen absent)' if nfrozen else ''}, "
                                        + (excuse if excuse else
                                           f"worst {wname} err {err:.2g} (max |g| {scale:.3g})")
                                        + f", batch {count}/{batch}, grad {secs:.1f} s"))
        if name == "resnet18":
            results.append(check_torchvision(weights, data, got, loss, grads))
    except (CaseError, graph_torch.GraphError) as e:
        results.append((name, False, "  " + str(e).replace("\n", "\n  ")))
    except Exception:  # a bug here must not hide the other cases
        results.append((name, False, "  oracle error:\n" + traceback.format_exc()))
    return results


def check_torchvision(weights, data, got, loss, grads):
    """cnnc's resnet18 gradients against torchvision's resnet18 itself."""
    name = "resnet18/torchvision"
    try:
        tv_loss, tv = torchvision_resnet18_grads(weights, data)
    except Exception as e:
        return (name, False, f"  torchvision failed: {e}")
    problems = []
    if set(tv) != set(grads):
        problems.append(f"parameters differ: only cnnc {sorted(set(grads) - set(tv))[:5]}, "
                        f"only torchvision {sorted(set(tv) - set(grads))[:5]}")
    # The interpreter against torchvision (both float64).
    ref = max((grads[k] - tv[k]).abs().max().item() / max(1.0, tv[k].abs().max().item())
              for k in tv if k in grads)
    ref = max(ref, abs(loss.item() - tv_loss.item()))
    if ref > 1e-9:
        problems.append(f"the interpreter disagrees with torchvision: {ref:.3g}")
    want = dict(tv)
    want["loss"] = tv_loss
    worst = (0.0, None, 0.0)
    for k, v in want.items():
        if k not in got:
            problems.append(f"{k} is missing from cnnc's gradients")
            continue
        ok, err, scale, msg = compare(k, got[k], v)
        if not ok:
            problems.append(msg)
        elif err / max(1.0, scale) >= worst[0] / max(1.0, worst[2]):
            worst = (err, k, scale)
    if problems:
        return (name, False, "\n".join("  " + p for p in problems))
    return (name, True, f"{len(tv)} parameter gradients and the loss, batch "
                        f"{data['x'].shape[0]}; worst {worst[1]} err {worst[0]:.2g} "
                        f"(max |g| {worst[2]:.3g}); interpreter vs torchvision {ref:.2g}")


def cases(examples_dir):
    out = []
    for stem in SIZES:
        b = EXAMPLE_BATCH.get(stem, BATCH)
        out.append((stem, os.path.join(examples_dir, stem + ".cnn"), b, b))
    for path in sorted(glob.glob(os.path.join(OPS_DIR, "*.cnn"))):
        batch, count = model_batch(path)
        out.append(("grad_ops/" + os.path.basename(path)[:-4], path, batch, count))
    return out


def selected(name, only):
    if not only:
        return True
    short = name.split("/", 1)[1] if name.startswith("grad_ops/") else name
    return name in only or short in only


def main(argv):
    args = argv[1:]
    cnnc = os.path.join(ROOT, "build", "cnnc")
    only, jobs, keep, seed, fresh = [], min(os.cpu_count() or 1, 2), None, 0, False
    while args:
        a = args.pop(0)
        if a == "--only" and args:
            only.append(args.pop(0))
        elif a == "-j" and args:
            jobs = max(1, int(args.pop(0)))
        elif a == "--keep" and args:
            keep = os.path.abspath(args.pop(0))
        elif a == "--seed" and args:
            seed = int(args.pop(0))
        elif a == "--fresh":
            fresh = True
        elif a in ("-h", "--help"):
            print(__doc__)
            return 0
        elif a.startswith("-"):
            print(f"grad.py: unknown option {a}\n{__doc__}", file=sys.stderr)
            return 2
        else:
            cnnc = a
    cnnc = os.path.abspath(cnnc) if os.sep in cnnc else cnnc
    if jobs > 1:
        torch.set_num_threads(1)
    t0 = time.time()
    if keep:
        os.makedirs(keep, exist_ok=True)
    tmp = keep or tempfile.mkdtemp(prefix="cnnc-grad-")
    try:
        examples = graph_torch.resize_examples(os.path.join(tmp, "examples"), SIZES)
        every = cases(examples)
        todo = [c for c in every if selected(c[0], only)]
        unknown = [n for n in only if not any(selected(c[0], [n]) for c in every)]
        if unknown:
            print(f"grad.py: no case named {', '.join(unknown)}", file=sys.stderr)
            return 2
        base = os.path.join(tmp, "cases")
        env = None
        if fresh:   # cnnc caches compiled models in $XDG_CACHE_HOME/cnnc
            env = dict(os.environ, XDG_CACHE_HOME=os.path.join(tmp, "cache"))
        passed = failed = 0
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(run_case, c, cnnc,
                                   os.path.join(base, c[0].replace("/", "_")), seed, env)
                       for c in todo]
            for fut in futures:
                for name, ok, msg in fut.result():
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
