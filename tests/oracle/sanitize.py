#!/usr/bin/python3
"""The generated code of every example under AddressSanitizer and
UndefinedBehaviorSanitizer: for each dsl-example (at forward.py's reduced
sizes), random weights and inputs go through `cnnc run` and `cnnc grad`
with the model compiled by `cc -O0 -march=native -fsanitize=address,undefined
-fno-sanitize-recover=all`; each run must succeed with no sanitizer report.
(-O0: the big examples' training code compiles several times faster than
at -O1, and the reduced inputs keep the slower code quick.)
This is about memory and undefined behaviour in the generated loops and
loaders; correctness against PyTorch is forward.py's and grad.py's job,
which run through the JIT (cnnc's default). So each result of the C path
here is also compared with the JIT's on the same files: outputs, loss and
gradients must agree within a relative 1e-5 of each tensor's scale (both
compile the same loop IR, and both fuse its multiply-adds on this machine:
-march=native lets the C's madd() use the instruction, as the JIT does; so
they agree to the bit in practice). (Leak detection is
off: the drivers leave their buffers to the end of the process on purpose.)
U-Net also runs with its channel widths divided by 16 (narrow()): the loops
index the same way, and at full width the instrumented backward pass takes
minutes.

usage: /usr/bin/python3 tests/oracle/sanitize.py [CNNC [STEM ...]]
(the named examples only, when STEMs are given; the environment variable
CNNC_FLAGS adds options to both cnnc commands, e.g. --target avx512)"""
import os
import re
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import forward  # noqa: E402
import graph_torch  # noqa: E402
import st  # noqa: E402

SAN_CC = "cc -O0 -march=native -fsanitize=address,undefined -fno-sanitize-recover=all"


def inputs(g, n, train):
    gen = torch.Generator().manual_seed(1)
    out = {}
    for node in g.nodes.values():
        if node.op != "input":
            continue
        if node.dtype == "i64":
            if train:
                logits = g.nodes[g.nodes[g.loss].ins[0]] if g.loss is not None else None
                k = logits.shape[0] if logits is not None else 1
                out[node.name] = torch.randint(0, k, (n, *node.shape), generator=gen)
        else:
            out[node.name] = torch.randn((n, *node.shape), generator=gen)
    return out


def narrow(path, by=16):
    """Divides the channel counts of U-Net's blocks by `by` in place."""
    with open(path) as f:
        text = f.read()
    text = re.sub(r"double_conv\((\d+)\)", lambda m: f"double_conv({int(m.group(1)) // by})", text)
    text = re.sub(r"up\((d\d), (\d+)\)", lambda m: f"up({m.group(1)}, {int(m.group(2)) // by})", text)
    with open(path, "w") as f:
        f.write(text)


def differ(c, j):
    """(True, what) when the C path's tensors c and the JIT's j differ."""
    if sorted(c) != sorted(j):
        return True, f"tensors C {sorted(c)}, JIT {sorted(j)}"
    worst, same = 0.0, 0
    for k in c:
        a, b = c[k].double(), j[k].double()
        if a.shape != b.shape:
            return True, f"{k}: shape C {list(a.shape)}, JIT {list(b.shape)}"
        if a.numel() == 0:
            continue
        err = float((a - b).abs().max()) / max(1.0, float(a.abs().max()))
        if not err <= 1e-5:
            return True, f"{k}: C and JIT differ by {err:.3g} of its scale"
        worst = max(worst, err)
        same += int(torch.equal(c[k], j[k]))
    return False, f"{len(c)} tensors as the JIT's, {same} to the bit, worst {worst:.2g}"


def main(argv):
    cnnc = argv[1] if len(argv) > 1 else os.path.join(graph_torch.ROOT, "build", "cnnc")
    tmp = tempfile.mkdtemp(prefix="cnnc-sanitize-")
    examples = graph_torch.resize_examples(os.path.join(tmp, "examples"), forward.SIZES)
    narrow(os.path.join(examples, "unet.cnn"))
    passed = failed = 0
    stems = argv[2:] or sorted(forward.SIZES)
    unknown = [s for s in stems if s not in forward.SIZES]
    if unknown:
        print(f"sanitize: no example {', '.join(unknown)}")
        return 2
    for stem in stems:
        path = os.path.join(examples, stem + ".cnn")
        g = graph_torch.load(cnnc, path)
        w = os.path.join(tmp, stem + ".w.safetensors")
        st.write(w, forward.random_weights(g, forward.seed_of(stem, 0)))
        for cmd in ("run", "grad"):
            if cmd == "grad" and g.loss is None:
                continue
            i = os.path.join(tmp, f"{stem}.{cmd}.in.safetensors")
            o = os.path.join(tmp, f"{stem}.{cmd}.out.safetensors")
            st.write(i, inputs(g, 2, cmd == "grad"))
            env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")
            start = time.time()
            extra = os.environ.get("CNNC_FLAGS", "").split()
            r = subprocess.run([cnnc, cmd, path, "--weights", w, "--input", i, "--output", o,
                                "--batch", "2", "--cc", SAN_CC] + extra, capture_output=True,
                               text=True, env=env)
            bad = r.returncode != 0 or "runtime error" in r.stderr or "Sanitizer" in r.stderr
            name = f"{stem} ({cmd})"
            detail = f"exit {r.returncode}\n{r.stderr[-2000:]}"
            if not bad:
                oj = os.path.join(tmp, f"{stem}.{cmd}.jit.safetensors")
                rj = subprocess.run([cnnc, cmd, path, "--weights", w, "--input", i, "--output",
                                     oj, "--batch", "2", "--jit"] + extra, capture_output=True,
                                    text=True)
                if rj.returncode != 0:
                    bad, detail = True, f"--jit: exit {rj.returncode}\n{rj.stderr[-2000:]}"
                else:
                    bad, detail = differ(st.read(o), st.read(oj))
            if bad:
                failed += 1
                print(f"FAIL {name}: {detail}")
            else:
                passed += 1
                print(f"ok   {name} ({detail}; {time.time() - start:.1f} s)")
            sys.stdout.flush()
    print(f"sanitize: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
