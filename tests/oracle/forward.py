#!/usr/bin/python3
"""Oracle: cnnc's forward pass (eval mode) against PyTorch.

Usage (Debian's python3 with torch and torchvision):
    /usr/bin/python3 tests/oracle/forward.py [CNNC] [--only NAME]... [-j N]
                                 [--keep DIR] [--fresh] [--f32] [--seed S]

CNNC defaults to build/cnnc. The cases are every example of dsl-examples/
(named by its stem; the big ones at a reduced input size, SIZES below) and
every model in tests/oracle/ops/ (named ops/STEM). For each case:

  1. `CNNC check --dump-after=elaborate` gives the graph; graph_torch.py builds
     the reference computation from it (every op with torch.nn.functional, in
     float64 unless --f32), checking each shape cnnc printed;
  2. random weights with a fixed seed (every parameter and buffer under its
     state_dict name: He-uniform conv, deconv and dense weights, biases in
     [-0.2, 0.2], normalization weights in [0.5, 1.5]; batch norm running_var
     in [0.5, 1.5] and running_mean in [-0.1, 0.1] for the ops/ models, near
     the statistics of the data for the examples (calibrate_bn);
     num_batches_tracked 0 as a 0-d int64) and random inputs of batch 2 are
     written as safetensors;
  3. `CNNC run MODEL.cnn --weights W --input I --output O --batch 2` runs the
     model; every output must be in O, float32, [2, ...per-sample shape], with
     max|got - expected| <= 1e-4 * max(1, max|expected|).

resnet18 is also compared with torchvision's resnet18 on the same weights
(case resnet18/torchvision). One line per case, `ok   NAME (...)` or
`FAIL NAME ...` with details (cnnc's stderr when it fails), then
"N passed, M failed"; the exit status is 1 when a case failed.

--only NAME (repeatable) runs the named cases (`conv_same` or `ops/conv_same`;
`resnet18` includes resnet18/torchvision). -j N runs N cases at once (default:
the number of CPUs, at most 2). --keep DIR keeps the resized examples and
every case's files (weights, input, output) there. --f32 computes the
reference in float32. --fresh gives cnnc an empty cache (XDG_CACHE_HOME), so
every model is compiled again. The environment variable CNNC_FLAGS adds
options to every cnnc command that computes (e.g. CNNC_FLAGS=-fno-tile).
"""
import concurrent.futures
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import zlib

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import graph_torch  # noqa: E402
import st  # noqa: E402

ROOT = graph_torch.ROOT
OPS_DIR = os.path.join(ROOT, "tests", "oracle", "ops")
BATCH = 2
RTOL = 1e-4
RUN_TIMEOUT = 900

# Input [C, H, W] of each example (None: as written; the others are run below
# their published size so that the whole script takes a few minutes). The smallest sizes the architectures accept are 67 for alexnet
# (the paper's, no padding in conv1), 63 for alexnet_tv and zfnet, 32 for VGG
# and ResNet; U-Net's valid convolutions need 188 + 16k (188 gives a 4x4
# output).
SIZES = {
    "lenet5": None,
    "alexnet": (3, 67, 67),
    "alexnet_tv": (3, 64, 64),
    "zfnet": (3, 64, 64),
    "vgg16": (3, 32, 32),
    "vgg19": (3, 32, 32),
    "googlenet": (3, 64, 64),
    "resnet18": (3, 64, 64),
    "resnet34": (3, 64, 64),
    "resnet50": (3, 64, 64),
    "resnet152": (3, 32, 32),
    "densenet121": (3, 64, 64),
    "transfer": (3, 64, 64),
    "unet": (1, 188, 188),
}


class CaseError(Exception):
    pass


def seed_of(name, base):
    return (base * 1000003 + zlib.crc32(name.encode())) % (2 ** 31)


