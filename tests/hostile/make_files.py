"""The hostile-file catalogue: writes every bad safetensors and IDX file,
the large absurd models, the valid files around them, and the list of what
cnnc must say about each file (cases.txt), into a directory.

    /usr/bin/python3 tests/hostile/make_files.py DIR

tests/hostile/run.sh runs it at test time (nothing binary is kept in the
tree); tests/fuzz/make_seeds.py takes the bad files as fuzzer seeds. Output
is deterministic. DIR receives:

    safetensors/, idx/   the bad files
    generated/*.cnn      the absurd models too large to keep in the tree,
                         with their expectations in the comment format of
                         tests/hostile/models/*.cnn
    weights.safetensors, input.safetensors, data/
                         valid LeNet-5 weights and input (the good half of
                         each `cnnc run`) and a small valid data set
    cases.txt            one case a line, fields separated by tabs:
                         KIND  FILE  WANT...   (FILE relative to DIR)

KIND is how the file is read: `weights` (cnnc run dsl-examples/lenet5.cnn
--weights FILE with a valid input), `input` (valid weights, --input FILE),
`idx` (the IDX reader, through tests/hostile/idx_read, and cnnc train with
the file as the training images of an otherwise valid data set),
`train-images` or `train-labels` (cnnc train only, the file in that role),
`train-data` (cnnc train, FILE a directory of files that replace those of
the valid data set), `resume` (cnnc train --resume FILE).
The run must exit with status 1, print the file's path and every WANT, and
neither crash nor trip a sanitizer.
"""
import gzip
import json
import os
import random
import struct
import sys

SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
         "I8": 1, "U8": 1, "BOOL": 1}

LENET = [("c1.weight", [6, 1, 5, 5]), ("c1.bias", [6]),
         ("c3.weight", [16, 6, 5, 5]), ("c3.bias", [16]),
         ("f5.weight", [120, 400]), ("f5.bias", [120]),
         ("f6.weight", [84, 120]), ("f6.bias", [84]),
         ("f7.weight", [10, 84]), ("f7.bias", [10])]


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def floats(n, rng):
    return struct.pack(f"<{n}f", *(rng.uniform(-0.1, 0.1) for _ in range(n)))


def raw(header_text, data=b"", length=None):
    """A file from header text (bytes or str) and data; length overrides
    the 8-byte header length field."""
    if isinstance(header_text, str):
        header_text = header_text.encode()
    n = len(header_text) if length is None else length
    return struct.pack("<Q", n) + header_text + data


def st(entries, metadata=None):
    """A well-formed file from [(name, dtype, shape, data)]."""
    header, at = {}, 0
    if metadata:
        header["__metadata__"] = metadata
    blobs = []
    for name, dtype, shape, data in entries:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [at, at + len(data)]}
        at += len(data)
        blobs.append(data)
    text = json.dumps(header, separators=(",", ":"))
    text += " " * (-len(text) % 8)
    return raw(text, b"".join(blobs))


def entry_text(name, dtype, shape, begin, end):
    return (f'"{name}":{{"dtype":"{dtype}","shape":{json.dumps(shape)},'
            f'"data_offsets":[{begin},{end}]}}')


def lenet_weights(rng, skip=()):
    return [(n, "F32", s, floats(numel(s), rng)) for n, s in LENET if n not in skip]


# --- safetensors -------------------------------------------------------------

def utf8_meta(entries):
    """A well-formed file whose metadata value is not UTF-8 (json cannot
    write that, so the bytes are put in afterwards, length kept)."""
    data = st(entries, metadata={"k": "@@"})
    return data.replace(b'"k":"@@"', b'"k":"\xff\xfe"', 1)


