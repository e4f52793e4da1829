#!/usr/bin/python3
"""Oracle: the tensors cnnc names for each torchvision-labelled example must be
exactly torchvision's state_dict — same names, same shapes, same parameter or
buffer kind — so that pretrained torchvision weights load unchanged.

Usage (Debian's python3-torch and python3-torchvision):
    /usr/bin/python3 tests/oracle/state_dict.py [CNNC [MODEL ...]]

CNNC defaults to build/cnnc in the repository; MODEL names (alexnet_tv, vgg16,
...) restrict the run to those examples. Every mismatch is printed; the last
line is "N passed, M failed", one count per model; the exit status is 1 when
any model failed.

The expected side is built here by torchvision, never copied from cnnc, and no
weights are downloaded: only the module structure is needed.
"""
import os
import subprocess
import sys
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "dsl-examples")

# example file stem -> torchvision constructor (no weights).
MODELS = [
    ("alexnet_tv", lambda m: m.alexnet()),
    ("vgg16", lambda m: m.vgg16()),
    ("vgg19", lambda m: m.vgg19()),
    ("googlenet", lambda m: m.googlenet(aux_logits=False, init_weights=False)),
    ("resnet18", lambda m: m.resnet18()),
    ("resnet34", lambda m: m.resnet34()),
    ("resnet50", lambda m: m.resnet50()),
    ("resnet152", lambda m: m.resnet152()),
    ("densenet121", lambda m: m.densenet121()),
]


def expected_tensors(build):
    """{name: (shape, kind)} from torchvision's state_dict."""
    import torchvision.models

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = build(torchvision.models)
    params = {name for name, _ in net.named_parameters()}
    return {name: (tuple(t.shape), "param" if name in params else "buffer")
            for name, t in net.state_dict().items()}


def cnnc_tensors(cnnc, path):
    """{name: (shape, kind)} from `cnnc check --params`, and a list of problems
    (a failed run, lines not in the `name<TAB>dims<TAB>kind` format, names
    listed twice)."""
    try:
        run = subprocess.run([cnnc, "check", "--params", path], capture_output=True,
                             text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {}, [f"could not run {cnnc}: {e}"]
    problems = []
    if run.returncode != 0:
        problems.append(f"`cnnc check --params` exited with status {run.returncode}")
        problems += ["  " + l for l in run.stderr.splitlines()[:20]]
        return {}, problems
    got = {}
    for number, line in enumerate(run.stdout.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        try:
            if len(fields) != 3 or fields[2] not in ("param", "buffer") or not fields[0]:
                raise ValueError
            shape = tuple(int(d) for d in fields[1].split(",")) if fields[1] else ()
        except ValueError:
            problems.append(f"output line {number} is not name<TAB>dims<TAB>kind: {line!r}")
            continue
        if fields[0] in got:
            problems.append(f"{fields[0]} is listed twice")
        got[fields[0]] = (shape, fields[2])
    return got, problems


def fmt(shape):
    return "[" + ", ".join(map(str, shape)) + "]"


def compare(expected, got):
    problems = []
    for name in sorted(expected.keys() - got.keys()):
        problems.append(f"missing {name} {fmt(expected[name][0])} {expected[name][1]}")
    for name in sorted(got.keys() - expected.keys()):
        problems.append(f"unexpected {name} {fmt(got[name][0])} {got[name][1]}")
    for name in sorted(expected.keys() & got.keys()):
        (eshape, ekind), (gshape, gkind) = expected[name], got[name]
        if eshape != gshape:
            problems.append(f"shape of {name}: cnnc {fmt(gshape)}, torchvision {fmt(eshape)}")
        if ekind != gkind:
            problems.append(f"kind of {name}: cnnc {gkind}, torchvision {ekind}")
    return problems


def main(argv):
    cnnc = argv[1] if len(argv) > 1 else os.path.join(ROOT, "build", "cnnc")
    wanted = set(argv[2:])
    unknown = wanted - {stem for stem, _ in MODELS}
    if unknown:
        print(f"unknown model(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    passed = failed = 0
    for stem, build in MODELS:
        if wanted and stem not in wanted:
            continue
        path = os.path.join(EXAMPLES, stem + ".cnn")
        expected = expected_tensors(build)
        got, problems = cnnc_tensors(cnnc, path)
        if not problems or got:
            problems += compare(expected, got)
        if problems:
            failed += 1
            print(f"FAIL {stem}: {len(problems)} problem(s)")
            for p in problems:
                print(f"  {p}")
        else:
            passed += 1
            print(f"ok   {stem}: {len(expected)} tensors match torchvision")
        sys.stdout.flush()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
