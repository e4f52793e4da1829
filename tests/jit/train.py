#!/usr/bin/python3
"""cnnc train through the JIT against cnnc train through the C compiler:
the same small models trained for three epochs on a small synthetic IDX
data set must log the same losses, accuracies and learning rates and save
the same weights (within float32 tolerance: the two compilers may contract
multiply-adds differently). The models cover what jit_train.c does itself
rather than through the loop IR: the seeded initialization, every
learning-rate schedule, SGD with and without momentum (which has no
moments to checkpoint), Adam, batch norm's running statistics and dropout;
and an update of over 2^20 elements, which threads share out.
Then the JIT trains with no C compiler on PATH, and --resume continues
from its checkpoint.

usage: /usr/bin/python3 tests/jit/train.py [CNNC]"""
import csv
import os
import random
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "oracle"))
import st  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MODELS = {
    "step_momentum": """
model small {
  input x[1, 28, 28]
  output y = x -> conv(4, k=5) -> relu -> maxpool(2) -> flatten -> dense(10)
  loss cross_entropy(y)
  train {
    batch = 32
    epochs = 3
    optimizer sgd(lr=0.05, momentum=0.9, weight_decay=5e-4)
    schedule step(every=2, gamma=0.5)
  }
}
""",
    "plateau_plain_sgd": """
model small {
  input x[1, 28, 28]
  output y = x -> conv(4, k=3, s=2) -> bn -> relu -> flatten -> dropout(p=0.3) -> dense(10)
  loss cross_entropy(y)
  train {
    batch = 16
    epochs = 3
    optimizer sgd(lr=0.1)
    schedule plateau(factor=0.5, patience=0)
  }
}
""",
    # a parameter of over 2^20 elements: its update is a parallel loop
    "wide_momentum": """
model small {
  input x[1, 28, 28]
  output y = x -> flatten -> dense(1344) -> relu -> dense(10)
  loss cross_entropy(y)
  train {
    batch = 32
    epochs = 3
    optimizer sgd(lr=0.01, momentum=0.9, weight_decay=5e-4)
  }
}
""",
    "cosine_adam": """
model small {
  input x[1, 28, 28]
  output y = x -> conv(6, k=3, p=1) -> bn -> relu -> avgpool(2) -> flatten -> dense(16) -> tanh -> dense(10)
  loss cross_entropy(y)
  train {
    batch = 20
    epochs = 3
    optimizer adam(lr=0.003, weight_decay=1e-4)
    schedule cosine
  }
}
""",
}


def write_idx(directory, prefix, n, rng):
    """n 28x28 images whose class is the row band holding a bright bar."""
    images, labels = bytearray(), bytearray()
    for _ in range(n):
        k = rng.randrange(10)
        img = [rng.randrange(0, 90) for _ in range(28 * 28)]
        for r in range(2 + 2 * k, 4 + 2 * k):
            for c in range(4, 24):
                img[r * 28 + c] = rng.randrange(150, 256)
        images += bytes(img)
        labels.append(k)
    with open(os.path.join(directory, prefix + "-images-idx3-ubyte"), "wb") as f:
        f.write(struct.pack(">IIII", 0x803, n, 28, 28) + images)
    with open(os.path.join(directory, prefix + "-labels-idx1-ubyte"), "wb") as f:
        f.write(struct.pack(">II", 0x801, n) + labels)


def train(cnnc, model, out, data, path_env=None, extra=()):
    cmd = [cnnc, "train", model, "--data", data, "--quiet", "--save", out + ".safetensors",
           "--log", out + ".csv", *extra]
    env = dict(os.environ)
    if path_env is not None:
        env["PATH"] = path_env
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)}: exit {r.returncode}\n{r.stderr[-3000:]}")
    with open(out + ".csv") as f:
        rows = list(csv.DictReader(f))
    return rows, st.read(out + ".safetensors")


def close(a, b, rel):
    return abs(a - b) <= rel * max(1.0, abs(a), abs(b))