def safetensors_cases():
    """[(kind, name, bytes, [wants])]: weights cases break one thing in
    LeNet-5's weights, input cases one thing in its input x[N, 1, 28, 28]."""
    rng = random.Random(7)
    c = []
    c1 = ("c1.weight", "F32", [6, 1, 5, 5])
    c1_bytes = floats(150, rng)
    x_bytes = floats(784, rng)

    def both(name, data, want_w, want_x=None):
        """One file, read both as weights and as an input."""
        c.append(("weights", name, data, want_w))
        c.append(("input", name, data, want_x if want_x is not None else want_w))

    # The file itself.
    both("empty", b"", ["0 bytes", "too short"])
    both("short", b"\x10\x00\x00", ["3 bytes", "too short"])
    hdr = entry_text("x", "F32", [1, 1, 28, 28], 0, 3136)
    both("header_past_end", raw("{" + hdr + "}", x_bytes[:100], length=5000),
         ["5000", "file"])
    both("header_gigabytes", raw("{}", length=4 << 30),
         ["4294967296"])
    both("header_length_max", raw("{}", length=2**64 - 1),
         ["18446744073709551615"])
    both("header_not_json", raw("this is not json at all!", b""), ["header", "'{'"], ["JSON"])
    both("header_not_object", raw("[1, 2, 3]    "), ["object"], ["object"])
    both("header_truncated_json", raw('{"c1.weight":{"dtype":"F32","sha'), ["header"])
    both("header_trailing_text", raw('{} {}'), ["header"])
    # Invalid UTF-8 in a name (a lone continuation byte, an overlong '/').
    both("utf8_invalid", raw(b'{"c1.w\xffeight":{}}'), ["UTF-8"])
    both("utf8_overlong", raw(b'{"\xc0\xaf":{}}   '), ["UTF-8"])
    both("utf8_surrogate_escape", raw('{"\\ud800":{}}   '), ["surrogate"])
    # Deep nesting: 10,000 arrays inside the metadata, 10,000 objects.
    deep = '{"__metadata__":{"k":' + "[" * 10000 + "]" * 10000 + "}}"
    both("json_nested_arrays", raw(deep), ["metadata"], ["nest"])
    deep_obj = '{"a":' * 10000 + "1" + "}" * 10000
    both("json_nested_objects", raw(deep_obj), ["unknown key"], ["nest"])
    # Tensor entries.
    both("dtype_wrong",
         st([("c1.weight", "F16", [6, 1, 5, 5], c1_bytes[:300])]),
         ["c1.weight", "F16", "F32"], ["'x'"])
    both("dtype_unknown",
         raw("{" + entry_text("c1.weight", "Q4", [6, 1, 5, 5], 0, 600) + "}", c1_bytes),
         ["c1.weight", "Q4"], ["Q4"])
    c.append(("input", "x_dtype_f64",
              st([("x", "F64", [1, 1, 28, 28], x_bytes + x_bytes)]), ["x", "F32"]))
    both("shape_vs_bytes",
         raw("{" + entry_text("c1.weight", "F32", [6, 1, 5, 5], 0, 100) + "}   ",
             c1_bytes[:100]),
         ["c1.weight", "100", "600"])
    c.append(("input", "x_shape_vs_bytes",
              raw("{" + entry_text("x", "F32", [1, 1, 28, 28], 0, 3000) + "}",
                  x_bytes[:3000]), ["x", "3000", "3136"]))
    c.append(("weights", "w_shape_wrong",
              st([("c1.weight", "F32", [6, 25], c1_bytes)]), ["c1.weight", "[6, 25]"]))
    c.append(("input", "x_shape_wrong",
              st([("x", "F32", [1, 784], x_bytes)]), ["x", "[N, 1, 28, 28]"]))
    both("shape_negative",
         raw("{" + entry_text("c1.weight", "F32", [6, -1, 5, 5], 0, 600) + "}", c1_bytes),
         ["non-negative integer"], ["negative"])
    both("shape_not_integer",
         raw("{" + entry_text("c1.weight", "F32", [6, 1.5, 5, 5], 0, 600) + "}", c1_bytes),
         ["non-negative integer"], ["integer"])
    big = 2**32
    both("shape_overflow",
         raw("{" + entry_text("c1.weight", "F32", [big, big, big], 0, 600) + "}", c1_bytes),
         ["c1.weight"], ["overflow"])
    both("shape_nine_dims",
         raw("{" + entry_text("c1.weight", "F32", [1] * 9, 0, 4) + "}", c1_bytes[:4]),
         ["c1.weight"], ["dimensions"])
    # A header that declares gigabytes of data in a small file.
    c.append(("weights", "w_declares_gigabytes",
              raw("{" + entry_text("c1.weight", "F32", [6, 1, 5, 5], 0, 4 << 30) + "}",
                  c1_bytes), ["c1.weight", "4294967296", "out of range"]))
    c.append(("input", "x_declares_gigabytes",
              raw("{" + entry_text("x", "F32", [1000000, 1, 28, 28], 0, 3136000000) + "}",
                  x_bytes), ["x", "3136000000"]))
    # data_offsets.
    both("offsets_out_of_range",
         raw("{" + entry_text("c1.weight", "F32", [6, 1, 5, 5], 600, 1200) + "}   ", c1_bytes),
         ["c1.weight", "600", "1200"])
    both("offsets_reversed",
         raw("{" + entry_text("c1.weight", "F32", [6, 1, 5, 5], 600, 0) + "}   ", c1_bytes),
         ["c1.weight", "reversed"])
    both("offsets_huge",
         raw("{" + entry_text("c1.weight", "F32", [6, 1, 5, 5], 2**64 - 600, 2**64 - 1) +
             "}", c1_bytes), ["c1.weight"])
    both("offsets_one_number",
         raw('{"c1.weight":{"dtype":"F32","shape":[6,1,5,5],"data_offsets":[600]}}', c1_bytes),
         ["data_offsets"], ["data_offsets"])
    c.append(("input", "x_offsets_overlap",
              raw("{" + entry_text("x", "F32", [1, 1, 28, 28], 0, 3136) + "," +
                  entry_text("y", "F32", [2], 8, 16) + "}", x_bytes), ["overlap"]))
    c.append(("input", "x_gap",
              raw("{" + entry_text("x", "F32", [1, 1, 28, 28], 0, 3136) + "}",
                  x_bytes + b"\0" * 16), ["3136", "no tensor"]))
    # Names.
    dup = ("{" + entry_text("c1.weight", "F32", [6, 1, 5, 5], 0, 600) + "," +
           entry_text("c1.weight", "F32", [6, 1, 5, 5], 600, 1200) + "}")
    both("duplicate_name", raw(dup, c1_bytes + c1_bytes), ["c1.weight", "twice"],
         ["duplicate", "c1.weight"])
    dupx = ("{" + entry_text("x", "F32", [1, 1, 28, 28], 0, 3136) + "," +
            entry_text("x", "F32", [1, 1, 28, 28], 3136, 6272) + "}")
    c.append(("input", "x_duplicate", raw(dupx, x_bytes + x_bytes), ["duplicate", "x"]))
    both("name_with_nul",
         raw("{" + entry_text("c1.weight\\u0000evil", "F32", [6, 1, 5, 5], 0, 600) + "}",
             c1_bytes), ["c1.weight"], ["NUL"])
    both("name_control_chars",
         raw("{" + entry_text("c1\\u001b[31m.weight", "F32", [6, 1, 5, 5], 0, 600) + "}",
             c1_bytes), ["c1?[31m.weight"], ["'x'"])
    # A valid input plus a tensor whose name is a terminal escape sequence.
    c.append(("input", "x_name_escape_sequence",
              st([("x", "F32", [1, 1, 28, 28], x_bytes),
                  ("\x1b[2J\x1b[31mevil", "F32", [1], b"\0" * 4)]), ["not an input"]))
    c.append(("weights", "w_missing_tensor", st([("c1.weight", "F32", [6, 1, 5, 5], c1_bytes)]),
              ["c1.bias", "missing"]))
    c.append(("weights", "w_unknown_tensor",
              st([("c2.weight", "F32", [1], b"\0" * 4)] + lenet_weights(rng)[:1]),
              ["c2.weight", "no such tensor"]))
    c.append(("input", "x_no_input", st([("y", "F32", [1, 1, 28, 28], x_bytes)]),
              ["'x'"]))
    c.append(("input", "x_no_samples", st([("x", "F32", [0, 1, 28, 28], b"")]),
              ["x", "no samples"]))
    # Metadata and entries of the wrong kind.
    both("metadata_not_string",
         raw('{"__metadata__":{"k":1}}   '), ["metadata"])
    both("entry_unknown_key",
         raw('{"c1.weight":{"dtype":"F32","shape":[6,1,5,5],"data_offsets":[0,600],'
             '"quantization":"q4"}}', c1_bytes), ["unknown key"], ["quantization"])
    both("entry_not_object", raw('{"c1.weight":[1,2,3]}  '), ["'{'"], ["c1.weight"])
    return c


