#!/usr/bin/python3
"""The reference interpreter of cnnc's graph: builds the forward pass (eval
mode) of a model in PyTorch from the graph's text form, printed by
`cnnc check --dump-after=elaborate MODEL.cnn`:

    graph NAME
    %ID = OP NAME %IN... KEY=VALUE... : DTYPE [DIMS]
    param %OWNER NAME DTYPE [DIMS] param|buffer [frozen]
    output NAME = %ID
    loss = %ID

Every operator is computed with torch.nn.functional as docs/language.md defines
it (PyTorch semantics, NCHW, batch first): batch norm with its running
statistics, dropout as the identity. Losses and the integer `labels` input are
not part of the forward outputs and are skipped.

    g = parse(text)                  # or load(cnnc, path) to run cnnc first
    f = build(g)                     # f(weights, inputs) -> {output: tensor}

`weights` maps PyTorch state_dict names to tensors, `inputs` input names to
[N, ...per-sample shape] tensors; the computation runs in the dtype of the
inputs (float64 makes a more accurate oracle than float32). Every computed
tensor is checked against the shape cnnc printed for it.

Run as a script, it validates itself: on every model of tests/oracle/ops/,
against the nn.Module equivalents docs/language.md names for each operator
(build_modules; to 1e-6), and on the torchvision-labelled examples against
torchvision (the same weights and input through torchvision's module and
through this interpreter must agree to 1e-5 relative, at --size, default 64):

    /usr/bin/python3 tests/oracle/graph_torch.py [CNNC] [--only NAME] [--size S]
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "dsl-examples")


class GraphError(Exception):
    """The text is not the graph form this interpreter knows, or a computed
    shape differs from the one cnnc printed."""


class Node:
    def __init__(self, id, op, name, ins, attrs, dtype, shape, line):
        self.id, self.op, self.name, self.ins = id, op, name, ins
        self.attrs, self.dtype, self.shape, self.line = attrs, dtype, shape, line

    def __repr__(self):
        return f"%{self.id} {self.op} {self.name}"


class Param:
    def __init__(self, owner, name, dtype, shape, kind, frozen):
        self.owner, self.name, self.dtype, self.shape = owner, name, dtype, shape
        self.kind, self.frozen = kind, frozen


class Graph:
    def __init__(self):
        self.name = None
        self.nodes = {}        # id -> Node, in order
        self.params = []       # Param, in creation order
        self.outputs = []      # (name, node id)
        self.loss = None

    def inputs(self):
        """The float inputs, [(name, per-sample shape)], in declaration order."""
        return [(n.name, n.shape) for n in self.nodes.values()
                if n.op == "input" and n.dtype == "f32"]


def _value(text):
    if text in ("true", "false"):
        return text == "true"
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return text[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    if re.fullmatch(r"-?\d+,-?\d+", text):
        return tuple(int(v) for v in text.split(","))
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        raise GraphError(f"cannot read attribute value {text!r}") from None


def _shape(text):
    text = text.strip()
    if not (text.startswith("[") and text.endswith("]")):
        raise GraphError(f"bad shape {text!r}")
    inner = text[1:-1].strip()
    return tuple(int(v) for v in inner.split(",")) if inner else ()


_NODE = re.compile(r"%(\d+) = (\w+) (\S+)(.*) : (\w+) (\[[\d, ]*\])$")
_PARAM = re.compile(r"param %(\d+) (\S+) (\w+) (\[[\d, ]*\]) (param|buffer)( frozen)?$")
_OUTPUT = re.compile(r"output (\S+) = %(\d+)$")
_LOSS = re.compile(r"loss = %(\d+)$")


def parse(text):
    g = Graph()
    for number, line in enumerate(text.splitlines(), 1):
        line = line.rstrip()
        if not line:
            continue
        if line.startswith("graph "):
            g.name = line[6:].strip()
            continue
        m = _NODE.match(line)
        if m:
            ins, attrs = [], {}
            for tok in m.group(4).split():
                if tok.startswith("%"):
                    if attrs:
                        raise GraphError(f"line {number}: input after attributes: {line}")
                    ins.append(int(tok[1:]))
                elif "=" in tok:
                    k, v = tok.split("=", 1)
                    attrs[k] = _value(v)
                else:
                    raise GraphError(f"line {number}: cannot read {tok!r}: {line}")
            nid = int(m.group(1))
            for i in ins:
                if i not in g.nodes:
                    raise GraphError(f"line {number}: %{i} is used before it is defined")
            g.nodes[nid] = Node(nid, m.group(2), m.group(3), ins, attrs, m.group(5),
                                _shape(m.group(6)), number)
            continue
        m = _PARAM.match(line)
        if m:
            g.params.append(Param(int(m.group(1)), m.group(2), m.group(3),
                                  _shape(m.group(4)), m.group(5), bool(m.group(6))))
            continue
        m = _OUTPUT.match(line)
        if m:
            g.outputs.append((m.group(1), int(m.group(2))))
            continue
        m = _LOSS.match(line)
        if m:
            g.loss = int(m.group(1))
            continue
        raise GraphError(f"line {number}: not in the graph's text form: {line}")
    if not g.outputs:
        raise GraphError("the graph has no outputs")
    return g


def dump(cnnc, path, model=None):
    """The graph's text form, from `cnnc check --dump-after=elaborate`."""
    cmd = [cnnc, "check", "--dump-after=elaborate", path]
    if model:
        cmd += ["--model", model]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if run.returncode != 0:
        raise GraphError(f"{' '.join(cmd)} exited with status {run.returncode}:\n"
                         + run.stderr)
    return run.stdout


