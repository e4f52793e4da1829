#!/usr/bin/python3
"""The generated code of every example under AddressSanitizer and
UndefinedBehaviorSanitizer: for each dsl-example (at forward.py's reduced
sizes), random weights and inputs go through `cnnc run` and `cnnc grad`
with the model compiled by `cc -O1 -fsanitize=address,undefined
-fno-sanitize-recover=all`; each run must succeed with no sanitizer report.
Correctness is forward.py's and grad.py's job; this is about memory and
undefined behaviour in the generated loops and loaders. (Leak detection is
off: the drivers leave their buffers to the end of the process on purpose.)

usage: /usr/bin/python3 tests/oracle/sanitize.py [CNNC]"""
import os
import subprocess
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import forward  # noqa: E402
import graph_torch  # noqa: E402
import st  # noqa: E402

SAN_CC = "cc -O1 -fsanitize=address,undefined -fno-sanitize-recover=all"


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


def main(argv):
    cnnc = argv[1] if len(argv) > 1 else os.path.join(graph_torch.ROOT, "build", "cnnc")
    tmp = tempfile.mkdtemp(prefix="cnnc-sanitize-")
    examples = graph_torch.resize_examples(os.path.join(tmp, "examples"), forward.SIZES)
    passed = failed = 0
    for stem in sorted(forward.SIZES):
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
            r = subprocess.run([cnnc, cmd, path, "--weights", w, "--input", i, "--output", o,
                                "--batch", "2", "--cc", SAN_CC], capture_output=True,
                               text=True, env=env)
            bad = r.returncode != 0 or "runtime error" in r.stderr or "Sanitizer" in r.stderr
            name = f"{stem} ({cmd})"
            if bad:
                failed += 1
                print(f"FAIL {name}: exit {r.returncode}\n{r.stderr[-2000:]}")
            else:
                passed += 1
                print(f"ok   {name}")
            sys.stdout.flush()
    print(f"sanitize: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