def whole_weight_cases(rng):
    """Cases that need every LeNet tensor (a quarter megabyte each): written
    at test time, not kept."""
    # Two tensors over the same bytes: c1.bias over c1.weight.
    text, at, blobs = [], 0, []
    for name, dtype, shape, data in lenet_weights(rng):
        if name == "c1.bias":
            text.append(entry_text(name, dtype, shape, 0, 24))
            continue
        text.append(entry_text(name, dtype, shape, at, at + len(data)))
        at += len(data)
        blobs.append(data)
    return [
        ("weights", "w_offsets_overlap.safetensors",
         raw("{" + ",".join(text) + "}", b"".join(blobs)), ["c1.bias", "overlap"]),
        # Well formed, but invalid UTF-8 in the metadata.
        ("weights", "w_utf8_in_metadata.safetensors", utf8_meta(lenet_weights(rng)),
         ["UTF-8"]),
    ]


# --- IDX -------------------------------------------------------------------

def idx(type_code, dims, data, magic=None):
    head = bytes(magic) if magic else bytes([0, 0, type_code, len(dims)])
    return head + b"".join(struct.pack(">I", d) for d in dims) + data


def gz(data):
    return gzip.compress(data, mtime=0)


def idx_cases():
    ok = idx(8, [2, 28, 28], bytes(range(256)) * 6 + bytes(32))
    c = [
        ("idx", "empty.idx", b"", ["truncated"]),
        ("idx", "magic_wrong.idx", idx(8, [2, 28, 28], bytes(1568), magic=[0x50, 0x4b, 3, 4]),
         ["not an IDX file", "50 4b 03 04"]),
        ("idx", "type_unknown.idx", idx(0x07, [4], bytes(4)), ["type", "0x07"]),
        ("idx", "zero_dims.idx", bytes([0, 0, 8, 0]), ["0 dimensions"]),
        ("idx", "nine_dims.idx", idx(8, [1] * 9, b"\0"), ["9 dimensions"]),
        ("idx", "header_truncated.idx", bytes([0, 0, 8]), ["truncated", "magic"]),
        ("idx", "dims_truncated.idx", bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0]), ["truncated",
                                                                               "dimensions"]),
        ("idx", "data_truncated.idx", ok[:-100], ["truncated", "1584", "1484"]),
        ("idx", "data_extra.idx", ok + b"\0\0\0", ["more than"]),
        ("idx", "dims_overflow.idx", idx(0x0E, [0xFFFFFFFF] * 4, bytes(8)), ["overflow"]),
        ("idx", "dims_overflow3.idx", idx(0x0D, [0x10000, 0x10000, 0x10000], bytes(8)),
         ["overflow"]),
        ("idx", "declares_gigabytes.idx", idx(8, [60000, 1000, 1000], bytes(64)),
         ["truncated", "60000000016"]),
        ("idx", "declares_gigabytes.idx.gz", gz(idx(8, [60000, 1000, 1000], bytes(4096))),
         ["truncated"]),
        ("idx", "gz_data_truncated.idx.gz", gz(ok[:-100]), ["truncated"]),
        ("idx", "gz_stream_cut.idx.gz", gz(ok)[:-20], ["gzip"]),
        ("idx", "gz_crc_wrong.idx.gz", gz(ok)[:-8] + b"\xde\xad\xbe\xef" + gz(ok)[-4:],
         ["gzip"]),
        ("idx", "gz_garbage.idx.gz", b"\x1f\x8b" + bytes(range(200)), ["gzip"]),
        ("idx", "gz_extra_data.idx.gz", gz(ok + b"\0"), ["continues past"]),
    ]
    bad = bytearray(gz(ok))
    bad[30] ^= 0xFF
    c.append(("idx", "gz_corrupt_block.idx.gz", bytes(bad), ["gzip"]))
    # Well-formed IDX files that are not a data set cnnc train can use.
    c += [
        ("train-images", "train_images_size.idx", idx(8, [64, 2, 2], bytes(64 * 4)),
         ["4 values", "[1, 28, 28]"]),
        ("train-images", "train_images_float.idx", idx(0x0D, [64, 1, 1], bytes(64 * 4)),
         ["unsigned-byte"]),
        ("train-images", "train_images_1d.idx", idx(8, [64], bytes(64)),
         ["unsigned-byte"]),
        ("train-labels", "train_labels_count.idx", idx(8, [63], bytes(63)),
         ["one label per image"]),
        ("train-labels", "train_labels_range.idx", idx(8, [64], bytes(63) + b"\x0a"),
         ["label 10", "10 classes"]),
    ]
    # A data set of no images (and no labels): directories stand for the
    # files that replace the valid ones.
    c.append(("train-data", "train_empty/train-images-idx3-ubyte", idx(8, [0, 28, 28], b""),
              ["no images"]))
    c.append(("train-data", "train_empty/train-labels-idx1-ubyte", idx(8, [0], b""), None))
    return c