def load(cnnc, path, model=None):
    return parse(dump(cnnc, path, model))


# --- operators --------------------------------------------------------
# Each takes (node, list of input tensors, weight getter) and returns the
# output tensor, batch first.

def _conv(n, xs, w):
    a = n.attrs
    x = xs[0]
    p, pe = a["p"], a.get("pad_end", a["p"])
    weight = w(n, "weight")
    bias = w(n, "bias") if a["bias"] else None
    if tuple(p) != tuple(pe):
        # Only p="same" pads asymmetrically: d*(k-1) in total, the smaller
        # half first (docs/language.md 8.1).
        for ax in range(2):
            total = a["d"][ax] * (a["k"][ax] - 1)
            if a["s"][ax] != 1 or p[ax] != total // 2 or pe[ax] != total - total // 2:
                raise GraphError(f"{n.name}: padding {p} before and {pe} after is "
                                 f"not p=\"same\" (k={a['k']}, d={a['d']}, s={a['s']})")
        # F.pad takes (left, right, top, bottom).
        x = F.pad(x, (p[1], pe[1], p[0], pe[0]))
        p = (0, 0)
    return F.conv2d(x, weight, bias, stride=a["s"], padding=p, dilation=a["d"],
                    groups=a["groups"])


def _deconv(n, xs, w):
    a = n.attrs
    weight = w(n, "weight")
    bias = w(n, "bias") if a["bias"] else None
    return F.conv_transpose2d(xs[0], weight, bias, stride=a["s"], padding=a["p"],
                              output_padding=a["output_padding"], groups=a["groups"],
                              dilation=a["d"])


def _dense(n, xs, w):
    return F.linear(xs[0], w(n, "weight"), w(n, "bias") if n.attrs["bias"] else None)


def _pool_pad(n):
    a = n.attrs
    if tuple(a["p"]) != tuple(a.get("pad_end", a["p"])):
        raise GraphError(f"{n.name}: pooling with different padding before "
                         f"({a['p']}) and after ({a['pad_end']}) is not defined")
    return a["p"]


def _maxpool(n, xs, w):
    a = n.attrs
    return F.max_pool2d(xs[0], a["k"], a["s"], _pool_pad(n), ceil_mode=a["ceil"])


