"""cnnc run with bad files: each must fail with exit status 1 and a message
naming the file and the tensor, never crash or write an output.

usage: /usr/bin/python3 tests/oracle/run_errors.py [CNNC]"""
import os
import subprocess
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CNNC = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "cnnc")
MODEL = os.path.join(ROOT, "dsl-examples", "lenet5.cnn")

SHAPES = {
    "c1.weight": (6, 1, 5, 5), "c1.bias": (6,),
    "c3.weight": (16, 6, 5, 5), "c3.bias": (16,),
    "f5.weight": (120, 400), "f5.bias": (120,),
    "f6.weight": (84, 120), "f6.bias": (84,),
    "f7.weight": (10, 84), "f7.bias": (10,),
}


def weights(**change):
    w = {k: torch.randn(*s) for k, s in SHAPES.items()}
    for k, v in change.items():
        k = k.replace("__", ".")
        if v is None:
            del w[k]
        else:
            w[k] = v
    return w


def main():
    torch.manual_seed(0)
    tmp = tempfile.mkdtemp()
    good_w = os.path.join(tmp, "w.safetensors")
    good_x = os.path.join(tmp, "x.safetensors")
    st.write(good_w, weights())
    st.write(good_x, {"x": torch.randn(2, 1, 28, 28)})

    def case(name, wfile, xfile, want):
        out = os.path.join(tmp, "out.safetensors")
        if os.path.exists(out):
            os.remove(out)
        r = subprocess.run([CNNC, "run", MODEL, "--weights", wfile, "--input", xfile,
                            "--output", out], capture_output=True, text=True)
        ok = r.returncode == 1 and all(w in r.stderr for w in want) \
            and not os.path.exists(out)
        print(("ok   " if ok else "FAIL ") + name)
        if not ok:
            print("    exit %d, wanted 1 and %r in: %s" % (r.returncode, want, r.stderr.strip()))
        return ok

    def file_with(tensors, name):
        path = os.path.join(tmp, name)
        st.write(path, tensors)
        return path

    results = []
    # a good run first: the rest must fail only for the reason they test
    r = subprocess.run([CNNC, "run", MODEL, "--weights", good_w, "--input", good_x,
                        "--output", os.path.join(tmp, "o.safetensors")],
                       capture_output=True, text=True)
    results.append(r.returncode == 0)
    print(("ok   " if r.returncode == 0 else "FAIL ") + "good files run" +
          ("" if r.returncode == 0 else ": " + r.stderr))
    results.append(case("missing weight", file_with(weights(f7__bias=None), "a"), good_x,
                        ["f7.bias"]))
    results.append(case("unexpected weight",
                        file_with(weights(extra=torch.zeros(3)), "b"), good_x, ["extra"]))
    results.append(case("mis-shaped weight",
                        file_with(weights(c1__weight=torch.zeros(6, 1, 3, 3)), "c"), good_x,
                        ["c1.weight", "[6, 1, 3, 3]", "[6, 1, 5, 5]"]))
    results.append(case("weight of the wrong dtype",
                        file_with(weights(c1__bias=torch.zeros(6, dtype=torch.float64)), "d"),
                        good_x, ["c1.bias"]))
    truncated = os.path.join(tmp, "t.safetensors")
    with open(good_w, "rb") as f:
        data = f.read()
    with open(truncated, "wb") as f:
        f.write(data[: len(data) // 2])
    results.append(case("truncated weights", truncated, good_x, ["t.safetensors"]))
    lying = os.path.join(tmp, "l.safetensors")
    with open(lying, "wb") as f:
        f.write((10 ** 12).to_bytes(8, "little") + data[8:])
    results.append(case("header length beyond the file", lying, good_x, ["l.safetensors"]))
    results.append(case("missing weights file", os.path.join(tmp, "nope"), good_x, ["nope"]))
    results.append(case("input under another name", good_w,
                        file_with({"image": torch.zeros(2, 1, 28, 28)}, "e"), ["'x'"]))
    results.append(case("mis-shaped input", good_w,
                        file_with({"x": torch.zeros(2, 1, 32, 32)}, "f"), ["'x'", "[N, 1, 28, 28]"]))
    results.append(case("input of the wrong dtype", good_w,
                        file_with({"x": torch.zeros(2, 1, 28, 28, dtype=torch.float64)}, "g"),
                        ["'x'"]))
    results.append(case("extra input", good_w,
                        file_with({"x": torch.zeros(2, 1, 28, 28), "y": torch.zeros(1)}, "h"),
                        ["'y'"]))
    results.append(case("input without samples", good_w,
                        file_with({"x": torch.zeros(0, 1, 28, 28)}, "i"), ["'x'"]))
    passed = sum(results)
    print("run_errors: %d passed, %d failed" % (passed, len(results) - passed))
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