def compare(name, c, j, n_train, n_test):
    (rows_c, w_c), (rows_j, w_j) = c, j
    problems = []
    if len(rows_c) != len(rows_j):
        problems.append(f"{len(rows_c)} epochs logged by the C path, {len(rows_j)} by the JIT")
    for rc, rj in zip(rows_c, rows_j):
        e = rc["epoch"]
        if not close(float(rc["loss"]), float(rj["loss"]), 1e-3):
            problems.append(f"epoch {e}: loss C {rc['loss']}, JIT {rj['loss']}")
        if not close(float(rc["lr"]), float(rj["lr"]), 1e-6):
            problems.append(f"epoch {e}: lr C {rc['lr']}, JIT {rj['lr']}")
        for col, n in (("train_accuracy", n_train), ("test_accuracy", n_test)):
            if abs(float(rc[col]) - float(rj[col])) * n > 2.5:
                problems.append(f"epoch {e}: {col} C {rc[col]}, JIT {rj[col]}")
    if sorted(w_c) != sorted(w_j):
        problems.append(f"tensors differ: {sorted(set(w_c) ^ set(w_j))}")
    worst = 0.0
    for k in w_c:
        if k not in w_j or w_c[k].dtype != w_j[k].dtype or w_c[k].shape != w_j[k].shape:
            continue
        a, b = w_c[k].double(), w_j[k].double()
        scale = max(1.0, float(a.abs().max()) if a.numel() else 1.0)
        err = float((a - b).abs().max()) / scale if a.numel() else 0.0
        worst = max(worst, err)
        if err > 1e-3:
            problems.append(f"{k}: max difference {err:.3g} of its scale")
    return problems, worst


def main(argv):
    cnnc = os.path.abspath(argv[1] if len(argv) > 1 else os.path.join(ROOT, "build", "cnnc"))
    tmp = tempfile.mkdtemp(prefix="cnnc-jit-train-")
    data = os.path.join(tmp, "data")
    os.makedirs(data)
    rng = random.Random(7)
    n_train, n_test = 320, 100
    write_idx(data, "train", n_train, rng)
    write_idx(data, "t10k", n_test, rng)
    passed = failed = 0

    def report(name, problems, detail=""):
        nonlocal passed, failed
        if problems:
            failed += 1
            print(f"FAIL {name}:\n  " + "\n  ".join(problems[:12]))
        else:
            passed += 1
            print(f"ok   {name}{detail}")
        sys.stdout.flush()

    for name, text in MODELS.items():
        model = os.path.join(tmp, name + ".cnn")
        with open(model, "w") as f:
            f.write(text)
        try:
            c = train(cnnc, model, os.path.join(tmp, name + ".c"), data, extra=["--cc", "cc -O2"])
            j = train(cnnc, model, os.path.join(tmp, name + ".jit"), data, extra=["--jit"])
        except (AssertionError, subprocess.TimeoutExpired) as e:
            report(name, [str(e)])
            continue
        problems, worst = compare(name, c, j, n_train, n_test)
        losses = ", ".join(r["loss"] for r in j[0])
        report(name, problems, f" (losses {losses}; weights within {worst:.2g})")

    # no C compiler anywhere on PATH: the JIT needs none
    model = os.path.join(tmp, "step_momentum.cnn")
    empty = os.path.join(tmp, "empty-bin")
    os.makedirs(empty)
    try:
        rows, _ = train(cnnc, model, os.path.join(tmp, "nocc"), data, path_env=empty,
                        extra=["--epochs", "1"])
        report("no C compiler on PATH", [] if len(rows) == 1 else ["no epoch logged"])
        # and --resume continues it: epochs 2 and 3, as the uninterrupted run
        rows, _ = train(cnnc, model, os.path.join(tmp, "nocc"), data, path_env=empty,
                        extra=["--resume", os.path.join(tmp, "nocc.safetensors")])
        full, _ = train(cnnc, model, os.path.join(tmp, "full"), data, path_env=empty)
        problems = []
        if [r["epoch"] for r in rows] != ["1", "2", "3"]:
            problems.append(f"epochs logged after --resume: {[r['epoch'] for r in rows]}")
        else:
            for a, b in zip(rows, full):
                if not close(float(a["loss"]), float(b["loss"]), 1e-5) or a["lr"] != b["lr"]:
                    problems.append(f"epoch {a['epoch']}: resumed loss {a['loss']} lr {a['lr']}, "
                                    f"uninterrupted {b['loss']} lr {b['lr']}")
        report("--resume through the JIT", problems)
    except (AssertionError, subprocess.TimeoutExpired) as e:
        report("no C compiler on PATH", [str(e)])

    print(f"jit train: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