def _avgpool(n, xs, w):
    a = n.attrs
    return F.avg_pool2d(xs[0], a["k"], a["s"], _pool_pad(n), ceil_mode=a["ceil"],
                        count_include_pad=True)


def _softmax(n, xs, w):
    return F.softmax(xs[0], dim=1)


def _bn(n, xs, w):
    return F.batch_norm(xs[0], w(n, "running_mean"), w(n, "running_var"),
                        w(n, "weight"), w(n, "bias"), training=False,
                        eps=n.attrs["eps"])


def _layernorm(n, xs, w):
    x = xs[0]
    return F.layer_norm(x, x.shape[1:], w(n, "weight"), w(n, "bias"), eps=n.attrs["eps"])


def _instancenorm(n, xs, w):
    return F.instance_norm(xs[0], None, None, w(n, "weight"), w(n, "bias"),
                           use_input_stats=True, eps=n.attrs["eps"])


def _groupnorm(n, xs, w):
    return F.group_norm(xs[0], n.attrs["g"], w(n, "weight"), w(n, "bias"),
                        eps=n.attrs["eps"])


def _lrn(n, xs, w):
    a = n.attrs
    return F.local_response_norm(xs[0], a["size"], alpha=a["alpha"], beta=a["beta"],
                                 k=a["k"])


def _upsample(n, xs, w):
    a = n.attrs
    mode = a["mode"]
    if mode == "nearest":
        return F.interpolate(xs[0], scale_factor=a["scale"], mode="nearest")
    if mode == "bilinear":
        return F.interpolate(xs[0], scale_factor=a["scale"], mode="bilinear",
                             align_corners=False)
    raise GraphError(f"{n.name}: unknown upsample mode {mode!r}")


