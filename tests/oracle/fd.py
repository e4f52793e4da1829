#!/usr/bin/python3
"""Finite-difference check of cnnc's gradients against cnnc's own loss.

Usage:
    /usr/bin/python3 tests/oracle/fd.py [CNNC] [--only NAME]... [-j N]
                                        [--probes P] [--seed S] [--jit] [-v]

For every model of tests/oracle/grad_ops/ (weights, data and batch as
grad.py makes them), `CNNC grad` gives the loss L(w) and the gradient g. For
each trainable parameter tensor, a few probes compare the central difference

    (L(w + h v) - L(w - h v)) / 2h     with     g . v

where v is a coordinate vector (the coordinate of largest |g|, and P - 1
random coordinates, default P = 3), with h = 1e-2 * max(1, |w_i|), and a
random direction of unit length with h = 1e-2 * max(1, max|w|). L is
cnnc's float32 loss, so the difference carries float32 rounding of about
1e-7 / h relative to L; a probe passes when

    |fd - g . v| <= 2e-2 * |g . v| + 1e-3,

at h or, failing that, at h/10 (a relu kink or a max-pool window whose
winner changes within the step spoils the larger one; a wrong gradient fails
at both).

cnnc runs the program through the system C compiler (`--cc`, $CC or cc),
which it caches: each probe then costs two runs of the cached program,
where the JIT would compile the model again for every run (about 1 s each,
some 17 minutes in all); --jit runs the JIT instead. That both paths
compute the same gradients is sanitize.py's and test_jit's job.
Dropout's mask depends only on the draw count, which is the same in every
run, so dropout models are smooth too. Random data makes ties in max pooling
unlikely.

grad_ops/conv_packed, grad_ops/conv_dw_samples and grad_ops/conv_windows
run only when named (--only conv_packed): conv_packed's 256-channel
layers, there to reach the convolutions' passes over input channels, take
over 4 minutes of probes through an unoptimized compile, conv_dw_samples'
batch of 8 64 x 64 images (to reach the weight gradient's samples-outermost
order) 97 s, and conv_windows' (a batch of 8 and 256 channels) about 3
minutes; grad.py checks their gradients against PyTorch's on every run.

One line per model, `ok   NAME (probes, worst relative error)` or `FAIL NAME`
with the failing probes, then "N passed, M failed"; exit status 1 on failure.
-v prints every probe.
"""
import concurrent.futures
import glob
import os
import shutil
import sys
import tempfile
import time
import traceback

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import forward  # noqa: E402
import grad  # noqa: E402
import graph_torch  # noqa: E402
import graph_train  # noqa: E402
import st  # noqa: E402

ROOT = graph_torch.ROOT
EXTRA = ["--cc", os.environ.get("CC", "cc")]  # cnnc grad's options (--jit: none)
STEP = 1e-2
RTOL = 2e-2
ATOL = 1e-3


def probe_loss(cnnc, path, work, weights, ipath, batch, tag):
    wpath = os.path.join(work, f"w_{tag}.safetensors")
    opath = os.path.join(work, f"g_{tag}.safetensors")
    st.write(wpath, weights)
    grad.run_grad(cnnc, path, wpath, ipath, opath, batch, extra=EXTRA)
    out = grad.read_grads(opath)
    os.remove(wpath)
    os.remove(opath)
    if "loss" not in out:
        raise grad.CaseError("cnnc's output has no loss")
    return out["loss"].double().item()


def central_difference(cnnc, path, work, weights, pname, w0, v, h, ipath, batch):
    """(L(w + h v) - L(w - h v)) / (step actually taken), with cnnc's loss."""
    wp, wm = dict(weights), dict(weights)
    wp[pname] = (w0 + h * v).float()
    wm[pname] = (w0 - h * v).float()
    # The step after rounding to float32, projected on v.
    taken = ((wp[pname].double() - wm[pname].double()) * v).sum().item()
    lp = probe_loss(cnnc, path, work, wp, ipath, batch, "p")
    lm = probe_loss(cnnc, path, work, wm, ipath, batch, "m")
    return (lp - lm) / taken


