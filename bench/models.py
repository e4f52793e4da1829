#!/usr/bin/python3
"""The classic models at their published input size: cnnc's generated code
against PyTorch, and the arithmetic rate each reaches against this core's
peak, in one run.

usage: /usr/bin/python3 bench/models.py [--cnnc build/cnnc] [--model M]... [--threads 1]
           [--seconds 2] [--rounds 1] [--no-train] [--layers 5] [--out build/bench]

Measures, through bench/speed.py (its harness, its PyTorch side, its
interleaving and medians; see its docstring):

  inference  batch-1 latency of resnet18, resnet50, vgg16 and alexnet
             (dsl-examples/, 224x224; --model to choose), cnnc's
             NAME_forward against PyTorch's faster mode (eager or
             TorchScript);
  training   one training step of resnet18 at batch 8 (--no-train skips
             it), NAME_train_step against PyTorch eager.

prints cnnc's --layers slowest layers of each (speed.py --layers: every
kernel call timed), and adds, for each, the rate in GFLOP/s: 2 x the multiply-adds `cnnc check`
counts (convolutions and dense layers; a training step counts three times
the forward pass: forward, dx and dw), over the CPU time of a run (the
median of the rounds; on a shared machine wall time mostly measures the
load); and the peak: a
microbenchmark of independent fused multiply-adds on its widest vectors
(bench/peak.c, cc -O3 -march=native -ffp-contract=fast) on one core. The
generated code's multiply-adds are fused where cnnc's contraction pass
fused them (madd(): fmaf under -march=native), so that peak is its
ceiling too. The last column is PyTorch's share of the same peak, from its
CPU time: what a ratio against PyTorch asks of cnnc in terms of the peak
(a goal of 1.25x PyTorch's speed needs 1.25 times PyTorch's share).
"""
import argparse
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import speed  # noqa: E402

MODELS = ["resnet18", "resnet50", "vgg16", "alexnet"]
UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def peak(cc, out):
    exe = os.path.join(out, "peak")
    # 512-bit vectors where the processor has them (peak.c); no effect on AVX2
    subprocess.run(cc.split() + ["-std=c99", "-O3", "-march=native",
                                 "-ffp-contract=fast", "-mprefer-vector-width=512",
                                 "-o", exe, os.path.join(HERE, "peak.c")], check=True)
    line = subprocess.run([exe], capture_output=True, text=True, check=True).stdout
    return float(line.split()[0])


def macs(cnnc, name):
    """The multiply-adds of one sample: `cnnc check`'s "MACs per sample"."""
    out = subprocess.run([cnnc, "check", speed.model_path(name)], capture_output=True,
                         text=True, check=True).stdout
    m = re.search(r"MACs per sample: ([\d,]+)", out)
    return float(m.group(1).replace(",", "")) if m else None


def seconds(text):
    v, unit = text.split()[:2]
    return float(v) * UNITS[unit]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cnnc", default=os.path.join(ROOT, "build", "cnnc"))
    ap.add_argument("--model", action="append")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--cc", default=os.environ.get("CC", "cc"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(ROOT, "build", "bench"))
    args = ap.parse_args()
    speed.torch_model.use_openblas(True)  # re-executes once, before anything
    speed.torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    top = peak(args.cc, args.out)
    print(f"models.py: one core's peak {top:.1f} GFLOP/s (fused multiply-adds); "
          f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    plans = [(m, 0, 1) for m in args.model or MODELS]
    if not args.no_train:
        plans.append(("resnet18", 8, 0))
    # cnnc's CPU time per run, as speed.py measures it: the machines these
    # run on are shared, and wall time then says more about the load
    measured = []
    plain = speed.CSide.measure

    def measure(self, *a, **k):
        v = plain(self, *a, **k)
        measured.append(v["cpu"] / v["runs"])
        return v

    speed.CSide.measure = measure
    rows = []
    for m, tb, ib in plans:
        measured.clear()
        sargs = argparse.Namespace(
            cnnc=args.cnnc, size=None, train_batch=tb, infer_batch=ib,
            seconds=args.seconds, rounds=args.rounds, threads=args.threads, cc=args.cc,
            data="/usr/share/datasets/fashion-mnist", out=args.out, no_openblas=False,
            layers=args.layers)
        work = os.path.join(args.out, "models", f"{m}-{'train' if tb else 'infer'}")
        mac = macs(args.cnnc, m)
        for name, what, c, t, ratio, cratio in speed.bench_model(sargs, m, work):
            if not c:
                continue
            cpu = sorted(measured)[len(measured) // 2]  # per run: step or pass
            if tb:
                rate = float(c.replace(",", ""))  # images/s
                flops = 3 * 2 * mac * tb / cpu if mac else None
                shown = f"{tb / rate * 1e3:.0f} ms/step"
            else:
                flops = 2 * mac / cpu if mac else None
                shown = c
            rows.append((name, what, shown, t, ratio, cratio, flops))
    print()
    print(f"{'model':9} {'measure':32} {'cnnc':>12} {'PyTorch':>22} {'speed-up':>9} "
          f"{'(CPU)':>7} {'GFLOP/s':>8} {'of peak':>8} {'PyTorch':>8}")
    for name, what, c, t, ratio, cratio, flops in rows:
        # PyTorch's rate from its CPU time: cnnc's times the CPU-time ratio
        g = (f"{flops * 1e-9:8.1f} {flops * 1e-9 / top:8.0%} "
             f"{flops / cratio * 1e-9 / top:8.0%}") if flops and cratio else ""
        print(f"{name:9} {what:32} {c:>12} {t:>22} {ratio:8.2f}x {cratio:6.2f}x {g}")
    print(f"(speed-up: cnnc over PyTorch from wall and CPU time, above 1 cnnc is "
          f"faster; GFLOP/s and of peak from cnnc's CPU time per run, PyTorch's "
          f"share of the peak from its own; load average after "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())})")


if __name__ == "__main__":
    main()