def random_weights(g, seed):
    """{state_dict name: tensor} for every parameter and buffer of graph g,
    float32 (int64 for num_batches_tracked), scaled so activations keep
    roughly unit size through deep networks (He-uniform for conv, deconv and
    dense weights)."""
    gen = torch.Generator().manual_seed(seed)

    def uniform(shape, lo, hi):
        return torch.rand(shape, generator=gen, dtype=torch.float32) * (hi - lo) + lo

    out = {}
    for p in g.params:
        owner = g.nodes[p.owner]
        role = p.name.rsplit(".", 1)[-1]
        shape = p.shape
        if p.dtype == "i64":
            out[p.name] = torch.zeros(shape, dtype=torch.int64)
            continue
        if p.dtype != "f32":
            raise CaseError(f"parameter {p.name} has dtype {p.dtype}")
        if owner.op in ("conv", "deconv", "dense") and role == "weight":
            if owner.op == "deconv":   # [C, out/g, kh, kw]: each output sees C/g * kh * kw
                fan_in = shape[0] // owner.attrs["groups"] * shape[2] * shape[3]
            else:
                fan_in = 1
                for d in shape[1:]:
                    fan_in *= d
            bound = (6.0 / max(fan_in, 1)) ** 0.5
            t = uniform(shape, -bound, bound)
        elif role == "bias":
            t = uniform(shape, -0.2, 0.2)
        elif role == "weight":          # normalization layers
            t = uniform(shape, 0.5, 1.5)
        elif role == "running_mean":
            t = uniform(shape, -0.1, 0.1)
        elif role == "running_var":
            t = uniform(shape, 0.5, 1.5)
        else:
            raise CaseError(f"no rule to initialize {p.name} ({owner.op})")
        out[p.name] = t
    return out


def calibrate_bn(g, f, weights, inputs, seed):
    """Scales the running statistics of every batch norm to what reaches it
    from `inputs`, layer after layer: running_var is the layer's mean square
    times [0.5, 1.5] per channel, running_mean within 0.1 of its root. With
    statistics unrelated to the data, activations grow at every residual add
    (ResNet-152's outputs reach 1e9, and a relative tolerance then sees only
    the largest path); with the batch's own per-channel statistics, deep
    layers subtract what the two samples have in common and blow their small
    difference up, and float32 rounding with it (ResNet-152 then differs by
    4e-3 between float32 and float64). A scale per layer does neither. Used
    for the examples; the ops/ models keep plain random statistics."""
    if not any(n.op == "bn" for n in g.nodes.values()):
        return
    gen = torch.Generator().manual_seed(seed + 2)

    def before(n, xs):
        if n.op != "bn":
            return
        ms = xs[0].double().square().mean().item() + 1e-6
        c = xs[0].shape[1]
        noise = torch.rand(c, generator=gen, dtype=torch.float64) * 2 - 1
        scale = torch.rand(c, generator=gen, dtype=torch.float64) + 0.5
        weights[n.name + ".running_mean"] = (0.1 * ms ** 0.5 * noise).float()
        weights[n.name + ".running_var"] = (ms * scale).float()

    with torch.no_grad():
        f(weights, inputs, before)


def random_inputs(g, seed):
    gen = torch.Generator().manual_seed(seed + 1)
    return {name: torch.randn((BATCH,) + shape, generator=gen)
            for name, shape in g.inputs()}


def compare(name, got, want):
    """(ok, max err, scale, message) for one output."""
    if got.dtype != torch.float32:
        return False, None, None, f"output {name}: dtype {got.dtype}, expected float32"
    if tuple(got.shape) != tuple(want.shape):
        return False, None, None, (f"output {name}: shape {list(got.shape)}, "
                                   f"expected {list(want.shape)}")
    g64, w64 = got.double(), want.double()
    bad = ~torch.isfinite(g64)
    if bad.any():
        idx = tuple(int(i) for i in bad.nonzero()[0])
        return False, float("inf"), None, (f"output {name}: {int(bad.sum())} non-finite "
                                           f"values, first at {list(idx)}: {g64[idx].item()}")
    diff = (g64 - w64).abs()
    err = diff.max().item() if diff.numel() else 0.0
    scale = w64.abs().max().item() if w64.numel() else 0.0
    tol = RTOL * max(1.0, scale)
    if err <= tol:
        return True, err, scale, None
    idx = tuple(int(i) for i in (diff == diff.max()).nonzero()[0])
    nbad = int((diff > tol).sum())
    return False, err, scale, (
        f"output {name}: max err {err:.3g} > tolerance {tol:.3g} (max |expected| "
        f"{scale:.3g}); {nbad} of {diff.numel()} elements off; worst at "
        f"{list(idx)}: got {g64[idx].item():.7g}, expected {w64[idx].item():.7g}")


