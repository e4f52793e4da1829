"""Writes the seed corpora of the binary-format fuzzers into a directory
(build/fuzz/seeds by default; `make fuzz` runs it).

    /usr/bin/python3 tests/fuzz/make_seeds.py [CNNC [DIR]]

safetensors/  files for the runtime reader: every dtype, scalars, empty
              tensors, metadata, escaped and non-ASCII names, real weight
              files of small models written by PyTorch through
              tests/oracle/st.py (names and shapes from `cnnc check
              --params`, CNNC defaulting to build/cnnc), and the outputs
              `cnnc run` writes for them
st_loader/    files for the generated loader, built around the table of
              fuzz_st_loader.c: exact matches in several layouts, and near
              misses (each a single mistake)
idx/          prefixes of Fashion-MNIST (/usr/share/datasets/fashion-mnist,
              Debian's dataset-fashion-mnist) with their headers made to
              fit, plain and gzip, and small files of every IDX type
hostile/      the bad safetensors and IDX files of tests/hostile/

The .cnn fuzzer needs no generated seeds: tests/fuzz/run.sh takes
dsl-examples/, tests/diagnostics/, tests/oracle/ops/, tests/fuzz/seeds/cnn/
and tests/hostile/models/ as they are.
Output is deterministic but for the files PyTorch and cnnc write.
"""
import gzip
import json
import os
import struct
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in tests/oracle/
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "oracle"))
sys.path.insert(0, os.path.join(ROOT, "tests", "hostile"))

SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
         "I8": 1, "U8": 1, "BOOL": 1}


def st_file(entries, metadata=None, order=None, indent=None, pad=True):
    """A safetensors image from [(name, dtype, shape, bytes)], laid out in
    order; the header JSON is written by Python's json (non-ASCII as \\u)."""
    header, blobs, at = {}, [], 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, data in entries:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [at, at + len(data)]}
        blobs.append(data)
        at += len(data)
    if order:
        header = {k: header[k] for k in order(list(header))}
    text = json.dumps(header, indent=indent,
                      separators=None if indent else (",", ":")).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def counting(n, size):
    return bytes((i * 37 + 11) & 0xFF for i in range(n * size))


def entry(name, dtype, shape):
    n = 1
    for d in shape:
        n *= d
    return (name, dtype, shape, counting(n, SIZES[dtype]))


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def safetensors_seeds(out, cnnc):
    write(f"{out}/empty_header.safetensors", st_file([]))
    write(f"{out}/every_dtype.safetensors",
          st_file([entry(f"t.{d.lower()}", d, [2, 3]) for d in SIZES]))
    write(f"{out}/scalars_and_empty.safetensors",
          st_file([entry("s", "F32", []), entry("e", "F32", [0, 3]),
                   entry("z", "I64", [4, 0, 2]), entry("one", "I64", [])]))
    write(f"{out}/eight_dims.safetensors",
          st_file([entry("x", "U8", [1, 2, 1, 2, 1, 2, 1, 2])]))
    write(f"{out}/metadata.safetensors",
          st_file([entry("w", "F32", [2])],
                  metadata={"format": "pt", "note": "a \"quoted\" caf\u00e9 \U0001F600"}))
    write(f"{out}/names.safetensors",
          st_file([entry("caf\u00e9", "F32", [1]), entry("q\"\\/\n", "I8", [3]),
                   entry("\U0001F600", "I16", [2]), entry("", "BOOL", [1])]))
    write(f"{out}/pretty.safetensors",
          st_file([entry("b", "F32", [2]), entry("a", "F64", [2, 2])],
                  metadata={"k": "v"}, indent=2, order=lambda ks: ks[::-1]))
    write(f"{out}/unpadded.safetensors",
          st_file([entry("x", "I32", [3])], pad=False))
    # Real weights: tiny models of the oracle's catalogue, written by torch.
    try:
        import torch
        import st
    except ImportError as e:
        print(f"make_seeds: skipping PyTorch-written files ({e})")
        return
    torch.manual_seed(0)
    for model in ("bn", "conv_groups", "two_io", "layernorm"):
        path = os.path.join(ROOT, "tests", "oracle", "ops", model + ".cnn")
        out_p = subprocess.run([cnnc, "check", "--params", path], check=True,
                               capture_output=True, text=True).stdout
        ts = {}
        for line in out_p.splitlines():
            name, dims, _ = line.split("\t")
            shape = [int(d) for d in dims.split(",")] if dims else []
            dtype = torch.int64 if name.endswith("num_batches_tracked") else torch.float32
            ts[name] = (torch.randn(shape) if dtype == torch.float32
                        else torch.tensor(3, dtype=torch.int64))
        weights = f"{out}/{model}_weights.safetensors"
        st.write(weights, ts, {"format": "pt"})
        if model == "bn":  # and what cnnc writes: the outputs of a run
            st.write(f"{out}/bn_input.safetensors", {"x": torch.randn(2, 4, 5, 6)})
            subprocess.run([cnnc, "run", path, "--weights", weights, "--input",
                            f"{out}/bn_input.safetensors", "--output",
                            f"{out}/bn_output_cnnc.safetensors"], check=True)
    st.write(f"{out}/input_i32_f64.safetensors",
             {"x": torch.randn(2, 3, 4, 4), "labels": torch.arange(2, dtype=torch.int32),
              "d": torch.randn(3, dtype=torch.float64)})