def _crop(n, xs, w):
    t, l = n.attrs["offset"]
    h, wd = n.shape[1], n.shape[2]
    x = xs[0]
    # The centre crop of docs/language.md 8.22, independently of cnnc's offset.
    want = ((x.shape[2] - h) // 2, (x.shape[3] - wd) // 2)
    if (t, l) != want:
        raise GraphError(f"{n.name}: crop of {list(x.shape[1:])} to {h}x{wd} starts at "
                         f"{list(want)}, cnnc's offset is {t},{l}")
    if t < 0 or l < 0 or t + h > x.shape[2] or l + wd > x.shape[3]:
        raise GraphError(f"{n.name}: crop offset {t},{l} size {h}x{wd} does not "
                         f"fit in {list(x.shape[1:])}")
    return x[:, :, t:t + h, l:l + wd]


OPS = {
    "conv": _conv,
    "deconv": _deconv,
    "dense": _dense,
    "maxpool": _maxpool,
    "avgpool": _avgpool,
    "global_avgpool": lambda n, xs, w: F.adaptive_avg_pool2d(xs[0], 1),
    "adaptive_avgpool": lambda n, xs, w: F.adaptive_avg_pool2d(xs[0], n.attrs["n"]),
    "relu": lambda n, xs, w: F.relu(xs[0]),
    "leaky_relu": lambda n, xs, w: F.leaky_relu(xs[0], n.attrs["a"]),
    "tanh": lambda n, xs, w: torch.tanh(xs[0]),
    "sigmoid": lambda n, xs, w: torch.sigmoid(xs[0]),
    "softmax": _softmax,
    "bn": _bn,
    "layernorm": _layernorm,
    "instancenorm": _instancenorm,
    "groupnorm": _groupnorm,
    "lrn": _lrn,
    "dropout": lambda n, xs, w: xs[0],
    "flatten": lambda n, xs, w: torch.flatten(xs[0], 1),
    "concat": lambda n, xs, w: torch.cat(xs, dim=1),
    "add": lambda n, xs, w: xs[0] + xs[1],
    "upsample": _upsample,
    "crop": _crop,
}
LOSSES = {"cross_entropy", "mse"}


def needed(g):
    """Ids of the nodes the outputs depend on, in graph order."""
    want, stack = set(), [nid for _, nid in g.outputs]
    while stack:
        nid = stack.pop()
        if nid in want:
            continue
        want.add(nid)
        stack.extend(g.nodes[nid].ins)
    return [nid for nid in g.nodes if nid in want]


def build(g):
    """A function (weights, inputs) -> {output name: tensor} computing the
    graph's forward pass in eval mode. Raises GraphError on an unknown
    operator, a missing tensor or a shape that differs from cnnc's."""
    order = needed(g)
    for nid in order:
        n = g.nodes[nid]
        if n.op in LOSSES:
            raise GraphError(f"output depends on the loss {n}")
        if n.op != "input" and n.op not in OPS:
            raise GraphError(f"unknown operator {n.op!r} ({n}, line {n.line})")
    owned = {}
    for p in g.params:
        owned.setdefault(p.owner, set()).add(p.name)

    def run(weights, inputs, before=None):
        """before(node, input tensors), when given, is called before each
        operator is computed and may change `weights` (forward.py calibrates
        batch norm statistics this way)."""
        dtype = None
        for name, _ in g.inputs():
            if name in inputs:
                dtype = inputs[name].dtype
                break
        dtype = dtype or torch.float32

        def w(n, role):
            name = f"{n.name}.{role}"
            if name not in owned.get(n.id, ()):
                raise GraphError(f"{n}: cnnc's graph lists no parameter {name}")
            if name not in weights:
                raise GraphError(f"missing weight {name}")
            return weights[name].to(dtype)

        vals = {}
        for nid in order:
            n = g.nodes[nid]
            if n.op == "input":
                if n.name not in inputs:
                    raise GraphError(f"missing input {n.name}")
                y = inputs[n.name].to(dtype)
            else:
                xs = [vals[i] for i in n.ins]
                if before:
                    before(n, xs)
                y = OPS[n.op](n, xs, w)
            if tuple(y.shape[1:]) != n.shape:
                raise GraphError(f"{n} (line {n.line}): computed per-sample shape "
                                 f"{list(y.shape[1:])}, cnnc says {list(n.shape)}")
            vals[nid] = y
        return {name: vals[nid] for name, nid in g.outputs}

    return run


# --- self-validation: nn modules and torchvision ------------------

TORCHVISION = [
    ("alexnet_tv", lambda m: m.alexnet()),
    ("vgg16", lambda m: m.vgg16()),
    ("resnet18", lambda m: m.resnet18()),
    ("resnet50", lambda m: m.resnet50()),
    ("densenet121", lambda m: m.densenet121()),
    ("googlenet", lambda m: m.googlenet(aux_logits=False, init_weights=False,
                                        transform_input=False)),
]


def resize_examples(dst, sizes):
    """Copies dsl-examples/ to dst, changing the `input x[...]` line of each
    stem in sizes to the given [C, H, W]; returns dst."""
    shutil.copytree(EXAMPLES, dst, dirs_exist_ok=True)
    for stem, shape in sizes.items():
        if shape is None:
            continue
        path = os.path.join(dst, stem + ".cnn")
        with open(path) as f:
            text = f.read()
        new, count = re.subn(r"(\binput\s+x\s*)\[[^\]]*\]",
                             lambda m: m.group(1) + "[" + ", ".join(map(str, shape)) + "]",
                             text, count=1)
        if count != 1:
            raise GraphError(f"{path}: no `input x[...]` line to resize")
        with open(path, "w") as f:
            f.write(new)
    return dst


def _module(n, shape_in, weights):
    """The nn.Module that docs/language.md names as the PyTorch equivalent of
    node n, with its weights loaded; crop, concat and add are written out."""
    nn = torch.nn
    a = n.attrs
    c = shape_in[0] if shape_in else None
    op = n.op
    if op == "conv":
        same = tuple(a["p"]) != tuple(a["pad_end"])
        m = nn.Conv2d(c, a["out"], a["k"], stride=a["s"],
                      padding="same" if same else a["p"], dilation=a["d"],
                      groups=a["groups"], bias=a["bias"])
    elif op == "deconv":
        m = nn.ConvTranspose2d(c, a["out"], a["k"], stride=a["s"], padding=a["p"],
                               output_padding=a["output_padding"], groups=a["groups"],
                               bias=a["bias"], dilation=a["d"])
    elif op == "dense":
        m = nn.Linear(c, a["out"], bias=a["bias"])
    elif op == "maxpool":
        m = nn.MaxPool2d(a["k"], stride=a["s"], padding=a["p"], ceil_mode=a["ceil"])
    elif op == "avgpool":
        m = nn.AvgPool2d(a["k"], stride=a["s"], padding=a["p"], ceil_mode=a["ceil"])
    elif op == "global_avgpool":
        m = nn.AdaptiveAvgPool2d(1)
    elif op == "adaptive_avgpool":
        m = nn.AdaptiveAvgPool2d(a["n"])
    elif op == "relu":
        m = nn.ReLU()
    elif op == "leaky_relu":
        m = nn.LeakyReLU(negative_slope=a["a"])
    elif op == "tanh":
        m = nn.Tanh()
    elif op == "sigmoid":
        m = nn.Sigmoid()
    elif op == "softmax":
        m = nn.Softmax(dim=1)
    elif op == "bn":
        cls = nn.BatchNorm2d if len(shape_in) == 3 else nn.BatchNorm1d
        m = cls(c, eps=a["eps"], momentum=a["momentum"])
    elif op == "layernorm":
        m = nn.LayerNorm(list(shape_in), eps=a["eps"])
    elif op == "instancenorm":
        m = nn.InstanceNorm2d(c, eps=a["eps"], affine=True)
    elif op == "groupnorm":
        m = nn.GroupNorm(a["g"], c, eps=a["eps"])
    elif op == "lrn":
        m = nn.LocalResponseNorm(a["size"], a["alpha"], a["beta"], a["k"])
    elif op == "dropout":
        m = nn.Dropout(a["p"])
    elif op == "flatten":
        m = nn.Flatten()
    elif op == "upsample":
        m = nn.Upsample(scale_factor=a["scale"], mode=a["mode"],
                        align_corners=False if a["mode"] == "bilinear" else None)
    elif op == "crop":
        def crop(x, like):
            h, w = like.shape[2], like.shape[3]
            t, l = (x.shape[2] - h) // 2, (x.shape[3] - w) // 2
            return x[:, :, t:t + h, l:l + w]
        return crop
    elif op == "concat":
        return lambda *xs: torch.cat(xs, dim=1)
    elif op == "add":
        return lambda x, y: x + y
    else:
        raise GraphError(f"no module for {n}")
    prefix = n.name + "."
    sd = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)
          and "." not in k[len(prefix):]}
    m.load_state_dict(sd, strict=True)
    return m.eval()