def run_cnnc(cnnc, path, wpath, ipath, opath, env=None):
    cmd = [cnnc, "run", path, "--weights", wpath, "--input", ipath, "--output", opath,
           "--batch", str(BATCH)] + os.environ.get("CNNC_FLAGS", "").split()
    t0 = time.time()
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT,
                             env=env)
    except subprocess.TimeoutExpired:
        raise CaseError(f"`cnnc run` did not finish in {RUN_TIMEOUT} s") from None
    except OSError as e:
        raise CaseError(f"could not run {cnnc}: {e}") from None
    if run.returncode != 0:
        lines = run.stderr.strip().splitlines()
        shown = lines[:40] + ([f"... ({len(lines) - 40} more lines)"] if len(lines) > 40 else [])
        raise CaseError(f"`{' '.join(cmd)}` exited with status {run.returncode}:\n"
                        + "\n".join("  " + l for l in shown))
    return time.time() - t0


def torchvision_resnet18(weights, x):
    import warnings
    import torchvision.models
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = torchvision.models.resnet18()
    net.load_state_dict(weights)
    net.eval()
    with torch.no_grad():
        return net(x)


def run_case(case, cnnc, work, seed, f64, env=None):
    """[(name, ok, message)] for one case (two for resnet18)."""
    name, path = case
    results = []
    os.makedirs(work, exist_ok=True)
    try:
        g = graph_torch.load(cnnc, path)
        f = graph_torch.build(g)
        s = seed_of(name, seed)
        weights = random_weights(g, s)
        inputs = random_inputs(g, s)
        if not inputs:
            raise CaseError("the model has no float inputs")
        if not name.startswith("ops/"):
            calibrate_bn(g, f, weights, inputs, s)
        with torch.no_grad():
            ref_in = {k: v.double() if f64 else v for k, v in inputs.items()}
            want = f(weights, ref_in)
        wpath, ipath, opath = (os.path.join(work, n) for n in
                               ("weights.safetensors", "input.safetensors",
                                "output.safetensors"))
        st.write(wpath, weights)
        st.write(ipath, inputs)
        if os.path.exists(opath):
            os.remove(opath)
        secs = run_cnnc(cnnc, path, wpath, ipath, opath, env)
        try:
            got = st.read(opath)
        except (OSError, ValueError) as e:
            raise CaseError(f"cannot read cnnc's output {opath}: {e}") from None
        problems, worst, worst_rel, scale_all = [], 0.0, 0.0, 0.0
        for out in want:
            if out not in got:
                problems.append(f"output {out} is missing from {sorted(got)}")
                continue
            ok, err, scale, msg = compare(out, got[out], want[out])
            if not ok:
                problems.append(msg)
            elif err is not None:
                rel = err / max(1.0, scale)
                if rel >= worst_rel:
                    worst, worst_rel = err, rel
                scale_all = max(scale_all, scale)
        for extra in sorted(set(got) - set(want)):
            problems.append(f"unexpected tensor {extra} in the output file")
        if problems:
            results.append((name, False, "\n".join("  " + p for p in problems)))
        else:
            results.append((name, True, f"max err {worst:.2g}, max |y| {scale_all:.3g}, "
                                        f"{len(want)} output(s), run {secs:.1f} s"))
        if name == "resnet18":
            results.append(check_torchvision(weights, inputs, got, want))
    except (CaseError, graph_torch.GraphError) as e:
        results.append((name, False, "  " + str(e).replace("\n", "\n  ")))
    except Exception:  # a bug here must not hide the other cases
        results.append((name, False, "  oracle error:\n" + traceback.format_exc()))
    if name == "resnet18" and len(results) == 1 and not results[0][1]:
        results.append(("resnet18/torchvision", False,
                        "  not compared: the resnet18 case failed"))
    return results


