#!/usr/bin/python3
"""The PyTorch side of the benchmarks: a cnnc model as an ordinary
torch.nn.Module, built from cnnc's own graph so that both sides run the
same network.

    g = graph(cnnc, "dsl-examples/lenet5.cnn")      # tests/oracle/graph_torch.py
    train = train_section("dsl-examples/lenet5.cnn") # batch, optimizer, ...
    w = init_weights(g, train["init"], seed)         # {state_dict name: tensor}
    net = Net(g, w)                                  # nn.Module, one per layer
    logits = net(x)
    loss = net.loss(logits, labels)

Each layer is the nn.Module that docs/language.md names as the operator's
PyTorch equivalent (graph_torch._module, which the oracle tests check
against torch.nn.functional and torchvision), so train() and eval() switch
batch norm and dropout as in any PyTorch model.

use_openblas() re-executes the script with OpenBLAS for PyTorch's dense
layers (docs/performance.md says why).
"""
import os
import re
import sys

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "oracle"))
import graph_torch  # noqa: E402

OPENBLAS_DIRS = [
    os.path.join(ROOT, "build", "openblas", "usr", "lib", "x86_64-linux-gnu",
                 "openblas-openmp"),
    "/usr/lib/x86_64-linux-gnu/openblas-openmp",
]


def graph(cnnc, path):
    return graph_torch.load(cnnc, path)


# --- the train section ----------------------------------------------------

_DEFAULTS = {"batch": 1, "epochs": 10, "seed": 0, "init": "default",
             "optimizer": ("sgd", {"lr": 0.01}), "schedule": ("constant", {})}


def _call(text):
    """"sgd(lr=0.01, momentum=0.9)" -> ("sgd", {"lr": 0.01, ...})."""
    m = re.fullmatch(r"(\w+)\s*(?:\((.*)\))?", text.strip())
    if not m:
        raise ValueError(f"cannot read {text!r}")
    args = {}
    for part in filter(None, (p.strip() for p in (m.group(2) or "").split(","))):
        k, v = (s.strip() for s in part.split("=", 1))
        args[k] = v == "true" if v in ("true", "false") else float(v)
    return m.group(1), args


def train_section(path):
    """The model's `train { }` settings with cnnc's defaults
    (docs/language.md, section 10). Reads the first train section of the
    file: enough for the examples, which hold one model each."""
    with open(path) as f:
        text = re.sub(r"#[^\n]*", "", f.read())
    out = dict(_DEFAULTS)
    m = re.search(r"\btrain\s*\{([^}]*)\}", text)
    if not m:
        return out
    for line in re.split(r"[;\n]", m.group(1)):
        line = line.strip()
        if not line:
            continue
        if "=" in line.split("(")[0]:
            k, v = (s.strip() for s in line.split("=", 1))
            out[k] = int(v)
        else:
            k, rest = line.split(None, 1)
            out[k] = rest.strip() if k == "init" else _call(rest)
    return out


def optimizer(params, train):
    name, a = train["optimizer"]
    if name == "sgd":
        return torch.optim.SGD(params, lr=a["lr"], momentum=a.get("momentum", 0),
                               nesterov=bool(a.get("nesterov", False)),
                               weight_decay=a.get("weight_decay", 0), dampening=0)
    if name == "adam":
        return torch.optim.Adam(params, lr=a.get("lr", 1e-3),
                                betas=(a.get("beta1", 0.9), a.get("beta2", 0.999)),
                                eps=a.get("eps", 1e-8),
                                weight_decay=a.get("weight_decay", 0))
    raise ValueError(f"unknown optimizer {name}")


def scheduler(opt, train, epochs):
    """The schedule as a torch.optim.lr_scheduler, stepped after each epoch
    (plateau with the test error)."""
    name, a = train["schedule"]
    if name == "constant":
        return None
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(opt, int(a["every"]), a.get("gamma", 0.1))
    if name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, "min", factor=a.get("factor", 0.1), patience=int(a.get("patience", 2)))
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    raise ValueError(f"unknown schedule {name}")


# --- the network ----------------------------------------------------------