def build_modules(g):
    """Like build(), but each operator is the nn.Module docs/language.md names
    as its PyTorch equivalent: an independent check of build()'s mapping of
    attributes onto torch.nn.functional."""
    order = needed(g)

    def run(weights, inputs):
        vals = {}
        for nid in order:
            n = g.nodes[nid]
            if n.op == "input":
                vals[nid] = inputs[n.name]
                continue
            m = _module(n, g.nodes[n.ins[0]].shape, weights)
            vals[nid] = m(*[vals[i] for i in n.ins])
        return {name: vals[nid] for name, nid in g.outputs}

    return run


def validate_ops(cnnc, only=None, seed=0):
    """build() against build_modules() on every model of tests/oracle/ops/."""
    import glob
    import warnings
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import forward
    passed = failed = 0
    for path in sorted(glob.glob(os.path.join(ROOT, "tests", "oracle", "ops", "*.cnn"))):
        name = "ops/" + os.path.basename(path)[:-4]
        if only and name not in only and name[4:] not in only:
            continue
        try:
            g = load(cnnc, path)
            w = forward.random_weights(g, seed)
            x = forward.random_inputs(g, seed)
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")    # padding="same", even kernels
                got = build(g)(w, x)
                want = build_modules(g)(w, x)
            errs = [(k, (got[k] - want[k]).abs().max().item()) for k in want]
            bad = [f"{k}: {e:.3g}" for k, e in errs if e > 1e-6 * max(
                1.0, want[k].abs().max().item())]
            if bad:
                failed += 1
                print(f"FAIL {name}: functional and nn modules differ: {', '.join(bad)}")
            else:
                passed += 1
                print(f"ok   {name}: functional = nn modules "
                      f"(max err {max(e for _, e in errs):.3g}, {len(errs)} outputs)")
        except GraphError as e:
            failed += 1
            print(f"FAIL {name}: {e}")
    return passed, failed


