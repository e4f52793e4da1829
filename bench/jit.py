#!/usr/bin/python3
"""The JIT against the C path of `cnnc run`, on one machine in one run.

usage: /usr/bin/python3 bench/jit.py [--cnnc build/cnnc] [--reps 3]
                                     [--models lenet5,resnet18,resnet50]
                                     [--train-models lenet5]

For each model (dsl-examples/NAME.cnn at its published input size, batch 1,
random He-uniform weights):

  first result  the time from invoking `cnnc run` on one sample to its exit,
                output written: through the JIT (`--jit`: parse, lower,
                build and optimize the LLVM IR, make machine code, run),
                and through the C path with an empty cache (a fresh
                XDG_CACHE_HOME: generate C, compile, run), the cold start
                a researcher who just edited the model sees;
  per sample    the steady-state cost of one forward pass of the compiled
                code, (time for 2N samples - time for N samples) / N, which
                cancels start-up, compilation and file reading; the C
                programs come from the cache, compiled once.

  training      the steady-state cost of an epoch of `cnnc train` (LeNet-5
                by default, --train-models), on a synthetic IDX set of
                TRAIN_IMAGES random images: (time for 2 epochs - time for 1)
                as images per second, the training step with the model's
                train section plus the per-epoch test pass.

The C path is timed with two compilers: `--cc "cc -O2"`, the reference the
JIT is held to, and `--cc "cc -O3 -march=native"`, the flags run.c uses
when no --cc is given.

Each measurement is repeated --reps times, the sides interleaved, and the
median kept. Both wall time and CPU time (user + system of cnnc and of
everything it starts) are reported: these machines are shared and noisy,
and CPU time suffers less from it. Ratios are JIT / C: below 1 the JIT is
faster.
"""
import argparse
import array
import json
import os
import random
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = {"lenet5": 2000, "resnet18": 2, "resnet50": 1}  # N, per model
# The C path's compilers, as --cc commands (run.c adds no flags to them).
CC = {"cc -O2": "cc -O2", "cc -O3 native": "cc -O3 -march=native"}
PATHS = ["jit"] + list(CC)


def write_safetensors(path, tensors):
    """tensors: {name: (dtype, shape, array)}, written as safetensors."""
    header, offset = {}, 0
    for name in sorted(tensors):
        dtype, shape, data = tensors[name]
        size = len(data) * data.itemsize
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for name in sorted(tensors):
            tensors[name][2].tofile(f)