def run_case(case, cnnc, work, seed, probes, verbose):
    name, path, batch, count = case
    os.makedirs(work, exist_ok=True)
    lines = []
    try:
        g = graph_torch.load(cnnc, path)
        s = forward.seed_of(name, seed)
        data = grad.random_data(g, count, s)
        weights = grad.case_weights(name, g, s, data)
        ipath = os.path.join(work, "input.safetensors")
        st.write(ipath, data)
        wpath = os.path.join(work, "weights.safetensors")
        opath = os.path.join(work, "grads.safetensors")
        st.write(wpath, weights)
        t0 = time.time()
        grad.run_grad(cnnc, path, wpath, ipath, opath, batch, extra=EXTRA)
        got = grad.read_grads(opath)
        gen = torch.Generator().manual_seed(s + 7)
        fails, worst, n, retried = [], (0.0, ""), 0, 0
        for pname in graph_train.trainable(g):
            if pname not in got:
                fails.append(f"{pname}: no gradient from cnnc")
                continue
            w0 = weights[pname].double()
            gr = got[pname].double()
            flat = gr.flatten()
            top = int(flat.abs().argmax())
            perm = torch.randperm(flat.numel(), generator=gen).tolist()
            coords = [top] + [i for i in perm if i != top][:probes - 1]
            todo = []
            for i in coords:
                v = torch.zeros(flat.numel(), dtype=torch.float64)
                v[i] = 1.0
                idx = [int(j) for j in np.unravel_index(i, tuple(gr.shape))]
                h = STEP * max(1.0, abs(w0.flatten()[i].item()))
                todo.append((f"{pname}{idx}", v.reshape(gr.shape), h))
            v = torch.randn(flat.numel(), generator=gen, dtype=torch.float64)
            v /= v.norm()
            todo.append((f"{pname} along a random direction", v.reshape(gr.shape),
                         STEP * max(1.0, w0.abs().max().item())))
            for label, v, h in todo:
                an = (gr * v).sum().item()
                tol = RTOL * abs(an) + ATOL
                tried = []
                for step in (h, h / 10):
                    fd = central_difference(cnnc, path, work, weights, pname, w0, v, step,
                                            ipath, batch)
                    tried.append((step, fd))
                    if abs(fd - an) <= tol:
                        break
                err = abs(fd - an)
                rel = err / max(abs(an), 1e-30)
                n += 1
                retried += len(tried) > 1 and err <= tol
                if verbose:
                    lines.append(f"    {label}: cnnc {an:.6g}, " + ", ".join(
                        f"fd {d:.6g} (h {st_:.2g})" for st_, d in tried))
                if err > tol:
                    fails.append(f"{label}: cnnc's gradient {an:.6g}, finite differences "
                                 + ", ".join(f"{d:.6g} (h {st_:.3g})" for st_, d in tried)
                                 + f"; tolerance {tol:.3g}")
                elif abs(an) >= 1e-2 and rel > worst[0]:
                    worst = (rel, label)
        secs = time.time() - t0
        detail = "\n".join(lines)
        if fails:
            return (name, False, "\n".join("  " + f for f in fails)
                    + ("\n" + detail if detail else ""))
        return (name, True, f"{n} probes ({retried} at h/10), worst relative error "
                            f"{worst[0]:.2g} at {worst[1] or '-'} (of |g.v| >= 1e-2), "
                            f"{secs:.1f} s" + ("\n" + detail if detail else ""))
    except (grad.CaseError, graph_torch.GraphError) as e:
        return (name, False, "  " + str(e).replace("\n", "\n  "))
    except Exception:
        return (name, False, "  oracle error:\n" + traceback.format_exc())


# Cases too slow for every run (the docstring says why).
BY_NAME_ONLY = {"grad_ops/conv_packed", "grad_ops/conv_dw_samples",
                "grad_ops/conv_windows"}


def main(argv):
    args = argv[1:]
    cnnc = os.path.join(ROOT, "build", "cnnc")
    only, jobs, seed, probes, verbose = [], min(os.cpu_count() or 1, 2), 0, 3, False
    while args:
        a = args.pop(0)
        if a == "--only" and args:
            only.append(args.pop(0))
        elif a == "-j" and args:
            jobs = max(1, int(args.pop(0)))
        elif a == "--seed" and args:
            seed = int(args.pop(0))
        elif a == "--probes" and args:
            probes = max(1, int(args.pop(0)))
        elif a == "--jit":
            EXTRA.clear()
        elif a == "-v":
            verbose = True
        elif a in ("-h", "--help"):
            print(__doc__)
            return 0
        elif a.startswith("-"):
            print(f"fd.py: unknown option {a}\n{__doc__}", file=sys.stderr)
            return 2
        else:
            cnnc = a
    cnnc = os.path.abspath(cnnc) if os.sep in cnnc else cnnc
    torch.set_num_threads(1)
    every = []
    for path in sorted(glob.glob(os.path.join(grad.OPS_DIR, "*.cnn"))):
        batch, count = grad.model_batch(path)
        every.append(("grad_ops/" + os.path.basename(path)[:-4], path, batch, count))
    todo = [c for c in every if grad.selected(c[0], only)
            and (only or c[0] not in BY_NAME_ONLY)]
    unknown = [n for n in only if not any(grad.selected(c[0], [n]) for c in every)]
    if unknown:
        print(f"fd.py: no case named {', '.join(unknown)}", file=sys.stderr)
        return 2
    t0 = time.time()
    tmp = tempfile.mkdtemp(prefix="cnnc-fd-")
    try:
        passed = failed = 0
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(run_case, c, cnnc, os.path.join(tmp, c[0].replace("/", "_")),
                                   seed, probes, verbose) for c in todo]
            for fut in futures:
                name, ok, msg = fut.result()
                if ok:
                    passed += 1
                    print(f"ok   {name} ({msg})")
                else:
                    failed += 1
                    print(f"FAIL {name}\n{msg}")
                sys.stdout.flush()
        print(f"({time.time() - t0:.0f} s)")
        print(f"{passed} passed, {failed} failed")
        return 1 if failed else 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
