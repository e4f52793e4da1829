#!/usr/bin/python3
"""cnnc's generated code against PyTorch: training throughput and inference
latency, on this machine, in one run.

usage: /usr/bin/python3 bench/speed.py [--cnnc build/cnnc] [--model M]...
           [--size C,H,W] [--train-batch 64] [--infer-batch 1]
           [--seconds 3] [--rounds 3] [--threads 1] [--cc cc]
           [--data /usr/share/datasets/fashion-mnist] [--out build/bench]
           [--no-openblas] [--layers N]

For each model (a path, or NAME for dsl-examples/NAME.cnn; lenet5 by
default; --size changes its input to [C, H, W]):

  training   images/s of one training step at --train-batch (0: skip): the
             forward pass in training mode, the loss, the backward pass and
             the optimizer's update of the model's train section (SGD with
             momentum and weight decay for LeNet-5). cnnc: NAME_train_step
             of `cnnc MODEL -o NAME.c --batch B --target native`. PyTorch:
             zero_grad, forward, F.cross_entropy, backward and the same
             torch.optim
             step on bench/torch_model.py's nn.Module of cnnc's graph
             (tests/oracle/graph_torch.py's layers), in eager mode.
  inference  the median latency of one forward pass (evaluation mode) at
             --infer-batch (0: skip). cnnc: NAME_forward of `cnnc MODEL -o
             NAME.c --infer-only --batch B --target native`, as a product
             built for this processor embeds it.
             PyTorch: the eager module under torch.inference_mode(), and
             the TorchScript module (traced, frozen, then
             torch.jit.optimize_for_inference); the faster one is compared.

The C side is bench/harness.c, compiled against the generated code with the
flags `cnnc run` uses (`cc -std=c99 -O3 -march=native -fopenmp
-D_XOPEN_SOURCE=700`, compiler/run.c) and timed with clock_gettime; its
parallel loops run on OMP_NUM_THREADS=--threads threads. PyTorch is timed
in this process with time.perf_counter, torch.set_num_threads(--threads).
Both
see the same inputs, 16 batches of the largest batch size (fewer for big
inputs): the first Fashion-MNIST training images (1,024 for LeNet-5,
scaled to [-1, 1]) when the input is [1, 28, 28] and the data is there,
uniform noise in [-1, 1] otherwise; the weights are each side's own initialization
from the same rules. Each measurement warms up, then runs for --seconds
(at least 5 runs); there are --rounds rounds with the sides interleaved
(cnnc, PyTorch, cnnc, ...), and the table shows each side's median over the
rounds. Throughput is images over the timed window; latency is the median
run. Ratios are speed-ups of cnnc over PyTorch: above 1, cnnc is faster.

--layers N then prints cnnc's N slowest layers in each mode: the same
code built with harness.c's PROFILE, which times every kernel call (a
layer's forward kernel, its .dx and .dweight, its parameters' updates,
fused layers under their chain's first), run for --seconds.

PyTorch uses OpenBLAS for dense layers when it can find it (make bench
unpacks Debian's libopenblas0-openmp into build/openblas; the script then
re-executes itself with LD_LIBRARY_PATH pointing there): Debian's torch is
linked with the reference BLAS, about 25 times slower on LeNet-5's layers.
--no-openblas keeps the reference BLAS.
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import accuracy  # noqa: E402  (read_idx)
import torch_model  # noqa: E402

ROOT = torch_model.ROOT
HARNESS = os.path.join(ROOT, "bench", "harness.c")
CFLAGS = "-std=c99 -O3 -march=native -fopenmp -D_XOPEN_SOURCE=700"  # compiler/run.c
VALUES = 1 << 24  # at most 64 MB of input samples


def model_path(m):
    return m if m.endswith(".cnn") else os.path.join(ROOT, "dsl-examples", m + ".cnn")


def resized(path, size, work):
    """The model with its input changed to size [C, H, W], in its own copy of
    the model's directory (for imports); the path itself when size is None."""
    if size is None:
        return path
    d = os.path.join(work, "src")
    shutil.copytree(os.path.dirname(path), d, dirs_exist_ok=True)
    new = os.path.join(d, os.path.basename(path))
    with open(new) as f:
        text = f.read()
    text, n = re.subn(r"(\binput\s+x\s*)\[[^\]]*\]",
                      lambda m: m.group(1) + "[" + ", ".join(map(str, size)) + "]",
                      text, count=1)
    if n != 1:
        raise SystemExit(f"speed.py: {path}: no `input x[...]` line to resize")
    with open(new, "w") as f:
        f.write(text)
    return new