def noise(n, bound, rng):
    """n floats in [-bound, bound]: a random block, repeated (fast)."""
    block = array.array("f", (rng.uniform(-bound, bound) for _ in range(4096)))
    out = block * (n // 4096 + 1)
    del out[n:]
    return out


def weights(cnnc, model, path, rng):
    """Every parameter and buffer of the model: He-uniform weights, zero
    biases, batch norm as the identity, so activations stay near 1."""
    lines = subprocess.run([cnnc, "check", "--params", model], check=True,
                           capture_output=True, text=True).stdout.splitlines()
    tensors = {}
    for line in lines:
        name, dims, _ = line.split("\t")
        shape = [int(d) for d in dims.split(",")] if dims else []
        n = 1
        for d in shape:
            n *= d
        if name.endswith("num_batches_tracked"):
            tensors[name] = ("I64", shape, array.array("q", [0] * n))
        elif name.endswith("running_var") or (
                name.endswith("weight") and len(shape) == 1):
            tensors[name] = ("F32", shape, array.array("f", [1.0]) * n)
        elif len(shape) > 1:
            fan_in = n // shape[0]
            tensors[name] = ("F32", shape, noise(n, (6.0 / fan_in) ** 0.5, rng))
        else:
            tensors[name] = ("F32", shape, array.array("f", [0.0]) * n)
    write_safetensors(path, tensors)


def inputs(cnnc, model, path, count, rng):
    """count samples of every float input of the model, in [-1, 1]."""
    graph = subprocess.run([cnnc, "check", "--dump-after=elaborate", model],
                           check=True, capture_output=True,
                           text=True).stdout.splitlines()
    tensors = {}
    for line in graph:
        if " = input " in line and ": f32 [" in line:
            name = line.split(" = input ")[1].split()[0]
            dims = [int(d) for d in line.split("[")[1].split("]")[0].split(",")]
            n = count
            for d in dims:
                n *= d
            tensors[name] = ("F32", [count] + dims, noise(n, 1.0, rng))
    write_safetensors(path, tensors)


def timed(argv, env=None):
    """(wall seconds, CPU seconds of the process and its children, stderr)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run(argv, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        sys.exit("bench/jit.py: %s failed:\n%s" % (" ".join(argv), r.stderr))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, r.stderr


def run_argv(cnnc, model, w, x, out, path):
    argv = [cnnc, "run", model, "--weights", w, "--input", x, "--output", out,
            "--batch", "1"]
    return argv + (["--jit", "-v"] if path == "jit" else ["--cc", CC[path]])


def bench_model(cnnc, name, reps, tmp, rng):
    model = os.path.join(ROOT, "dsl-examples", name + ".cnn")
    w = os.path.join(tmp, name + ".w.safetensors")
    x1 = os.path.join(tmp, name + ".x1.safetensors")
    xn = os.path.join(tmp, name + ".xn.safetensors")
    x2n = os.path.join(tmp, name + ".x2n.safetensors")
    out = os.path.join(tmp, name + ".out.safetensors")
    n = SAMPLES.get(name, 2)
    weights(cnnc, model, w, rng)
    inputs(cnnc, model, x1, 1, rng)
    inputs(cnnc, model, xn, n, rng)
    inputs(cnnc, model, x2n, 2 * n, rng)

    first = {path: [] for path in PATHS}
    phases = []
    for _ in range(reps):
        wall, cpu, err = timed(run_argv(cnnc, model, w, x1, out, "jit"))
        first["jit"].append((wall, cpu))
        for line in err.splitlines():
            if line.startswith("cnnc: jit: "):
                phases.append(line[len("cnnc: jit: "):])
        for path in CC:
            cache = tempfile.mkdtemp(dir=tmp)  # empty: a cold C path
            env = dict(os.environ, XDG_CACHE_HOME=cache)
            first[path].append(
                timed(run_argv(cnnc, model, w, x1, out, path), env)[:2])
            shutil.rmtree(cache)

    cache = tempfile.mkdtemp(dir=tmp)  # the C programs, compiled once
    env = dict(os.environ, XDG_CACHE_HOME=cache)
    for path in CC:
        timed(run_argv(cnnc, model, w, x1, out, path), env)
    per = {path: [] for path in PATHS}
    for _ in range(reps):
        for path in PATHS:
            a = timed(run_argv(cnnc, model, w, xn, out, path), env)
            b = timed(run_argv(cnnc, model, w, x2n, out, path), env)
            per[path].append(((b[0] - a[0]) / n, (b[1] - a[1]) / n))
    shutil.rmtree(cache)
    return first, per, phases


TRAIN_IMAGES, TEST_IMAGES = 4096, 512


def write_idx(directory, prefix, n, rng):
    """n random 28x28 images and labels, as IDX files."""
    images = bytes(rng.randrange(256) for _ in range(n * 28 * 28))
    labels = bytes(rng.randrange(10) for _ in range(n))
    with open(os.path.join(directory, prefix + "-images-idx3-ubyte"), "wb") as f:
        f.write(struct.pack(">IIII", 0x803, n, 28, 28) + images)
    with open(os.path.join(directory, prefix + "-labels-idx1-ubyte"), "wb") as f:
        f.write(struct.pack(">II", 0x801, n) + labels)


def train_argv(cnnc, model, data, tmp, epochs, path):
    argv = [cnnc, "train", model, "--data", data, "--epochs", str(epochs),
            "--quiet", "--save", os.path.join(tmp, "t.safetensors"),
            "--log", os.path.join(tmp, "t.csv")]
    return argv + (["--jit"] if path == "jit" else ["--cc", CC[path]])


def bench_train(cnnc, name, reps, tmp, rng):
    """{path: [(wall, CPU) images/s]} of an epoch of cnnc train."""
    model = os.path.join(ROOT, "dsl-examples", name + ".cnn")
    data = os.path.join(tmp, "idx")
    os.makedirs(data, exist_ok=True)
    write_idx(data, "train", TRAIN_IMAGES, rng)
    write_idx(data, "t10k", TEST_IMAGES, rng)
    cache = tempfile.mkdtemp(dir=tmp)  # the C programs, compiled once
    env = dict(os.environ, XDG_CACHE_HOME=cache)
    for path in CC:
        timed(train_argv(cnnc, model, data, tmp, 1, path), env)
    speed = {path: [] for path in PATHS}
    for _ in range(reps):
        for path in PATHS:
            a = timed(train_argv(cnnc, model, data, tmp, 1, path), env)
            b = timed(train_argv(cnnc, model, data, tmp, 2, path), env)
            speed[path].append((TRAIN_IMAGES / (b[0] - a[0]),
                                TRAIN_IMAGES / (b[1] - a[1])))
    shutil.rmtree(cache)
    return speed


def table(rows, which, fmt, scale):
    """One row per model: each path's median wall (CPU), then the ratios."""
    print("%-9s" % "model" + "".join("%19s" % p for p in PATHS) +
          "".join("%22s" % ("JIT / " + p) for p in CC))
    for row in rows:
        m = {p: [scale * statistics.median(v) for v in zip(*row[which][p])]
             for p in PATHS}
        line = "%-9s" % row[0] + "".join(fmt % tuple(m[p]) for p in PATHS)
        for p in CC:
            line += "         %5.2f (%5.2f)" % (m["jit"][0] / m[p][0],
                                           m["jit"][1] / m[p][1])
        print(line)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cnnc", default=os.path.join(ROOT, "build", "cnnc"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--models", default="lenet5,resnet18,resnet50")
    ap.add_argument("--train-models", default="lenet5")
    args = ap.parse_args()
    rng = random.Random(1)
    tmp = tempfile.mkdtemp(prefix="cnnc-bench-jit-")
    print("cnnc: %s; %d CPUs; load average before: %.1f" %
          (args.cnnc, os.cpu_count(), os.getloadavg()[0]))
    rows = []
    try:
        for name in args.models.split(","):
            first, per, phases = bench_model(args.cnnc, name, args.reps, tmp,
                                             rng)
            rows.append((name, first, per))
            print("%s: JIT phases: %s" % (name, "; ".join(phases)))
        trained = [(name, None, bench_train(args.cnnc, name, args.reps, tmp, rng))
                   for name in args.train_models.split(",") if name]
    finally:
        shutil.rmtree(tmp)
    print("load average after: %.1f" % os.getloadavg()[0])
    print()
    print("time to the first result (1 sample), median of %d: wall (CPU) s"
          % args.reps)
    table(rows, 1, "%11.2f (%5.2f)", 1.0)
    print()
    print("steady state, one forward pass (per sample), median of %d: wall "
          "(CPU) ms" % args.reps)
    table(rows, 2, "%11.1f (%5.1f)", 1e3)
    if trained:
        print()
        print("training, an epoch of %d images and a test pass of %d, median "
              "of %d: wall (CPU) images/s; ratios JIT / C above 1: the JIT is "
              "faster" % (TRAIN_IMAGES, TEST_IMAGES, args.reps))
        table(trained, 2, "%11.0f (%5.0f)", 1.0)


if __name__ == "__main__":
    main()