# --- files needed at test time ------------------------------------------------

def work_files(out):
    """Valid LeNet-5 weights and input, a small data set, bad checkpoints
    and the large absurd models; returns the lines of their cases."""
    rng = random.Random(1)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "weights.safetensors"), "wb") as f:
        f.write(st(lenet_weights(rng)))
    with open(os.path.join(out, "input.safetensors"), "wb") as f:
        f.write(st([("x", "F32", [2, 1, 28, 28], floats(2 * 784, rng))]))
    # A small valid data set: the first images of Fashion-MNIST.
    src = "/usr/share/datasets/fashion-mnist"
    data = os.path.join(out, "data")
    os.makedirs(data, exist_ok=True)
    for split, n in (("train", 64), ("t10k", 16)):
        try:
            with gzip.open(f"{src}/{split}-images-idx3-ubyte.gz") as f:
                images = f.read(16 + n * 784)[16:]
            with gzip.open(f"{src}/{split}-labels-idx1-ubyte.gz") as f:
                labels = f.read(8 + n)[8:]
        except OSError:  # no dataset-fashion-mnist: synthetic data
            images = bytes((i * 7) & 0xFF for i in range(n * 784))
            labels = bytes(i % 10 for i in range(n))
        with open(os.path.join(data, f"{split}-images-idx3-ubyte"), "wb") as f:
            f.write(idx(8, [n, 28, 28], images))
        with open(os.path.join(data, f"{split}-labels-idx1-ubyte"), "wb") as f:
            f.write(idx(8, [n], labels))
    # Checkpoints for --resume: LeNet-5's weights and SGD momentum, with
    # the optimizer's step or learning rate empty, or a negative epoch.
    lenet_n = sum(numel(s) for _, s in LENET)

    def checkpoint(step_shape=(), lr_shape=(), epoch="1"):
        entries = lenet_weights(rng) + [
            ("__optimizer.m", "F32", [lenet_n], floats(lenet_n, rng)),
            ("__optimizer.step", "I64", list(step_shape), bytes(8 * numel(step_shape))),
            ("__optimizer.lr", "F32", list(lr_shape), struct.pack("<f", 0.01) * numel(lr_shape))]
        return st(entries, metadata={"epoch": epoch})
    work_cases = whole_weight_cases(rng) + [
        ("resume", "resume_step_empty.safetensors", checkpoint(step_shape=[0]),
         ["__optimizer.step"]),
        ("resume", "resume_lr_empty.safetensors", checkpoint(lr_shape=[0]),
         ["__optimizer.lr"]),
        ("resume", "resume_epoch_negative.safetensors", checkpoint(epoch="-5"),
         ["epoch"]),
    ]
    lines = []
    for kind, name, data, wants in work_cases:
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
        lines.append("\t".join([kind, name] + wants))
    gen = os.path.join(out, "generated")
    os.makedirs(gen, exist_ok=True)

    def model(name, head, body, tail="  output y = x\n"):
        text = head + "model m {\n  input x[1, 4, 4]\n" + body + tail + "}\n"
        with open(os.path.join(gen, name + ".cnn"), "w") as f:
            f.write(text)

    located = "# expect-located-error\n"
    model("nested_parens_10000",
          "# An expression in 10,000 parentheses.\n" + located,
          "  n = " + "(" * 10000 + "1" + ")" * 10000 + "\n")
    model("nested_minus_10000", "# 10,000 unary minus signs.\n" + located,
          "  n = " + "-" * 10000 + "1\n")
    model("nested_not_10000", "# 10,000 'not's.\n" + located,
          "  n = " + "not " * 10000 + "true\n")
    model("nested_lists_10000", "# Lists nested 10,000 deep.\n" + located,
          "  n = " + "[" * 10000 + "]" * 10000 + "\n")
    model("nested_calls_10000", "# Calls nested 10,000 deep.\n" + located,
          "  n = " + "len(" * 10000 + "[]" + ")" * 10000 + "\n")
    no_crash = "# expect-no-crash\n"
    model("chain_plus_10000",
          "# A sum of 10,000 terms: a tree 10,000 deep (left-associative).\n" + no_crash,
          "  n = 1" + " + 1" * 10000 + "\n")
    model("chain_plus_100000", "# A sum of 100,000 terms.\n" + no_crash,
          "  n = 1" + " + 1" * 100000 + "\n")
    model("chain_strings_100000", "# A string built from 100,000 pieces.\n" + no_crash,
          '  s = "a"' + ' + "a"' * 100000 + "\n")
    with open(os.path.join(gen, "pipe_30000.cnn"), "w") as f:
        f.write("# A pipe of 30,000 layers: within the 100,000-layer limit; it may\n"
                "# be refused (with a located error) but not crash.\n# expect-no-crash\n"
                "model m {\n  input x[1, 4, 4]\n  output y = x" + " -> relu" * 30000 + "\n}\n")
    with open(os.path.join(gen, "seq_90000.cnn"), "w") as f:
        f.write("# A seq of 90,000 stages: within every limit (100,000 layers), so it\n"
                "# must check quickly.\n# expect-ok\n"
                "model m {\n  input x[1, 4, 4]\n  output y = x -> seq {" + " -> ".join(
                    ["relu"] * 90000) + "}\n}\n")
    with open(os.path.join(gen, "source_17mb.cnn"), "w") as f:
        f.write("# A 17 MB source file: past the 16 MB limit.\n"
                "# expect-message: File too large\n")
        f.write("# " + "x" * 1000 + "\n" * 17000)
        f.write(("#" + " " * 999 + "\n") * 17000)
    with open(os.path.join(gen, "blocks_300_deep.cnn"), "w") as f:
        f.write("# 300 blocks, each calling the next: deeper than the call limit.\n"
                "# expect: 605:15: error: blocks nested more than 200 deep\n"
                "model m {\n  input x[1, 4, 4]\n  output y = x -> b0\n}\n")
        for i in range(299):
            f.write(f"block b{i}(x) {{\n  return x -> b{i + 1}\n}}\n")
        f.write("block b299(x) {\n  return x\n}\n")
    with open(os.path.join(gen, "blocks_exponential.cnn"), "w") as f:
        f.write("# 64 blocks, each calling the one before twice: 2^64 calls, no layers.\n"
                + located)
        f.write("block b0(x) {\n  return x\n}\n")
        for i in range(1, 64):
            f.write(f"block b{i}(x) {{\n  y = b{i - 1}(x)\n  return b{i - 1}(y)\n}}\n")
        f.write("model m {\n  input x[1, 4, 4]\n  output y = x -> b63\n}\n")
    # An import of a FIFO nobody writes to.
    fifo = os.path.join(gen, "fifo.pipe")
    if not os.path.exists(fifo):
        os.mkfifo(fifo)
    with open(os.path.join(gen, "import_fifo.cnn"), "w") as f:
        f.write("# An import of a named pipe that nobody writes to.\n"
                "# expect: 3:8: error: cannot import\n"
                'import "fifo.pipe"\n'
                "model m {\n  input x[1, 4, 4]\n  output y = x\n}\n")
    with open(os.path.join(gen, "long_name.cnn"), "w") as f:
        f.write("# A label of 100,000 characters.\n"
                "# expect: 5:19: error: parameter name 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...' is longer than 255 bytes\n"
                "model m {\n  input x[1, 4, 4]\n  output y = x -> " + "a" * 100000 +
                ": conv(1, k=1)\n}\n")
    return lines


def catalogue(out):
    """The bad safetensors and IDX files; returns the lines of their cases."""
    lines = []
    for kind, name, data, wants in safetensors_cases() + idx_cases():
        sub = "safetensors" if kind in ("weights", "input") else "idx"
        if sub == "safetensors":
            name += ".safetensors"
        path = os.path.join(out, sub, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        if kind == "train-data":
            name = os.path.dirname(name)
            if wants is None:
                continue  # another file of the same case
        lines.append("\t".join([kind, f"{sub}/{name}"] + wants))
    return lines


def main(argv):
    if len(argv) != 2 or argv[1].startswith("-"):
        sys.exit(__doc__)
    lines = catalogue(argv[1]) + work_files(argv[1])
    with open(os.path.join(argv[1], "cases.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv)