def validate(cnnc, only=None, size=64, seed=0):
    import warnings
    import torchvision.models

    passed, failed = validate_ops(cnnc, only, seed)
    with tempfile.TemporaryDirectory(prefix="cnnc-oracle-") as tmp:
        resize_examples(tmp, {stem: (3, size, size) for stem, _ in TORCHVISION})
        for stem, make in TORCHVISION:
            if only and stem not in only:
                continue
            torch.manual_seed(seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                net = make(torchvision.models).eval()
            # Random running statistics, so that batch norm is not the identity.
            with torch.no_grad():
                for mod in net.modules():
                    if isinstance(mod, torch.nn.BatchNorm2d):
                        mod.running_mean.uniform_(-0.1, 0.1)
                        mod.running_var.uniform_(0.5, 1.5)
                        mod.weight.uniform_(0.5, 1.5)
                        mod.bias.uniform_(-0.1, 0.1)
            sd = net.state_dict()
            x = torch.randn(2, 3, size, size)
            try:
                g = load(cnnc, os.path.join(tmp, stem + ".cnn"))
                names = {p.name for p in g.params}
                if names != set(sd):
                    raise GraphError(f"tensor names differ: only cnnc "
                                     f"{sorted(names - set(sd))[:5]}, only torchvision "
                                     f"{sorted(set(sd) - names)[:5]}")
                with torch.no_grad():
                    want = net(x)
                    got = build(g)(sd, {"x": x})
                if len(got) != 1:
                    raise GraphError(f"{len(got)} outputs, torchvision has one")
                (out, y), = got.items()
                err = (y - want).abs().max().item()
                scale = want.abs().max().item()
                rel = err / max(scale, 1e-30)
                if y.shape == want.shape and rel <= 1e-5:
                    passed += 1
                    print(f"ok   {stem} at {size}x{size}: max err {err:.3g}, "
                          f"max |y| {scale:.3g}, relative {rel:.3g}")
                else:
                    failed += 1
                    print(f"FAIL {stem} at {size}x{size}: shape {list(y.shape)} vs "
                          f"{list(want.shape)}, max err {err:.3g}, max |y| {scale:.3g}")
            except GraphError as e:
                failed += 1
                print(f"FAIL {stem}: {e}")
            sys.stdout.flush()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


def main(argv):
    args = argv[1:]
    only, size, cnnc = [], 64, os.path.join(ROOT, "build", "cnnc")
    while args:
        a = args.pop(0)
        if a == "--only" and args:
            only.append(args.pop(0))
        elif a == "--size" and args:
            size = int(args.pop(0))
        elif a.startswith("-"):
            print(__doc__, file=sys.stderr)
            return 2
        else:
            cnnc = a
    return validate(cnnc, only, size)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
