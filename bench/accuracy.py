#!/usr/bin/python3
"""Test accuracy that cnnc and PyTorch reach with the same training recipe.

usage: /usr/bin/python3 bench/accuracy.py [--cnnc build/cnnc]
           [--model dsl-examples/lenet5.cnn] [--epochs 10] [--seed S]
           [--data /usr/share/datasets/fashion-mnist] [--out build/bench]
           [--threads 1] [--only cnnc|torch] [--cc CMD] [--no-openblas]

Both sides train the model of --model on an IDX data set (Fashion-MNIST by
default) with the model's train section: batch, optimizer (SGD with
momentum and weight decay, or Adam), learning rate and schedule, applied
after every epoch; the same data scaling (pixels x / 127.5 - 1, i.e.
[-1, 1]); the same loop (the training set shuffled every epoch, batches in
that order, the last one smaller when the batch does not divide the set;
after each epoch the accuracy on the first 10,000 training images and on
the whole test set, in evaluation mode); and the same seed policy: the seed
(--seed, by default the train section's) seeds the initialization and
every epoch's shuffle. Each side draws from its own generator (cnnc's
splitmix64 streams, torch.Generator), so equal seeds give the same
distributions, not the same weights or the same order: the comparison is
between two runs of one recipe. For LeNet-5, PyTorch with seeds 0 and 1
differs by up to 1.1 points in the first epochs and by 0.01 after 10
(docs/performance.md).

  cnnc     `cnnc train MODEL --epochs E --seed S --data DIR --log OUT/cnnc.csv`:
           the generated training code, through cnnc's default back end
           (the LLVM JIT when cnnc is built with it), or compiled as C by
           --cc CMD (e.g. --cc "cc -O3 -march=native", what `cnnc run`
           uses without the JIT).
  PyTorch  tests/oracle/graph_torch.py's model of cnnc's graph (bench/
           torch_model.py), initialized by cnnc's rules (U(+-1/sqrt(fan_in)),
           PyTorch's layer defaults) and trained with torch.optim and
           torch.optim.lr_scheduler, torch.set_num_threads(--threads);
           OpenBLAS for its dense layers when available (make bench unpacks
           it). Its log goes to OUT/torch.csv, with cnnc's columns.

The two run one after the other; each prints a line per epoch, and the end
is a table of both, epoch by epoch: test accuracy and wall time.
"""
import argparse
import csv
import gzip
import os
import subprocess
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_model  # noqa: E402

ROOT = torch_model.ROOT