def inputs(g, shape, classes, data, batch):
    """Inputs and labels for up to 16 batches (1,024 samples at batch 64;
    fewer when they would pass VALUES values): Fashion-MNIST for [1, 28, 28]
    inputs when the data is there, uniform noise otherwise. Returns
    (x, y, what)."""
    samples = batch * max(1, min(16, VALUES // (batch * _numel(shape))))
    lshape = torch_model.labels_shape(g)
    if tuple(shape) == (1, 28, 28) and lshape == () and \
            os.path.exists(os.path.join(data, "train-images-idx3-ubyte.gz")):
        x, y = accuracy.load_split(data, "train", shape)
        return x[:samples].contiguous(), y[:samples].contiguous(), "Fashion-MNIST"
    gen = torch.Generator().manual_seed(7)
    x = torch.rand((samples,) + tuple(shape), generator=gen) * 2 - 1
    y = torch.randint(0, classes, (samples,) + tuple(lshape), generator=gen)
    return x, y, "uniform noise"


class CSide:
    """The generated code of one model in one mode, built with harness.c."""

    def __init__(self, args, path, g, batch, train, work):
        self.work, self.batch = work, batch
        self.env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        name = g.name
        os.makedirs(work, exist_ok=True)
        c = os.path.join(work, name + ".c")
        # tiles for this processor, as the harness is built for it (-march=native)
        cmd = [args.cnnc, path, "-o", c, "--batch", str(batch), "--target", "native"]
        if not train:
            cmd.append("--infer-only")
        run(cmd)
        (_, ishape), = g.inputs()
        oshape = g.nodes[g.outputs[0][1]].shape
        self.exe = os.path.join(work, "harness")
        defs = {"MODEL": name, "MODEL_H": f'"{name}.h"',
                "IN_SIZE": _numel(ishape), "OUT_SIZE": _numel(oshape),
                "LABELS_SIZE": _numel(torch_model.labels_shape(g)),
                "CLASSES": oshape[0], "BATCH": batch, "TRAIN": int(train)}
        cc = (args.cc.split() + CFLAGS.split() + ["-Wall", "-Wextra"]
              + [f"-D{k}={v}" for k, v in defs.items()] + ["-I", work])
        self.compile = cc + ["-o", self.exe, HARNESS, c, "-lm"]
        run(self.compile)
        # --layers: the same code with every kernel call timed (harness.c)
        self.profiled = os.path.join(work, "harness-layers")
        hook = f"-D{name.upper()}_KERNEL(layer,call)=PROFILE_KERNEL(layer,call)"
        self.compile_profiled = cc + ["-DPROFILE", f'-DMODEL_C="{name}.c"', hook,
                                      "-o", self.profiled, HARNESS, "-lm"]

    def layers(self, seconds, xfile, yfile):
        """[(layer, seconds per run)], the slowest first."""
        run(self.compile_profiled)  # always: the .c was just generated
        out = subprocess.run([self.profiled, str(seconds), "3", xfile, yfile],
                             capture_output=True, text=True, check=True,
                             env=self.env).stdout
        return [(m.group(1), float(m.group(2)))
                for m in re.finditer(r"^layer=(\S+) seconds=(\S+)$", out, re.M)]

    def measure(self, seconds, xfile, yfile):
        out = subprocess.run([self.exe, str(seconds), "5", xfile, yfile],
                             capture_output=True, text=True, check=True,
                             env=self.env).stdout
        return {k: float(v) for k, v in re.findall(r"(\w+)=(\S+)", out)}


def _numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"speed.py: {' '.join(cmd)} failed:\n{p.stdout}{p.stderr}")


def time_loop(fn, seconds, min_runs=5):
    """Like harness.c: warm up for a tenth of `seconds` (at least 2 calls),
    then call fn until `seconds` have passed and min_runs calls were made,
    timing each call."""
    start = time.perf_counter()
    warm = 0
    while warm < 2 or time.perf_counter() - start < seconds / 10:
        fn()
        warm += 1
    times = []
    t0, c0 = time.perf_counter(), time.process_time()
    while True:
        a = time.perf_counter()
        fn()
        b = time.perf_counter()
        times.append(b - a)
        if b - t0 >= seconds and len(times) >= min_runs:
            break
    window, cpu = time.perf_counter() - t0, time.process_time() - c0
    times.sort()
    return {"runs": len(times), "seconds": window, "cpu": cpu,
            "median": times[len(times) // 2],
            "mean": sum(times) / len(times), "min": times[0]}


class TorchTrain:
    def __init__(self, g, train, x, y, batch):
        self.net = torch_model.Net(g, torch_model.init_weights(g, train["init"], 1)).train()
        self.opt = torch_model.optimizer(list(self.net.parameters()), train)
        self.x, self.y, self.batch, self.at = x, y, batch, 0

    def step(self):
        b = self.batch
        x, y = self.x[self.at:self.at + b], self.y[self.at:self.at + b]
        self.at = (self.at + b) % (len(self.x) // b * b)
        self.opt.zero_grad(set_to_none=True)
        loss = self.net.loss(self.net(x), y)
        loss.backward()
        self.opt.step()

    def measure(self, seconds):
        return time_loop(self.step, seconds)


class TorchInfer:
    def __init__(self, g, train, x, batch):
        self.net = torch_model.Net(g, torch_model.init_weights(g, train["init"], 1)).eval()
        self.x, self.batch, self.at = x, batch, 0
        with torch.no_grad():
            traced = torch.jit.trace(self.net, x[:batch])
            self.script = torch.jit.optimize_for_inference(torch.jit.freeze(traced))

    def measure(self, variant, seconds):
        f = self.net if variant == "eager" else self.script

        def once():
            b = self.batch
            xb = self.x[self.at:self.at + b]
            self.at = (self.at + b) % (len(self.x) // b * b)
            with torch.inference_mode():
                f(xb)
        return time_loop(once, seconds)


def fmt_rate(v):
    return f"{v:.0f}" if v >= 100 else f"{v:.3g}"


def fmt_time(s):
    return f"{s * 1e6:.1f} us" if s < 1e-3 else f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"


def bench_model(args, m, work):
    os.makedirs(work, exist_ok=True)
    path = resized(model_path(m), args.size, work)
    g = torch_model.graph(args.cnnc, path)
    train = torch_model.train_section(path)
    (_, shape), = g.inputs()
    classes = g.nodes[g.outputs[0][1]].shape[0]
    x, y, what = inputs(g, shape, classes, args.data,
                        max(args.train_batch, args.infer_batch, 1))
    xfile, yfile = os.path.join(work, "x.bin"), os.path.join(work, "y.bin")
    x.numpy().astype(np.float32).tofile(xfile)
    y.numpy().astype(np.int64).tofile(yfile)
    print(f"== {g.name}: input {list(shape)}, {what}; train section: batch "
          f"{train['batch']}, {train['optimizer'][0]} {train['optimizer'][1]}", flush=True)
    sides = {}
    if args.train_batch and g.loss is not None:
        sides["train"] = (CSide(args, path, g, args.train_batch, True,
                                os.path.join(work, "train")),
                          TorchTrain(g, train, x, y, args.train_batch))
    if args.infer_batch:
        sides["infer"] = (CSide(args, path, g, args.infer_batch, False,
                                os.path.join(work, "infer")),
                          TorchInfer(g, train, x, args.infer_batch))
    # (mode, side, measurement), interleaved within each round.
    plan = []
    if "train" in sides:
        c, t = sides["train"]
        plan += [("train", "cnnc", lambda c=c: c.measure(args.seconds, xfile, yfile)),
                 ("train", "torch eager", lambda t=t: t.measure(args.seconds))]
    if "infer" in sides:
        c, t = sides["infer"]
        plan += [("infer", "cnnc", lambda c=c: c.measure(args.seconds, xfile, yfile)),
                 ("infer", "torch eager", lambda t=t: t.measure("eager", args.seconds)),
                 ("infer", "torch script", lambda t=t: t.measure("script", args.seconds))]
    res = {}
    for r in range(args.rounds):
        for mode, side, f in plan:
            v = f()
            res.setdefault((mode, side), []).append(v)
            if mode == "train":
                b = args.train_batch
                print(f"  round {r + 1} training  {side:13} "
                      f"{fmt_rate(v['runs'] * b / v['seconds']):>9} images/s, "
                      f"{fmt_rate(v['runs'] * b / v['cpu']):>6} per CPU second  (step median "
                      f"{fmt_time(v['median'])}, {v['runs']:.0f} steps)", flush=True)
            else:
                print(f"  round {r + 1} inference {side:13} {fmt_time(v['median']):>10} "
                      f"median, {fmt_time(v['cpu'] / v['runs']):>10} CPU per run  (mean "
                      f"{fmt_time(v['mean'])}, min {fmt_time(v['min'])}, {v['runs']:.0f} "
                      f"runs)", flush=True)
    if args.layers:
        for mode in sides:
            top = sides[mode][0].layers(args.seconds, xfile, yfile)
            total = sum(t for _, t in top) or 1
            print(f"  cnnc's slowest layers, {'training step' if mode == 'train' else 'inference'}"
                  f" ({fmt_time(total)} in kernels per run, timed call by call):", flush=True)
            for layer, t in top[:args.layers]:
                print(f"    {layer:32} {fmt_time(t):>10} {t / total:6.1%}", flush=True)
    med = statistics.median
    rows = []
    if "train" in sides:
        b = args.train_batch
        wall = {k[1]: med(v["runs"] * b / v["seconds"] for v in vs)
                for k, vs in res.items() if k[0] == "train"}
        cpu = {k[1]: med(v["runs"] * b / v["cpu"] for v in vs)
               for k, vs in res.items() if k[0] == "train"}
        rows.append((g.name, f"training, batch {b} (images/s)", fmt_rate(wall["cnnc"]),
                     f"{fmt_rate(wall['torch eager'])} (eager)",
                     wall["cnnc"] / wall["torch eager"], cpu["cnnc"] / cpu["torch eager"]))
    if "infer" in sides:
        wall = {k[1]: med(v["median"] for v in vs)
                for k, vs in res.items() if k[0] == "infer"}
        cpu = {k[1]: med(v["cpu"] / v["runs"] for v in vs)
               for k, vs in res.items() if k[0] == "infer"}
        torch_sides = sorted((s for s in wall if s != "cnnc"), key=lambda s: wall[s])
        for i, s in enumerate(torch_sides):
            what = (f"inference, batch {args.infer_batch} (latency)" if i == 0
                    else "  against PyTorch's other mode")
            rows.append((g.name, what, fmt_time(wall["cnnc"]) if i == 0 else "",
                         f"{fmt_time(wall[s])} ({s[6:]})", wall[s] / wall["cnnc"],
                         cpu[s] / cpu["cnnc"]))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cnnc", default=os.path.join(ROOT, "build", "cnnc"))
    ap.add_argument("--model", action="append")
    ap.add_argument("--size", type=lambda s: tuple(int(v) for v in s.split(",")))
    ap.add_argument("--train-batch", type=int, default=64)
    ap.add_argument("--infer-batch", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cc", default=os.environ.get("CC", "cc"))
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--out", default=os.path.join(ROOT, "build", "bench"))
    ap.add_argument("--no-openblas", action="store_true")
    ap.add_argument("--layers", type=int, default=0)
    args = ap.parse_args()
    torch_model.use_openblas(not args.no_openblas)
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    print(f"speed.py: cnnc {args.cnnc}, cc '{args.cc} {CFLAGS}'; PyTorch "
          f"{torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"{torch_model.blas_in_use()}; {os.cpu_count()} CPUs; load average "
          + " ".join(f"{v:.2f}" for v in load0), flush=True)
    rows = []
    for m in args.model or ["lenet5"]:
        rows += bench_model(args, m, os.path.join(args.out, "speed",
                                                  os.path.basename(m).replace(".cnn", "")))
    load1 = os.getloadavg()
    print()
    print(f"{'model':8} {'measure':32} {'cnnc':>10} {'PyTorch':>20} {'speed-up':>9} "
          f"{'(CPU time)':>10}")
    for name, what, c, t, ratio, cratio in rows:
        print(f"{name:8} {what:32} {c:>10} {t:>20} {ratio:8.2f}x {cratio:9.2f}x")
    print(f"(medians of {args.rounds} rounds of {args.seconds:g} s; speed-up: cnnc "
          f"over PyTorch, above 1 cnnc is faster, from wall time (throughput, median "
          f"latency) and from CPU time (per image, per run); load average before "
          + " ".join(f"{v:.2f}" for v in load0) + ", after "
          + " ".join(f"{v:.2f}" for v in load1) + ")")


if __name__ == "__main__":
    main()
