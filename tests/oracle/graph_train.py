#!/usr/bin/python3
"""The reference interpreter of cnnc's graph in training mode: the forward
pass of graph_torch.py (which see for the graph's text form) with

  - batch norm normalizing with the batch mean and biased variance
    (F.batch_norm(training=True)) and updating copies of its running
    statistics (momentum, unbiased variance) and num_batches_tracked; a batch
    norm whose parameters are frozen (`frozen` on its param lines) normalizes
    with its running statistics, as in evaluation, and updates nothing;
  - dropout with cnnc's counter-based mask (dropout_keep below), the kept
    values multiplied by 1/(1-p) rounded to float32;
  - the loss: cross_entropy is F.cross_entropy (mean over the batch and, for
    [K, H, W] logits, the pixels) against the integer input `labels`; mse is
    F.mse_loss (mean) against the model's target input.

Gradients come from torch autograd:

    g = graph_torch.load(cnnc, path)
    f = build(g)
    loss, outputs, buffers = f(weights, inputs, draws=1)
    loss, grads, buffers = gradients(g, weights, inputs)   # float64 by default

`inputs` holds every float input [N, ...] and, for cross_entropy, `labels`
(integer, [N] or [N, H, W]). The computation runs in the dtype of the float
inputs. `buffers` maps each updated buffer name to its new value (running
statistics in the computation's dtype, num_batches_tracked int64).

Run as a script it checks itself: dropout_keep against a scalar
transcription of the generator, and batch norm's training statistics
against torch.nn.BatchNorm2d.
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import graph_torch  # noqa: E402
from graph_torch import GraphError  # noqa: E402,F401

_M64 = (1 << 64) - 1


def dropout_keep(layer, count, numel, p, seed=0, draws=1):
    """Boolean mask [count, numel]: which elements dropout node %layer keeps
    for training step `draws` (cnnc grad runs with seed 0 and draws 1). The
    generator (splitmix64's finalizer on a counter):
        key = n * numel + i
        z = seed ^ (draws * 0x9e3779b97f4a7c15) ^ (layer << 48) ^ key
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
        z = (z ^ (z >> 27)) * 0x94d049bb133111eb
        z ^= z >> 31
        u = float32(z >> 40) / 2**24;  keep iff float32(p) <= u
    all in wrapping uint64 arithmetic."""
    base = (seed ^ ((draws * 0x9e3779b97f4a7c15) & _M64) ^ ((layer << 48) & _M64)) & _M64
    key = np.arange(count * numel, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(base) ^ key
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xbf58476d1ce4e5b9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94d049bb133111eb)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(40)).astype(np.float32) * np.float32(1.0 / 16777216.0)
    return torch.from_numpy(u >= np.float32(p)).reshape(count, numel)


def _dropout_keep_scalar(layer, key, p, seed=0, draws=1):
    z = seed ^ ((draws * 0x9e3779b97f4a7c15) & _M64) ^ ((layer << 48) & _M64) ^ key
    z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & _M64
    z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & _M64
    z ^= z >> 31
    u = float(np.float32(z >> 40)) / 16777216.0
    return float(np.float32(p)) <= u


def dropout_scale(p):
    """The factor kept values are multiplied by: 1/(1-p) as a float32."""
    return float(np.float32(1.0 / (1.0 - p)))


def needed(g):
    """Ids of the nodes the loss and the outputs depend on, in graph order."""
    roots = [nid for _, nid in g.outputs]
    if g.loss is not None:
        roots.append(g.loss)
    want, stack = set(), roots
    while stack:
        nid = stack.pop()
        if nid in want:
            continue
        want.add(nid)
        stack.extend(g.nodes[nid].ins)
    return [nid for nid in g.nodes if nid in want]


def trainable(g):
    """Names of the parameters that get a gradient (not buffers, not frozen),
    in creation order."""
    return [p.name for p in g.params if p.kind == "param" and not p.frozen]


def frozen_nodes(g):
    """Ids of the nodes whose parameters are all frozen."""
    by_owner = {}
    for p in g.params:
        if p.kind == "param":
            by_owner.setdefault(p.owner, []).append(p.frozen)
    return {nid for nid, fl in by_owner.items() if fl and all(fl)}


def build(g, flips=None):
    """A function run(weights, inputs, draws=1, seed=0, before=None) ->
    (loss or None, {output: tensor}, {buffer: new value}) computing the
    training-mode forward pass and the loss. Differentiable with respect to
    the tensors of `weights`.

    flips, {relu node id: flat indices into its [N, ...] input}, inverts
    relu's decision at those elements: y = x and derivative 1 where x <= 0,
    y = 0 and derivative 0 where x > 0 (grad.py uses it to see what a relu
    input within float32 rounding of zero does when float32 decides the
    other way)."""
    flips = flips or {}
    order = needed(g)
    for nid in order:
        n = g.nodes[nid]
        if n.op not in ("input", "bn", "dropout", "cross_entropy", "mse") \
                and n.op not in graph_torch.OPS:
            raise GraphError(f"unknown operator {n.op!r} ({n}, line {n.line})")
    owned = {}
    for p in g.params:
        owned.setdefault(p.owner, set()).add(p.name)
    frozen = frozen_nodes(g)

    def run(weights, inputs, draws=1, seed=0, before=None):
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

        vals, buffers, loss = {}, {}, None
        for nid in order:
            n = g.nodes[nid]
            xs = [vals[i] for i in n.ins]
            if before and n.op != "input":
                before(n, xs)
            if n.op == "input":
                if n.name not in inputs:
                    raise GraphError(f"missing input {n.name}")
                t = inputs[n.name]
                y = t.to(dtype) if n.dtype == "f32" else t.long()
            elif n.op == "bn" and nid in frozen:
                y = graph_torch.OPS["bn"](n, xs, w)
            elif n.op == "bn":
                rm = w(n, "running_mean").detach().clone()
                rv = w(n, "running_var").detach().clone()
                y = F.batch_norm(xs[0], rm, rv, w(n, "weight"), w(n, "bias"),
                                 training=True, momentum=n.attrs["momentum"],
                                 eps=n.attrs["eps"])
                buffers[n.name + ".running_mean"] = rm
                buffers[n.name + ".running_var"] = rv
                nbt = n.name + ".num_batches_tracked"
                if nbt in weights:
                    buffers[nbt] = weights[nbt].detach().clone() + 1
                else:
                    buffers[nbt] = torch.tensor(1, dtype=torch.int64)
            elif n.op == "dropout":
                x = xs[0]
                p = n.attrs["p"]
                keep = dropout_keep(n.id, x.shape[0], x[0].numel(), p, seed, draws)
                keep = keep.reshape(x.shape).to(x.dtype)
                y = x * keep * dropout_scale(p)
            elif n.op == "cross_entropy":
                y = F.cross_entropy(xs[0], xs[1])
                loss = y
            elif n.op == "mse":
                if xs[0].shape != xs[1].shape:
                    raise GraphError(f"{n}: mse of {list(xs[0].shape)} and "
                                     f"{list(xs[1].shape)}")
                y = F.mse_loss(xs[0], xs[1])
                loss = y
            elif n.op == "relu" and nid in flips:
                x = xs[0]
                on = (x > 0).flatten()
                idx = torch.tensor(sorted(flips[nid]), dtype=torch.int64)
                on[idx] = ~on[idx]
                y = x * on.reshape(x.shape).to(x.dtype)
            else:
                y = graph_torch.OPS[n.op](n, xs, w)
            if tuple(y.shape[1:]) != n.shape and not (n.op in ("cross_entropy", "mse")
                                                       and n.shape == ()):
                raise GraphError(f"{n} (line {n.line}): computed per-sample shape "
                                 f"{list(y.shape[1:])}, cnnc says {list(n.shape)}")
            vals[nid] = y
        if g.loss is not None and loss is None:
            raise GraphError(f"the loss %{g.loss} is not cross_entropy or mse")
        return loss, {name: vals[nid] for name, nid in g.outputs}, buffers

    return run


def gradients(g, weights, inputs, dtype=torch.float64, draws=1, seed=0, f=None):
    """(loss, {trainable parameter: gradient}, {buffer: new value}) for one
    training step on `inputs`, computed in `dtype` by autograd."""
    f = f or build(g)
    names = set(trainable(g))
    leaf = {}
    for k, v in weights.items():
        if v.is_floating_point():
            t = v.detach().to(dtype).clone()
            if k in names:
                t.requires_grad_(True)
            leaf[k] = t
        else:
            leaf[k] = v
    ins = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in inputs.items()}
    loss, _, buffers = f(leaf, ins, draws=draws, seed=seed)
    if loss is None:
        raise GraphError("the model has no loss")
    loss.backward()
    grads = {}
    for k in trainable(g):
        if k not in leaf:
            raise GraphError(f"missing weight {k}")
        grads[k] = leaf[k].grad if leaf[k].grad is not None else torch.zeros_like(leaf[k])
    return loss.detach(), {k: v.detach() for k, v in grads.items()}, buffers


def _selftest():
    # The vectorized generator against its scalar transcription.
    for layer, count, numel, p, draws in ((3, 2, 48, 0.3, 1), (17, 3, 10, 0.5, 7),
                                          (1, 1, 100, 0.9, 2)):
        keep = dropout_keep(layer, count, numel, p, draws=draws)
        want = [_dropout_keep_scalar(layer, k, p, draws=draws)
                for k in range(count * numel)]
        assert keep.flatten().tolist() == want, (layer, count, numel, p)
        frac = keep.float().mean().item()
        assert abs(frac - (1 - p)) < 0.25, frac
    # Training-mode batch norm against nn.BatchNorm2d.
    text = """graph t
%0 = input x : f32 [3, 4, 5]
%1 = bn b %0 eps=0.001 momentum=0.3 : f32 [3, 4, 5]
%2 = input labels : i64 [4, 5]
%3 = cross_entropy ce %1 %2 : f32 []
param %1 b.weight f32 [3] param
param %1 b.bias f32 [3] param
param %1 b.running_mean f32 [3] buffer
param %1 b.running_var f32 [3] buffer
param %1 b.num_batches_tracked i64 [] buffer
output y = %1
loss = %3
"""
    g = graph_torch.parse(text)
    torch.manual_seed(0)
    w = {"b.weight": torch.rand(3) + 0.5, "b.bias": torch.randn(3),
         "b.running_mean": torch.randn(3), "b.running_var": torch.rand(3) + 0.5,
         "b.num_batches_tracked": torch.tensor(4)}
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    labels = torch.randint(0, 3, (2, 4, 5))
    m = torch.nn.BatchNorm2d(3, eps=1e-3, momentum=0.3).double()
    m.load_state_dict({k[2:]: v for k, v in w.items()})
    m.train()
    want = m(x)
    lw = F.cross_entropy(want, labels)
    lw.backward()
    loss, grads, bufs = gradients(g, w, {"x": x, "labels": labels})
    assert abs(loss.item() - lw.item()) < 1e-12
    assert torch.allclose(grads["b.weight"], m.weight.grad)
    assert torch.allclose(grads["b.bias"], m.bias.grad)
    assert torch.allclose(bufs["b.running_mean"], m.running_mean)
    assert torch.allclose(bufs["b.running_var"], m.running_var)
    assert bufs["b.num_batches_tracked"].item() == 5
    print("graph_train.py: ok")


if __name__ == "__main__":
    _selftest()