def read_idx(path):
    """An IDX file (MNIST's format, plain or gzip) as a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(data, prefix, shape):
    def find(name):
        p = os.path.join(data, name)
        return p + ".gz" if os.path.exists(p + ".gz") else p
    x = read_idx(find(f"{prefix}-images-idx3-ubyte"))
    y = read_idx(find(f"{prefix}-labels-idx1-ubyte"))
    # As runtime/train.c: x / 255, then (x - 0.5) / 0.5.
    x = (x.astype(np.float32) / np.float32(255.0) - 0.5) / 0.5
    return (torch.from_numpy(x.astype(np.float32)).reshape(len(x), *shape),
            torch.from_numpy(y.astype(np.int64)))


def accuracy(net, x, y, batch):
    right = 0
    with torch.no_grad():
        for at in range(0, len(x), batch):
            right += (net(x[at:at + batch]).argmax(1) == y[at:at + batch]).sum().item()
    return right / len(x)


def train_torch(args, g, train, seed, out_csv):
    torch.set_num_threads(args.threads)
    shape = g.inputs()[0][1]
    xtr, ytr = load_split(args.data, "train", shape)
    xte, yte = load_split(args.data, "t10k", shape)
    net = torch_model.Net(g, torch_model.init_weights(g, train["init"], seed))
    params = list(net.parameters())
    frozen = {p.name for p in g.params if p.frozen}
    if frozen:
        raise SystemExit("accuracy.py: frozen parameters are not supported yet")
    opt = torch_model.optimizer(params, train)
    sched = torch_model.scheduler(opt, train, args.epochs)
    batch = train["batch"]
    gen = torch.Generator()
    rows = []
    print(f"torch: training {g.name} on {len(xtr)} images ({len(xte)} test), "
          f"batch {batch}, {args.epochs} epochs, {torch.get_num_threads()} thread(s), "
          f"{torch_model.blas_in_use()}", file=sys.stderr, flush=True)
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        net.train()
        gen.manual_seed(seed * 1000003 + epoch)
        order = torch.randperm(len(xtr), generator=gen)
        loss_sum, steps = 0.0, 0
        for at in range(0, len(xtr), batch):
            idx = order[at:at + batch]
            opt.zero_grad(set_to_none=True)
            loss = net.loss(net(xtr[idx]), ytr[idx])
            loss.backward()
            opt.step()
            loss_sum += loss.item()
            steps += 1
            if steps % (len(xtr) // batch // 10 or 1) == 0:
                rate = (at + len(idx)) / (time.perf_counter() - t0)
                print(f"  epoch {epoch + 1}/{args.epochs}: {at + len(idx)}/{len(xtr)} "
                      f"images, loss {loss_sum / steps:.4f}, {rate:.0f} img/s",
                      file=sys.stderr, flush=True)
        net.eval()
        train_acc = accuracy(net, xtr[:10000], ytr[:10000], batch)
        test_acc = accuracy(net, xte, yte, batch)
        lr = opt.param_groups[0]["lr"]
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            sched.step(1 - test_acc)
        elif sched:
            sched.step()
        secs = time.perf_counter() - t0
        print(f"torch: epoch {epoch + 1}/{args.epochs}: loss {loss_sum / steps:.4f}, "
              f"train accuracy {100 * train_acc:.2f}%, test accuracy "
              f"{100 * test_acc:.2f}%, lr {lr:g}, {secs:.1f} s", file=sys.stderr, flush=True)
        rows.append({"epoch": epoch + 1, "loss": loss_sum / steps,
                     "train_accuracy": train_acc, "test_accuracy": test_acc,
                     "lr": lr, "seconds": secs})
    with open(out_csv, "w") as f:
        f.write("epoch,loss,train_accuracy,test_accuracy,lr,seconds\n")
        for r in rows:
            f.write(f"{r['epoch']},{r['loss']:.6f},{r['train_accuracy']:.6f},"
                    f"{r['test_accuracy']:.6f},{r['lr']:g},{r['seconds']:.3f}\n")
    return rows


def train_cnnc(args, seed, out_csv):
    cmd = [args.cnnc, "train", args.model, "--epochs", str(args.epochs),
           "--seed", str(seed), "--data", args.data, "--log", out_csv,
           "--save", os.path.join(args.out, "cnnc.safetensors")]
    if args.cc:
        cmd += ["--cc", args.cc]
    backend = "C, compiled by " + args.cc if args.cc else "cnnc's default (the JIT if built in)"
    print(f"cnnc: {' '.join(cmd)}\ncnnc: back end: {backend}", file=sys.stderr, flush=True)
    if subprocess.run(cmd).returncode != 0:
        raise SystemExit("accuracy.py: cnnc train failed")
    with open(out_csv) as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cnnc", default=os.path.join(ROOT, "build", "cnnc"))
    ap.add_argument("--model", default=os.path.join(ROOT, "dsl-examples", "lenet5.cnn"))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--out", default=os.path.join(ROOT, "build", "bench"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", choices=["cnnc", "torch"])
    ap.add_argument("--cc", help="cnnc train's --cc (default: cnnc's back end)")
    ap.add_argument("--no-openblas", action="store_true")
    args = ap.parse_args()
    torch_model.use_openblas(not args.no_openblas)
    os.makedirs(args.out, exist_ok=True)
    train = torch_model.train_section(args.model)
    seed = train["seed"] if args.seed is None else args.seed
    g = torch_model.graph(args.cnnc, args.model)
    print(f"accuracy.py: {g.name}, {args.epochs} epochs, seed {seed}, batch "
          f"{train['batch']}, optimizer {train['optimizer']}, schedule "
          f"{train['schedule']}, init {train['init']}; load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    res, wall = {}, {}
    for side in ("cnnc", "torch"):
        if args.only and args.only != side:
            continue
        t0 = time.perf_counter()
        out_csv = os.path.join(args.out, side + ".csv")
        res[side] = (train_cnnc(args, seed, out_csv) if side == "cnnc"
                     else train_torch(args, g, train, seed, out_csv))
        wall[side] = time.perf_counter() - t0
    sides = list(res)
    print()
    print(f"{g.name}: test accuracy after each epoch (seed {seed}, "
          f"{args.threads} thread(s)); load average now "
          + " ".join(f"{v:.2f}" for v in os.getloadavg()))
    head = "epoch" + "".join(f"  {s + ' acc':>10}  {s + ' s':>8}" for s in sides)
    print(head)
    for e in range(args.epochs):
        line = f"{e + 1:5d}"
        for s in sides:
            r = res[s][e] if e < len(res[s]) else None
            line += (f"  {100 * r['test_accuracy']:9.2f}%  {r['seconds']:8.1f}" if r
                     else f"  {'-':>10}  {'-':>8}")
        print(line)
    for s in sides:
        print(f"{s}: final test accuracy {100 * res[s][-1]['test_accuracy']:.2f}%, "
              f"wall time {wall[s]:.0f} s (log {os.path.join(args.out, s + '.csv')})")
    if len(sides) == 2:
        d = 100 * (res["cnnc"][-1]["test_accuracy"] - res["torch"][-1]["test_accuracy"])
        print(f"difference cnnc - torch: {d:+.2f} points")


if __name__ == "__main__":
    main()