def init_weights(g, init="default", seed=0):
    """Every parameter and buffer of g, initialized as cnnc's NAME_init does
    (compiler/lower.c: PyTorch's layer defaults, U(+-1/sqrt(fan_in)) for conv,
    deconv and dense weights and biases; or Glorot/He uniform weights and
    zero biases), from torch's generator seeded with seed."""
    gen = torch.Generator().manual_seed(seed)
    first = {}
    for p in g.params:
        first.setdefault(p.owner, p)
    out = {}
    for p in g.params:
        owner = g.nodes[p.owner]
        role = p.name.rsplit(".", 1)[-1]
        if p.dtype == "i64":
            out[p.name] = torch.zeros(p.shape, dtype=torch.int64)
            continue
        t = torch.zeros(p.shape)
        if owner.op in ("conv", "deconv", "dense"):
            w = first[p.owner].shape
            rf = w[2] * w[3] if len(w) == 4 else 1
            fan_in, fan_out = w[1] * rf, w[0] * rf
            if init == "default":
                bound = fan_in ** -0.5
            elif role == "weight":
                bound = (6.0 / ((fan_in + fan_out) if init == "xavier" else fan_in)) ** 0.5
            else:
                bound = 0.0
            t.uniform_(-bound, bound, generator=gen)
        elif role in ("weight", "running_var"):
            t.fill_(1.0)
        out[p.name] = t
    return out


class Net(torch.nn.Module):
    """The forward pass of graph g, one submodule per layer (named nNODE:
    state_dict names with dots cannot name submodules), with the weights w.
    forward returns the first output; loss() is the model's loss on it."""

    def __init__(self, g, w):
        super().__init__()
        self.g = g
        self.order = graph_torch.needed(g)
        self.layers = torch.nn.ModuleDict()
        self.fns = {}
        for nid in self.order:
            n = g.nodes[nid]
            if n.op == "input":
                continue
            m = graph_torch._module(n, g.nodes[n.ins[0]].shape, w)
            if isinstance(m, torch.nn.Module):
                self.layers[f"n{nid}"] = m
            else:
                self.fns[nid] = m
        inputs = [n for n in g.nodes.values() if n.op == "input" and n.dtype == "f32"]
        if len(inputs) != 1 or len(g.outputs) < 1:
            raise graph_torch.GraphError("the bench takes models with one input")
        self.input, self.out = inputs[0].id, g.outputs[0][1]
        self.loss_op = None
        if g.loss is not None:
            ln = g.nodes[g.loss]
            if ln.op != "cross_entropy" or ln.ins[0] != self.out:
                raise graph_torch.GraphError(
                    "the bench trains models whose loss is cross_entropy of "
                    "the first output")
            self.loss_op = ln

    def forward(self, x):
        vals = {self.input: x}
        for nid in self.order:
            if nid in vals:
                continue
            n = self.g.nodes[nid]
            f = self.fns.get(nid) or self.layers[f"n{nid}"]
            vals[nid] = f(*[vals[i] for i in n.ins])
        return vals[self.out]

    def loss(self, logits, labels):
        return F.cross_entropy(logits, labels)


def labels_shape(g):
    """Per-sample shape of the integer labels input ([] for one class per
    sample)."""
    for n in g.nodes.values():
        if n.op == "input" and n.dtype != "f32":
            return n.shape
    return ()


# --- BLAS -----------------------------------------------------------------

def blas_in_use():
    """The BLAS library this process has mapped."""
    with open("/proc/self/maps") as f:
        libs = {line.split()[-1] for line in f if "blas" in line and "/" in line}
    for lib in sorted(libs):
        if "openblas" in lib:
            return "OpenBLAS"
    return "reference BLAS" if libs else "none loaded"


def use_openblas(want=True):
    """Re-executes this script once with OpenBLAS (a Debian package, unpacked
    under build/openblas by `make bench`, or installed) ahead of the reference
    BLAS that Debian's torch links by default, for PyTorch at its best.
    Returns the library's directory, or None when there is none."""
    if not want:
        return None
    for d in OPENBLAS_DIRS:
        if os.path.exists(os.path.join(d, "libblas.so.3")):
            break
    else:
        return None
    if os.environ.get("CNNC_BENCH_BLAS") != d:
        env = dict(os.environ, CNNC_BENCH_BLAS=d,
                   LD_LIBRARY_PATH=d + ":" + os.environ.get("LD_LIBRARY_PATH", ""))
        sys.stdout.flush()
        os.execve(sys.executable, [sys.executable] + sys.argv, env)
    return d