def check_torchvision(weights, inputs, got, want):
    """cnnc's resnet18 output against torchvision's resnet18 itself."""
    name = "resnet18/torchvision"
    try:
        tv = torchvision_resnet18(weights, inputs["x"])
    except Exception as e:
        return (name, False, f"  torchvision failed: {e}")
    problems = []
    (out, ref), = want.items()
    ok, err_ref, _, msg = compare(out, tv, ref.float())
    if not ok:
        problems.append("the interpreter disagrees with torchvision: " + msg)
    if out in got:
        ok, err, scale, msg = compare(out, got[out], tv)
        if not ok:
            problems.append(msg)
    else:
        problems.append(f"output {out} is missing")
    if problems:
        return (name, False, "\n".join("  " + p for p in problems))
    return (name, True, f"max err {err:.2g}, max |y| {scale:.3g} "
                        f"(interpreter vs torchvision {err_ref:.2g})")


# The examples, slowest first (cnnc compiles each with the C compiler; most of
# the time goes there), so that -j keeps every worker busy to the end.
ORDER = ["resnet152", "densenet121", "unet", "googlenet", "resnet50", "resnet34",
         "transfer", "resnet18", "vgg19", "vgg16", "alexnet_tv", "zfnet", "alexnet",
         "lenet5"]


def cases(examples_dir):
    """[(name, path)]: the examples, slowest first, then the ops/ models."""
    out = []
    for stem in ORDER + sorted(set(SIZES) - set(ORDER)):
        out.append((stem, os.path.join(examples_dir, stem + ".cnn")))
    for path in sorted(glob.glob(os.path.join(OPS_DIR, "*.cnn"))):
        out.append(("ops/" + os.path.basename(path)[:-4], path))
    return out


def selected(name, only):
    if not only:
        return True
    short = name.split("/", 1)[1] if name.startswith("ops/") else name
    return name in only or short in only


def main(argv):
    args = argv[1:]
    cnnc = os.path.join(ROOT, "build", "cnnc")
    only, jobs, keep, seed, f64 = [], min(os.cpu_count() or 1, 2), None, 0, True
    fresh = False
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
        elif a == "--f32":
            f64 = False
        elif a in ("-h", "--help"):
            print(__doc__)
            return 0
        elif a.startswith("-"):
            print(f"forward.py: unknown option {a}\n{__doc__}", file=sys.stderr)
            return 2
        else:
            cnnc = a
    cnnc = os.path.abspath(cnnc) if os.sep in cnnc else cnnc
    if jobs > 1:
        torch.set_num_threads(1)

    if keep:
        os.makedirs(keep, exist_ok=True)
    tmp = keep or tempfile.mkdtemp(prefix="cnnc-forward-")
    try:
        examples = graph_torch.resize_examples(os.path.join(tmp, "examples"), SIZES)
        todo = [c for c in cases(examples) if selected(c[0], only)]
        known = {c[0] for c in cases(examples)}
        unknown = [n for n in only if not any(selected(k, [n]) for k in known)]
        if unknown:
            print(f"forward.py: no case named {', '.join(unknown)}", file=sys.stderr)
            return 2
        base = os.path.join(tmp, "cases")
        env = None
        if fresh:   # cnnc caches compiled models in $XDG_CACHE_HOME/cnnc
            env = dict(os.environ, XDG_CACHE_HOME=os.path.join(tmp, "cache"))
        passed = failed = 0
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(run_case, c, cnnc,
                                   os.path.join(base, c[0].replace("/", "_")), seed, f64,
                                   env)
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
        print(f"{passed} passed, {failed} failed")
        return 1 if failed else 0
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
