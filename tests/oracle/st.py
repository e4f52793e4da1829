"""A minimal safetensors reader and writer: pure Python and torch (Debian has
no `safetensors` package).

Format: an 8-byte little-endian unsigned header length n, then n bytes of JSON
    {NAME: {"dtype": "F32"|"I64"|"I32", "shape": [...], "data_offsets": [b, e]},
     ..., "__metadata__": {...} (optional)}
then the raw little-endian data; [b, e) is relative to the end of the header.
Tensors are written in name order, contiguous, without gaps. The header is
padded with spaces to a multiple of 8 bytes, as the reference implementation
does.

    write(path, {name: tensor}, metadata=None)
    read(path) -> {name: tensor}         (CPU tensors, in the file's dtypes)
"""
import json
import os
import struct
import sys

import torch

_DTYPES = {"F32": torch.float32, "I64": torch.int64, "I32": torch.int32,
           "F64": torch.float64}
_NAMES = {v: k for k, v in _DTYPES.items()}


def _raw(t):
    """Little-endian bytes of a contiguous CPU tensor."""
    t = t.detach().to("cpu").contiguous()
    if t.numel() == 0:
        return b""
    data = t.numpy().tobytes()
    if sys.byteorder != "little":
        data = t.numpy().byteswap().tobytes()
    return data


def _layout(tensors, metadata):
    """(header bytes with its length prefix, [(name, tensor)]) for a file."""
    header, order, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name]
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: not a tensor")
        if t.dtype not in _NAMES:
            raise TypeError(f"{name}: dtype {t.dtype} is not F32, I64, I32 or F64")
        t = t.detach().to("cpu").contiguous()
        size = t.numel() * t.element_size()
        header[name] = {"dtype": _NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + size]}
        order.append((name, t))
        offset += size
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text, order


def dumps(tensors, metadata=None):
    """The file's bytes for {name: tensor}."""
    head, order = _layout(tensors, metadata)
    return head + b"".join(_raw(t) for _, t in order)


def write(path, tensors, metadata=None):
    head, order = _layout(tensors, metadata)
    with open(path, "wb") as f:
        f.write(head)
        for _, t in order:
            if t.numel() == 0:
                continue
            if sys.byteorder == "little":
                f.write(memoryview(t.numpy()).cast("B"))   # no copy
            else:
                f.write(_raw(t))


def loads(buf):
    """{name: tensor} from a file's bytes; raises ValueError when malformed."""
    if len(buf) < 8:
        raise ValueError("shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", buf[:8])
    if 8 + n > len(buf):
        raise ValueError(f"header length {n} runs past the end of the file")
    try:
        header = json.loads(buf[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    if not isinstance(buf, bytearray):
        buf = bytearray(buf)                # torch.frombuffer wants it writable
    data = memoryview(buf)[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _DTYPES[info["dtype"]]
            shape = [int(d) for d in info["shape"]]
            b, e = (int(v) for v in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{name}: bad header entry {info!r}") from None
        numel = 1
        for d in shape:
            if d < 0:
                raise ValueError(f"{name}: negative dimension in {shape}")
            numel *= d
        size = numel * torch.tensor([], dtype=dtype).element_size()
        if not 0 <= b <= e <= len(data) or e - b != size:
            raise ValueError(f"{name}: data_offsets [{b}, {e}] do not hold "
                             f"{info['dtype']} {shape} ({size} bytes) in "
                             f"{len(data)} bytes of data")
        if numel == 0:
            t = torch.empty(shape, dtype=dtype)
        else:
            t = torch.frombuffer(data, dtype=dtype, count=numel, offset=b)
            t = t.reshape(shape).clone()
            if sys.byteorder != "little":
                t = torch.from_numpy(t.numpy().byteswap())
        out[name] = t
    return out


def read(path):
    with open(path, "rb") as f:
        buf = bytearray(os.fstat(f.fileno()).st_size)
        f.readinto(buf)
    return loads(buf)


def _selftest():
    ts = {"a.weight": torch.randn(3, 4, 5), "b": torch.tensor(7, dtype=torch.int64),
          "c": torch.arange(6, dtype=torch.int32).reshape(2, 3),
          "empty": torch.zeros(0, 3), "scalar": torch.tensor(1.5)}
    back = loads(dumps(ts, {"k": "v"}))
    assert back.keys() == ts.keys(), back.keys()
    for k in ts:
        assert back[k].dtype == ts[k].dtype and back[k].shape == ts[k].shape, k
        assert torch.equal(back[k], ts[k]), k
    buf = dumps(ts)
    (n,) = struct.unpack("<Q", buf[:8])
    assert n % 8 == 0
    hdr = json.loads(buf[8:8 + n])
    assert hdr["b"] == {"dtype": "I64", "shape": [], "data_offsets": hdr["b"]["data_offsets"]}
    # A non-contiguous tensor is written in logical order.
    t = torch.randn(4, 5).t()
    assert torch.equal(loads(dumps({"t": t}))["t"], t)
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        write(os.path.join(d, "f"), ts, {"k": "v"})
        with open(os.path.join(d, "f"), "rb") as f:
            assert f.read() == dumps(ts, {"k": "v"})
        back = read(os.path.join(d, "f"))
        assert all(torch.equal(back[k], ts[k]) for k in ts)
    print("st.py: ok")


if __name__ == "__main__":
    _selftest()