# The table of fuzz_st_loader.c: name, dtype, shape.
LOADER_TABLE = [
    ("conv1.weight", "F32", [2, 1, 3, 3]), ("conv1.bias", "F32", [2]),
    ("bn1.weight", "F32", [2]), ("bn1.bias", "F32", [2]),
    ("bn1.running_mean", "F32", [2]), ("bn1.running_var", "F32", [2]),
    ("bn1.num_batches_tracked", "I64", []), ("fc.weight", "F32", [3, 4]),
    ("caf\u00e9.scale", "F32", []), ("steps", "I64", [2]),
]


def loader_seeds(out):
    full = [entry(*t) for t in LOADER_TABLE]
    write(f"{out}/exact.safetensors", st_file(full))
    write(f"{out}/exact_sorted_meta.safetensors",
          st_file(sorted(full), metadata={"format": "pt"}))
    write(f"{out}/exact_pretty_reversed.safetensors",
          st_file(full, indent=1, order=lambda ks: ks[::-1]))
    # A checkpoint: cnnc's own tensors ("__" names) beside the model's.
    write(f"{out}/checkpoint.safetensors",
          st_file(full + [entry("__step", "I64", []), entry("__m32", "F32", [41])]))
    write(f"{out}/no_step_counter.safetensors",
          st_file([e for e in full if "num_batches" not in e[0]]))
    near = {
        "missing": full[1:],
        "extra": full + [entry("extra", "F32", [1])],
        "wrong_dtype": [entry("conv1.weight", "F16", [2, 1, 3, 3])] + full[1:],
        "wrong_shape": [entry("conv1.weight", "F32", [2, 9])] + full[1:],
    }
    for name, entries in near.items():
        write(f"{out}/{name}.safetensors", st_file(entries))
    # A name twice (a dict cannot hold it, so it is spelled in afterwards).
    twice = st_file(full + [entry("conv1.bia~", "F32", [2])])
    write(f"{out}/duplicate.safetensors",
          twice.replace(b'"conv1.bia~"', b'"conv1.bias"'))
    # The data section cut short.
    f = bytearray(st_file(full[:1]))
    write(f"{out}/short_data.safetensors", bytes(f[:-4]))


def idx_file(type_code, dims, data):
    return bytes([0, 0, type_code, len(dims)]) + b"".join(
        struct.pack(">I", d) for d in dims) + data


def gz(data):
    return gzip.compress(data, mtime=0)


def idx_seeds(out):
    src = "/usr/share/datasets/fashion-mnist"
    try:
        with gzip.open(f"{src}/t10k-images-idx3-ubyte.gz") as f:
            images = f.read(16 + 3 * 784)
        with gzip.open(f"{src}/t10k-labels-idx1-ubyte.gz") as f:
            labels = f.read(8 + 16)
    except OSError as e:
        print(f"make_seeds: no Fashion-MNIST ({e}); install dataset-fashion-mnist")
        images = labels = None
    if images:
        img = idx_file(8, [3, 28, 28], images[16:])
        lab = idx_file(8, [16], labels[8:])
        write(f"{out}/fashion_images3.idx", img)
        write(f"{out}/fashion_images3.idx.gz", gz(img))
        write(f"{out}/fashion_labels16.idx", lab)
        write(f"{out}/fashion_labels16.idx.gz", gz(lab))
    small = {
        "i8": (0x09, [5], bytes([0x80, 0xFF, 0, 1, 0x7F])),
        "i16": (0x0B, [3, 2], struct.pack(">6h", -2, -1, 0, 1, 2, 300)),
        "i32": (0x0C, [2, 2], struct.pack(">4i", -70000, 0, 1, 2**31 - 1)),
        "f32": (0x0D, [4], struct.pack(">4f", 0.5, -1.25, 3e38, 1e-40)),
        "f64": (0x0E, [2], struct.pack(">2d", 1 / 3, -2.5e300)),
        "u8_4d": (0x08, [1, 2, 2, 2], bytes(range(8))),
        "empty": (0x08, [0, 28], b""),
    }
    for name, (t, dims, data) in small.items():
        write(f"{out}/{name}.idx", idx_file(t, dims, data))
    write(f"{out}/i16.idx.gz", gz(idx_file(*small["i16"])))


def main(argv):
    cnnc = argv[1] if len(argv) > 1 else os.path.join(ROOT, "build", "cnnc")
    seeds = argv[2] if len(argv) > 2 else os.path.join(ROOT, "build", "fuzz", "seeds")
    safetensors_seeds(os.path.join(seeds, "safetensors"), cnnc)
    loader_seeds(os.path.join(seeds, "st_loader"))
    idx_seeds(os.path.join(seeds, "idx"))
    import make_files
    make_files.catalogue(os.path.join(seeds, "hostile"))


if __name__ == "__main__":
    main(sys.argv)
