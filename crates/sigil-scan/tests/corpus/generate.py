#!/usr/bin/env python3
"""Generates Sigil's model-scanner test corpus and confirms each label in a real loader.

Usage:  [SIGIL_TORCH_PYTHON=/path/to/python-with-torch] [SIGIL_TF_PYTHON=/path/to/python-with-tf] \
        [SIGIL_ONNX_PYTHON=/path/to/python-with-onnx-1.15-and-onnxruntime] \
        [SIGIL_ORT_LEGACY_PYTHON=/path/to/python-with-onnxruntime-1.23] \
        python generate.py [OUT_DIR]          (default: the directory of this script)
Needs:  numpy joblib h5py onnx gguf safetensors jinja2 py7zr, and keras jax jaxlib for real Keras
        samples (all PyPI wheels). PyTorch, TensorFlow and the ONNX loaders run in their own
        interpreters (separate virtualenvs), named by the environment variables.

Every file is written by this script; CI does not regenerate them. Each malicious payload only
creates a marker file named `sigil_marker` in the loader's working directory (a fresh temporary
directory): a label "dangerous" is confirmed when loading the file in its real framework, in a
subprocess, creates the marker; "safe" when loading succeeds without it; "malformed" when the
real loader refuses the file; "suspicious" when the real loader refuses to run it until native
code the file does not carry is registered (the loader exits with NEEDS_CODE, and only after
checking that specific refusal; see ONNX below). Models that *read* a file are confirmed the same
way: the loader first writes 16 random bytes to `sigil_secret`, calls the model, and writes the
marker itself only when the model hands those bytes back. `labels.json` records the loader and
`confirmed`; a sample tried in several loaders records the first that confirms it as `loader` and
what the others did under `other_loaders`.

The committed corpus is generated with all four interpreters:
  SIGIL_TORCH_PYTHON=/tmp/torch-venv/bin/python SIGIL_TF_PYTHON=/tmp/tf-venv/bin/python \
  SIGIL_ONNX_PYTHON=/tmp/onnx-venv/bin/python SIGIL_ORT_LEGACY_PYTHON=/tmp/ort-legacy-venv/bin/python \
  .venv/bin/python crates/sigil-scan/tests/corpus/generate.py
(last run: torch 2.15.0 CPU, tensorflow-cpu 2.21.0, Keras 3.15.1 on jax, onnx 1.15.0 with
onnxruntime 1.32.0, onnxruntime 1.23.2; 109 of 115 labels confirmed). Every sample is written
the same way each run, so a rerun reproduces the corpus byte for byte: zip records (hand-built,
Keras's) carry 1980-01-01, the .tar.gz a zero gzip mtime, the 7z members a fixed time; Keras
models are rewritten without `date_saved` or id()-numbered shared objects, their Dense weights
come from a seeded initializer and their Lambda code is compiled under a fixed file name.

PyTorch (SIGIL_TORCH_PYTHON): the hand-built PyTorch files (zip: `<name>/data.pkl`,
`<name>/data/<key>`, `<name>/version`, `<name>/byteorder`, `<name>/.data/serialization_id`, all
stored; legacy: five pickles then raw storages; legacy tar: `sys_info`, `pickle`, `tensors`,
`storages` with real storage and tensor records) are confirmed by `torch.load(f,
weights_only=False)`; `benign/pytorch/torch_save.pt` (a small state_dict) and two payload files
are written by `torch.save` itself (zip64 end records, data descriptors), the benign one confirmed
with `weights_only=True`. The zip differentials follow what torch's reader (miniz) does, checked
against torch 2.15: it does not verify CRCs (`bad_crc_payload.pt` runs; `malformed/.../bad_crc.pt`
is refused only because its flipped byte breaks the pickle), it follows the central directory's
name and flags (`name_mismatch.pt` and `local_encrypted_flag.pt` run; it refuses a member flagged
encrypted there), it prefers the zip64 record over the 32-bit end record (`zip64_disagree.pt`),
and it names every record after the first member's directory (`prefix_data.pt`, saved as
`data.pt`). TorchScript samples are real `torch.jit.script` + `torch.jit.save` archives (a tiny
module; `torch.from_file` reading `sigil_secret`; `torch.save` writing the marker; the same
archive with `ops.aten.from_file(..., shared=True)` creating it), confirmed by `torch.jit.load`
and a call. Without SIGIL_TORCH_PYTHON the PyTorch files are confirmed by an emulation (an
Unpickler whose `persistent_load` returns the storage key, as torch does, over Python's zipfile);
the differentials where zipfile and miniz disagree, the torch.save files and the real TorchScript
ones are then not produced or not confirmed, and TorchScript falls back to hand-built archives
labelled by construction.

TensorFlow (SIGIL_TF_PYTHON): SavedModels are written by `tf.saved_model.save` of a `tf.Module`
(matmul; `tf.io.write_file` of the marker; `tf.io.read_file` of `sigil_secret`; `tf.print` to
`file://sigil_marker`), each with its small `variables/` checkpoint (which `tf.saved_model.load`
needs; its files are confirmed by `tf.train.load_checkpoint`); the benign one keeps
`fingerprint.pb` with its random uuid fixed. Confirmed by `tf.saved_model.load` and a call; the
malformed sample is the benign `saved_model.pb` cut in half. Without SIGIL_TF_PYTHON they are
hand-encoded protobufs labelled by construction.

Keras samples are real models saved by Keras 3 (jax backend) when it is installed, confirmed with
`keras.saving.load_model(safe_mode=False)`.

ONNX (SIGIL_ONNX_PYTHON: onnx==1.15.0, the last release before the external-data traversal fix
for CVE-2024-27318, and a current onnxruntime; SIGIL_ORT_LEGACY_PYTHON: onnxruntime==1.23.2, a
release from before onnxruntime validated external-data paths, microsoft/onnxruntime#26776). The
samples are written by the onnx in this interpreter (IR version 8, opset 17); benign and
malformed ones are confirmed by its `onnx.load`. The two external-data samples hold an int32[4]
initializer (16 bytes) stored outside the model directory. Their loaders ("onnx.load-external":
`onnx.load(load_external_data=True)`; "onnxruntime[-legacy].InferenceSession": a session and a run
with x = 0, y = x + w) copy the model to model/ in the scratch directory, beside a weights/
subdirectory, with the secret at sigil_secret next to model/, so each location resolves to the
secret and never outside the scratch directory:
- external_escape: `weights/../../sigil_secret`, the nested form that onnx 1.15's sanitizer
  (`lstrip("/.")`, its CVE-2022-25882 fix) lets through; it needs a directory inside the model's
  (here weights/). onnx 1.15 and onnxruntime 1.23.2 read the secret (confirmed by onnx.load);
  onnxruntime 1.32 refuses the path, and so does onnx 1.23 (the generating interpreter). A plain
  `../sigil_secret` would be read by onnxruntime 1.23.2 only: onnx 1.15 strips the leading `../`.
- external_absolute: `/proc/self/cwd/sigil_secret`, an absolute path that resolves to the loading
  process's working directory (Linux). onnxruntime 1.23.2 reads it (confirmed by it); onnx 1.15
  strips the leading `/` and looks inside the model directory; onnxruntime 1.32 refuses
  absolute locations.
- custom_domain ("suspicious"): an Add node in domain `evil.custom`. onnx.load only parses it;
  confirmed when onnxruntime refuses to create a session with "evil.custom:Add(...) is not a
  registered function/op" (the op needs a custom-op library, i.e. native code) and the same graph
  with the domain cleared builds and runs, so nothing else in the model is at fault.
Without SIGIL_ONNX_PYTHON the custom-domain sample stays labelled by construction, and so does
each external-data sample when none of the loaders expected to read it is available (without
SIGIL_ORT_LEGACY_PYTHON, external_absolute).

Labelled by construction ("confirmed": false), and why:
- malicious/savedmodel/pyfunc: `EagerPyFunc` calls a Python function registered in the process
  that traced the graph; a SavedModel cannot carry it, so a fresh process fails the call.
- malicious/keras/nested_module: Keras 3.15 imports only keras/keras_hub/keras_cv/keras_nlp
  modules named in a config and refuses the file; older Keras imported any module named there.
- malformed/archive/duplicate_names, prepended; malformed/safetensors/duplicate_key;
  malicious/archive/zip_slip: parser differentials and extraction escapes that Python's zipfile,
  safetensors and zipfile's extractall accept or neutralise: no installed loader misbehaves on
  them, the label is the finding itself.
"""

import base64
import bz2
import collections
import gzip
import io
import json
import lzma
import marshal
import math
import os
import pickle
import re
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
TORCH = None  # a Framework when SIGIL_TORCH_PYTHON is set (see main)
TF = None  # a Framework when SIGIL_TF_PYTHON is set
ONNX = None  # a Framework (onnx + onnxruntime) when SIGIL_ONNX_PYTHON is set
ORT_LEGACY = None  # a Framework (onnxruntime) when SIGIL_ORT_LEGACY_PYTHON is set
NEEDS_CODE = 3  # LOADER's exit status: the loader refused the file until native code is registered


def path(rel):
    p = os.path.join(OUT, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    return p


def put(rel, data, label, fmt, loader, confirm=True):
    with open(path(rel), "wb") as f:
        f.write(data)
    LABELS[rel] = {"label": label, "format": fmt, "loader": loader, "confirmed": None if confirm else False}


class FixedZip(zipfile.ZipFile):
    """zipfile.ZipFile whose writestr(name, ...) stamps 1980-01-01 00:00 instead of the time of the
    run (otherwise the same record: the archive's compression, mode 0600), so a rerun rewrites
    every zip byte for byte."""

    def writestr(self, zinfo_or_arcname, data, compress_type=None, compresslevel=None):
        if isinstance(zinfo_or_arcname, str):
            zi = zipfile.ZipInfo(zinfo_or_arcname, date_time=(1980, 1, 1, 0, 0, 0))
            zi.external_attr = 0o600 << 16
            zinfo_or_arcname = zi
            compress_type = self.compression if compress_type is None else compress_type
            compresslevel = self.compresslevel if compresslevel is None else compresslevel
        super().writestr(zinfo_or_arcname, data, compress_type, compresslevel)


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
    """torch.save's zip format: ("storage", type, key, location, numel)."""

    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", _fake("torch", "FloatStorage"), obj.key, "cpu", obj.n)
        return None


class _LegacyPickler(pickle.Pickler):
    """The legacy (non-tar) format adds view metadata: ("storage", type, key, location, numel, None)."""

    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", _fake("torch", "FloatStorage"), obj.key, "cpu", obj.n, None)
        return None


class _TensorRef:
    """The legacy tar format refers to tensors from its `tensors` record by key."""

    def __init__(self, key):
        self.key = key


class _TarPickler(pickle.Pickler):
    def persistent_id(self, obj):
        return str(obj.key) if isinstance(obj, _TensorRef) else None


class _RebuildTensor:
    def __init__(self, key, shape):
        self.key, self.shape = key, shape

    def __reduce__(self):
        stride = tuple(math.prod(self.shape[i + 1:]) for i in range(len(self.shape)))
        return (_fake("torch._utils", "_rebuild_tensor_v2"),
                (_Storage(self.key, math.prod(self.shape)), 0, self.shape, stride, False, collections.OrderedDict()))


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


def torch_pickle(obj, pickler=_TorchPickler):
    b = io.BytesIO()
    pickler(b, protocol=2).dump(obj)
    return b.getvalue()


def torch_zip(data_pkl, name="archive", storages=(("0", 16),)):
    records = [("data.pkl", data_pkl), ("byteorder", b"little")]
    records += [(f"data/{key}", b"\x00" * n) for key, n in storages]
    records += [("version", b"3\n"), (".data/serialization_id", b"1234567890")]
    b = io.BytesIO()
    with FixedZip(b, "w", zipfile.ZIP_STORED) as z:
        for n, d in records:
            # a fixed timestamp: the same bytes on every run
            z.writestr(zipfile.ZipInfo(f"{name}/{n}", date_time=(1980, 1, 1, 0, 0, 0)), d)
    return b.getvalue()


def _central(z, name):
    """Offset of the central directory entry for `name`."""
    i = z.find(b"PK\x01\x02")
    while i >= 0:
        nlen = struct.unpack_from("<H", z, i + 28)[0]
        if z[i + 46:i + 46 + nlen] == name:
            return i
        i = z.find(b"PK\x01\x02", i + 1)
    raise KeyError(name)


def zip64_disagree(shown, hidden):
    """One archive, two central directories: the end record's 32-bit fields point at `shown`'s,
    the zip64 record (which miniz, so torch, and Python's zipfile both prefer) at `hidden`'s."""
    def split(z):
        e = z.rfind(b"PK\x05\x06")
        n, size, off = struct.unpack_from("<HII", z, e + 10)
        return z[:off], z[off:off + size], n
    l1, c1, n1 = split(shown)
    l2, c2, n2 = split(hidden)
    c2 = bytearray(c2)
    i = 0
    while i < len(c2):
        nlen, xlen, clen = struct.unpack_from("<HHH", c2, i + 28)
        struct.pack_into("<I", c2, i + 42, struct.unpack_from("<I", c2, i + 42)[0] + len(l1))
        i += 46 + nlen + xlen + clen
    body = l1 + l2
    cd1 = len(body)
    body += c1
    cd2 = len(body)
    body += bytes(c2)
    z64 = len(body)
    body += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, n2, n2, len(c2), cd2)
    body += struct.pack("<IIQI", 0x07064B50, 0, z64, 1)
    body += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n1, n1, len(c1), cd1, 0)
    return body


def legacy_tar(pickle_member, views=None):
    """torch's legacy tar: `storages` (count, (key, location, type) + raw storage, views),
    `tensors` (count, (key, storage id, type) + raw ndim/sizes/strides/offset), `pickle`."""
    storages = (pickle.dumps(1, protocol=2) + pickle.dumps((1, "cpu", _fake("torch", "FloatStorage")), protocol=2)
                + struct.pack("<q", 4) + struct.pack("<4f", 1, 2, 3, 4)
                + (views if views is not None else pickle.dumps([], protocol=2)))
    tensors = (pickle.dumps(1, protocol=2) + pickle.dumps((2, 1, None), protocol=2)
               + struct.pack("<ii", 2, 0) + struct.pack("<2q", 2, 2) + struct.pack("<2q", 2, 1) + struct.pack("<q", 0))
    return tar([("sys_info", pickle.dumps({"protocol_version": 1001, "little_endian": True, "type_sizes": {}}, protocol=2)),
                ("pickle", pickle_member), ("tensors", tensors), ("storages", storages)])


def tar(members):
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for n, d in members:
            ti = tarfile.TarInfo(n)
            ti.size = len(d)
            t.addfile(ti, io.BytesIO(d))
    return b.getvalue()


def gen_torch():
    real = TORCH is not None
    # With SIGIL_TORCH_PYTHON every sample below is confirmed by torch.load(weights_only=False)
    # itself; without it, by the emulation in LOADER (Python's zipfile and pickle), and the zip
    # differentials, where the two disagree, are left unconfirmed.
    zl, ll, tl = ("torch.load",) * 3 if real else ("torch-zip", "torch-legacy", "tar-pickle")
    state = {"weight": _RebuildTensor("0", (2, 2))}
    benign = torch_pickle(state)
    put("benign/pytorch/model.pt", torch_zip(benign), "safe", "pytorch-zip", zl)
    put("benign/pytorch/model.bin", torch_zip(benign, name="pytorch_model"), "safe", "pytorch-zip", zl)
    evil = torch_pickle({"weight": _RebuildTensor("0", (2, 2)), "x": ExecMarker()})
    put("malicious/pytorch/exec.pth", torch_zip(evil), "dangerous", "pytorch-zip", zl)
    put("malicious/pytorch/system.bin", torch_zip(torch_pickle([SystemMarker()])), "dangerous", "pytorch-zip", zl)
    # A flipped byte in data.pkl: zipfile refuses the CRC; torch (miniz built without CRC
    # checks) reads the damaged pickle and its unpickler refuses it.
    z = bytearray(torch_zip(benign))
    i = z.find(b"archive/data.pkl") + len("archive/data.pkl")
    z[i + 5] ^= 0xFF
    put("malformed/pytorch/bad_crc.pt", bytes(z), "malformed", "pytorch-zip", zl)
    # A wrong CRC over an intact payload: zipfile refuses the member, torch loads it and runs it.
    z = bytearray(torch_zip(evil))
    z[14:18] = bytes(b ^ 0xFF for b in z[14:18])
    c = _central(z, b"archive/data.pkl")
    z[c + 16:c + 20] = bytes(b ^ 0xFF for b in z[c + 16:c + 20])
    put("malicious/pytorch/bad_crc_payload.pt", bytes(z), "dangerous", "pytorch-zip", zl, confirm=real)
    # Local header names data.txt, the central directory data.pkl: zipfile refuses, miniz (torch)
    # follows the central directory and runs the payload.
    z = bytearray(torch_zip(evil))
    i = z.find(b"archive/data.pkl")
    z[i:i + 16] = b"archive/data.txt"
    put("malicious/pytorch/name_mismatch.pt", bytes(z), "dangerous", "pytorch-zip", zl, confirm=real)
    # Encryption flag on data.pkl in both headers: neither reader decrypts; nothing runs.
    z = bytearray(torch_zip(evil))
    z[6] |= 1
    z[_central(z, b"archive/data.pkl") + 8] |= 1
    put("malformed/pytorch/encrypted_flag.pt", bytes(z), "malformed", "pytorch-zip", zl)
    # Encryption flag only in the local header: both readers go by the central directory and run it.
    z = bytearray(torch_zip(evil))
    z[6] |= 1
    put("malicious/pytorch/local_encrypted_flag.pt", bytes(z), "dangerous", "pytorch-zip", zl)
    # The end record's 32-bit fields name a benign directory, the zip64 record one with the payload.
    put("malicious/pytorch/zip64_disagree.pt", zip64_disagree(torch_zip(benign), torch_zip(evil)), "dangerous", "pytorch-zip", zl)
    put("malformed/pytorch/truncated.pt", torch_zip(benign)[:200], "malformed", "zip", zl)
    # legacy (torch < 1.6) format: magic, protocol, sys_info, object, storage keys, raw storages
    magic = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
    legacy_hdr = magic + pickle.dumps(1001, protocol=2) + pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2)
    put("benign/pytorch/legacy.pt", legacy_hdr + torch_pickle(state, _LegacyPickler) + pickle.dumps(["0"], protocol=2) + struct.pack("<q", 4) + b"\0" * 16,
        "safe", "pytorch-legacy", ll)
    put("malicious/pytorch/legacy.pt", legacy_hdr + torch_pickle([ExecMarker()], _LegacyPickler) + pickle.dumps([], protocol=2),
        "dangerous", "pytorch-legacy", ll)
    # legacy tar
    b = io.BytesIO()
    _TarPickler(b, protocol=2).dump({"weight": _TensorRef(2)})
    put("benign/pytorch/legacy_tar.pt", legacy_tar(b.getvalue()), "safe", "pytorch-legacy-tar", tl)
    put("malicious/pytorch/legacy_tar.pt", legacy_tar(pickle.dumps(ExecMarker(), protocol=2)), "dangerous", "pytorch-legacy-tar", tl)
    # The payload in the storage-views pickle, after raw storage bytes: torch unpickles it before
    # it opens `pickle` (the emulation never reads it, hence confirmed only by torch).
    put("malicious/pytorch/legacy_tar_views.pt", legacy_tar(b.getvalue(), views=pickle.dumps(ExecMarker(), protocol=2)),
        "dangerous", "pytorch-legacy-tar", tl, confirm=real)
    put("malicious/archive/tar_slip.tar", tar([("../../evil.pkl", pickle.dumps([1], protocol=2))]), "dangerous", "tar", "tar-slip")
    if real:
        # Written by torch.save itself (zip64 end records, data descriptors, 64-byte aligned
        # records): a small state_dict, the same with a payload, and one saved as `data.pt`, whose
        # records all sit under `data/` like its tensor storages.
        built = TORCH.built
        put("benign/pytorch/torch_save.pt", built["torch_save.pt"], "safe", "pytorch-zip", "torch.load-weights-only")
        put("malicious/pytorch/torch_save_exec.pt", built["torch_save_exec.pt"], "dangerous", "pytorch-zip", "torch.load")
        put("malicious/pytorch/prefix_data.pt", built["data.pt"], "dangerous", "pytorch-zip", "torch.load")


# --- TorchScript ---------------------------------------------------------------------------------

def gen_torchscript():
    if TORCH is None:
        # Hand-built in the TorchScript layout, labelled by construction.
        benign = torch_pickle({"weight": _RebuildTensor("0", (2, 2))})

        def archive(code):
            b = io.BytesIO()
            with FixedZip(b, "w", zipfile.ZIP_STORED) as z:
                z.writestr("m/data.pkl", benign)
                z.writestr("m/constants.pkl", pickle.dumps((), protocol=2))
                z.writestr("m/code/__torch__/m.py", code)
                z.writestr("m/version", b"8\n")
            return b.getvalue()

        put("benign/torchscript/model.pt", archive("def forward(self, x):\n    return torch.relu(x)\n"),
            "safe", "torchscript", "torchscript", confirm=False)
        d = archive("def forward(self, x):\n    y = torch.ops.aten.from_file(\"/etc/passwd\", None, 10)\n    return x\n")
        put("malicious/torchscript/from_file.pt", d, "dangerous", "torchscript", "torchscript", confirm=False)
        put("malformed/torchscript/truncated.pt", d[: len(d) // 2], "malformed", "zip", "torchscript", confirm=False)
        return
    # Real archives from torch.jit.script + torch.jit.save (TORCH_BUILD), confirmed by
    # torch.jit.load and a call (LOADER "torch.jit.load").
    built = TORCH.built
    put("benign/torchscript/model.pt", built["ts_model.pt"], "safe", "torchscript", "torch.jit.load")
    put("malicious/torchscript/from_file.pt", built["ts_from_file.pt"], "dangerous", "torchscript", "torch.jit.load")
    put("malicious/torchscript/save.pt", built["ts_save.pt"], "dangerous", "torchscript", "torch.jit.load")
    put("malicious/torchscript/ops_aten_from_file.pt", built["ts_ops_aten.pt"], "dangerous", "torchscript", "torch.jit.load")
    d = built["ts_model.pt"]
    put("malformed/torchscript/truncated.pt", d[: len(d) // 2], "malformed", "zip", "torch.jit.load")


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
    # IR version 8 (what opset 17 came with) rather than the generating onnx's newest: the same
    # bytes whatever onnx writes them, and loadable by older runtimes.
    def model(init, domain="", opsets=None, dtype=TensorProto.FLOAT, n=2):
        node = helper.make_node("Add", ["x", "w"], ["y"], domain=domain)
        g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", dtype, [n])],
                              [helper.make_tensor_value_info("y", dtype, [n])], [init])
        return helper.make_model(g, opset_imports=opsets or [helper.make_opsetid("", 17)], ir_version=8)
    w = helper.make_tensor("w", TensorProto.FLOAT, [2], [1.0, 2.0])
    put("benign/onnx/model.onnx", model(w).SerializeToString(), "safe", "onnx", "onnx")
    # External data that points outside the model directory: 16 bytes (int32[4], y = x + w, so a
    # run with x = 0 hands them back). The loader (LOADER "onnx.load-external",
    # "onnxruntime.InferenceSession") copies the model to model/ in its scratch directory, next to
    # a weights/ subdirectory, and puts the random secret at sigil_secret beside model/: both
    # locations resolve to that secret, never to a file outside the scratch directory.
    #  - weights/../../sigil_secret: the nested form (CVE-2024-27318) that onnx <= 1.15's
    #    lstrip("/.") sanitizer lets through; it needs a directory in the model's directory.
    #  - /proc/self/cwd/sigil_secret: absolute; /proc/self/cwd is the loading process's working
    #    directory (Linux), which the loader makes its scratch directory.
    # Each is tried in every ONNX loader available, those expected to read the file first: the
    # label is confirmed by the first that does, the others' outcomes are recorded. With none of
    # the expected ones available it stays labelled by construction.
    available = {"onnx.load-external": ONNX, "onnxruntime-legacy.InferenceSession": ORT_LEGACY,
                 "onnxruntime.InferenceSession": ONNX}
    for rel, loc, readers in [
            ("malicious/onnx/external_escape.onnx", "weights/../../sigil_secret",
             ["onnx.load-external", "onnxruntime-legacy.InferenceSession"]),
            ("malicious/onnx/external_absolute.onnx", "/proc/self/cwd/sigil_secret",
             ["onnxruntime-legacy.InferenceSession"])]:
        ext = TensorProto(); ext.name = "w"; ext.data_type = TensorProto.INT32; ext.dims.extend([4])
        ext.data_location = TensorProto.EXTERNAL
        e = ext.external_data.add(); e.key = "location"; e.value = loc
        data = model(ext, dtype=TensorProto.INT32, n=4).SerializeToString()
        order = [l for l in readers + [l for l in available if l not in readers] if available[l] is not None]
        if any(l in readers for l in order):
            put(rel, data, "dangerous", "onnx", order[0])
            LABELS[rel]["try"] = order
        else:
            put(rel, data, "dangerous", "onnx", "onnx-external", confirm=False)
    # A node from a custom domain: onnx.load only parses it; onnxruntime refuses to build a session
    # until a custom-op library (native code) registers the op. Confirmed when it refuses with that
    # error and the same graph with the domain cleared runs (LOADER "onnxruntime.InferenceSession").
    m = model(w, domain="evil.custom", opsets=[helper.make_opsetid("", 17), helper.make_opsetid("evil.custom", 1)])
    if ONNX is not None:
        put("malicious/onnx/custom_domain.onnx", m.SerializeToString(), "suspicious", "onnx", "onnxruntime.InferenceSession")
    else:
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
    with FixedZip(b, "w") as z:
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
        def marker():
            # Compiled under a fixed name: the marshalled code Keras stores carries its file name
            # and line, which must not depend on where this script lies or how it is laid out.
            return eval(compile(f"lambda x: (open({MARK!r}, 'w').close(), x)[1]", "<sigil-corpus>", "eval"))
        def dense():  # seeded: the same weights every run
            return keras.layers.Dense(2, kernel_initializer=keras.initializers.GlorotUniform(seed=0))
        for rel, layers, label in [
            ("benign/keras/model.keras", [dense()], "safe"),
            ("malicious/keras/lambda.keras", [dense(), keras.layers.Lambda(marker())], "dangerous"),
            ("benign/keras/model.h5", [dense()], "safe"),
            ("malicious/keras/lambda.h5", [keras.layers.Lambda(marker())], "dangerous"),
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
            if rel.endswith(".keras"):
                _fix_keras_zip(p)
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
    # Keras refuses it (config.json is not JSON); without Keras, only zipfile + json stand in.
    put("malformed/keras/bad_config.keras", _keras_bad(), "malformed", "keras", "keras" if keras is not None else "zipfile")


def _fix_keras_zip(p):
    """Rewrites a .keras zip as Keras would with nothing that varies between runs: Keras stamps
    model.weights.h5 with the time of the run, metadata.json with `date_saved`, and numbers the
    shared objects in config.json by their id() (renumbered 1, 2, ... in order of appearance)."""
    with zipfile.ZipFile(p) as z:
        members = [(i.filename, i.compress_type, z.read(i)) for i in z.infolist()]
    ids = {}
    with FixedZip(p, "w") as z:
        for name, compress, data in members:
            if name == "config.json":
                data = re.sub(rb'"shared_object_id": (\d+)',
                              lambda m: b'"shared_object_id": %d' % ids.setdefault(m.group(1), len(ids) + 1), data)
            elif name == "metadata.json":
                meta = json.loads(data)
                meta["date_saved"] = "1980-01-01@00:00:00"
                data = json.dumps(meta).encode()
            z.writestr(name, data, compress)


def _keras_bad():
    b = io.BytesIO()
    with FixedZip(b, "w") as z:
        z.writestr("config.json", "{not json")
        z.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n")
    return b.getvalue()


# --- TF SavedModel ----------------------------------------------------------------------------------

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
    """A hand-encoded SavedModel: one meta graph whose graph_def.node[] holds `ops`."""
    nodes = b"".join(pb_len(1, pb_len(1, f"n{i}".encode()) + pb_len(2, op.encode())) for i, op in enumerate(ops))
    graph = nodes + pb_len(4, _varint(1 << 3 | 0) + _varint(1716))
    meta = pb_len(1, pb_len(4, b"serve")) + pb_len(2, graph)
    return _varint(1 << 3 | 0) + _varint(1) + pb_len(2, meta)


def gen_savedmodel():
    # EagerPyFunc calls a Python function registered in the process that traced the graph; a
    # SavedModel cannot carry that function, so a fresh process fails the call instead of running
    # anything: hand-encoded, labelled by construction.
    put("malicious/savedmodel/pyfunc/saved_model.pb", saved_model(["Const", "EagerPyFunc"]), "dangerous", "tf-savedmodel", "none", confirm=False)
    if TF is None:
        put("benign/savedmodel/saved_model.pb", saved_model(["Placeholder", "MatMul", "Identity"]), "safe", "tf-savedmodel", "none", confirm=False)
        put("malicious/savedmodel/readfile/saved_model.pb", saved_model(["Const", "ReadFile", "Identity"]), "dangerous", "tf-savedmodel", "none", confirm=False)
        put("malformed/savedmodel/saved_model.pb", saved_model(["Const", "WriteFile"])[:-3], "malformed", "tf-savedmodel", "none", confirm=False)
        return
    # Real SavedModels from tf.saved_model.save (TF_BUILD): the ops live in the function library,
    # the graph only calls them through StatefulPartitionedCall. Each directory keeps its
    # variables/ checkpoint (tf.saved_model.load needs it), each file of it confirmed by TF's
    # checkpoint reader; the benign one also keeps fingerprint.pb.
    dirs = {"benign": ("benign/savedmodel", "safe"), "writefile": ("malicious/savedmodel/writefile", "dangerous"),
            "readfile": ("malicious/savedmodel/readfile", "dangerous"),
            "print_to_file": ("malicious/savedmodel/print_to_file", "dangerous")}
    for rel, data in sorted(TF.built.items()):
        src, name = rel.split("/", 1)
        dst, label = dirs[src]
        if name == "saved_model.pb":
            put(f"{dst}/{name}", data, label, "tf-savedmodel", "tf.saved_model.load")
        elif name == "fingerprint.pb":
            put(f"{dst}/{name}", data, "safe", "unknown", "tf.saved_model.read_fingerprint")
        else:
            put(f"{dst}/{name}", data, "safe", "unknown", "tf.train.load_checkpoint")
    d = TF.built["benign/saved_model.pb"]
    put("malformed/savedmodel/saved_model.pb", d[: len(d) // 2], "malformed", "tf-savedmodel", "tf.saved_model.load")


# --- archives ---------------------------------------------------------------------------------------

def gen_archives():
    b = io.BytesIO()
    with FixedZip(b, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("inner/model.pkl", pickle.dumps(SystemMarker(), protocol=2))
    put("malicious/archive/wrapped.zip", b.getvalue(), "dangerous", "zip", "zip-pickle")
    b = io.BytesIO()
    with FixedZip(b, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("inner/model.pkl", pickle.dumps({"a": 1}, protocol=2))
        z.writestr("inner/model2.npy", open(path("benign/numpy/arr.npy"), "rb").read())
    put("benign/archive/wrapped.zip", b.getvalue(), "safe", "zip", "zip-pickle")
    b = io.BytesIO()
    with gzip.GzipFile(fileobj=b, mode="wb", mtime=0) as g, tarfile.open(fileobj=g, mode="w") as t:
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
        with FixedZip(b, "w") as z:
            z.writestr("model.pkl", pickle.dumps([1], protocol=2))
            z.writestr("model.pkl", pickle.dumps([2], protocol=2))
    put("malformed/archive/duplicate_names.zip", b.getvalue(), "malformed", "zip", "none", confirm=False)
    b = io.BytesIO()
    with FixedZip(b, "w") as z:
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
        import py7zr.helpers
        from unittest import mock
        # py7zr stamps writestr members with the time of the run: 1980-01-01 instead.
        fixed = classmethod(lambda cls: cls.from_datetime(315532800.0))
        for rel, obj, label in [("malicious/archive/wrapped.7z", ExecMarker(), "dangerous"), ("benign/archive/wrapped.7z", {"a": 1}, "safe")]:
            with mock.patch.object(py7zr.helpers.ArchiveTimestamp, "from_now", fixed), py7zr.SevenZipFile(path(rel), "w") as z:
                z.writestr(pickle.dumps(obj, protocol=2), "model.pkl")
            LABELS[rel] = {"label": label, "format": "7z", "loader": "7z-pickle", "confirmed": None}
        with open(path("benign/archive/wrapped.7z"), "rb") as f:
            d = f.read()
        put("malformed/archive/truncated.7z", d[:40], "malformed", "7z", "7z-pickle")
    except ImportError:
        pass


def _zip_of(name, data):
    b = io.BytesIO()
    with FixedZip(b, "w", zipfile.ZIP_STORED) as z:
        z.writestr(name, data)
    return b.getvalue()


# --- frameworks in their own interpreters -----------------------------------------------------------

class Framework:
    """A framework in the interpreter an environment variable names (PyTorch, TensorFlow, onnx and
    onnxruntime): it runs LOADER to confirm samples, and builds samples when it has a build script
    (which writes them into a scratch directory). `module` is one module or several joined by "+"."""

    def __init__(self, var, module, script=None):
        self.var, self.module, self.script = var, module, script
        self.python = os.environ[var]
        mods = module.split("+")
        code = f"import {', '.join(mods)}; print(' '.join(m.__version__ for m in ({', '.join(mods)},)))"
        r = subprocess.run([self.python, "-c", code], capture_output=True, text=True, env=QUIET)
        if r.returncode != 0:
            sys.exit(f"{var}={self.python} cannot import {module}:\n{r.stderr[-2000:]}")
        self.version = r.stdout.strip().splitlines()[-1]
        self.built = {}

    def build(self):
        """Runs the build script; `built` maps each written file's relative path to its bytes."""
        if self.script is None:
            return
        with tempfile.TemporaryDirectory() as scratch:
            out = os.path.join(scratch, "out")
            os.mkdir(out)
            # The scratch directory is the working directory: nothing a build step might write
            # lands in the caller's.
            r = subprocess.run([self.python, "-c", self.script, out], cwd=scratch, capture_output=True,
                               text=True, env=QUIET, timeout=600)
            if r.returncode != 0:
                sys.exit(f"building {self.module} samples with {self.python} failed:\n{r.stderr[-3000:]}")
            for root, _, names in os.walk(out):
                for n in names:
                    p = os.path.join(root, n)
                    with open(p, "rb") as f:
                        self.built[os.path.relpath(p, out).replace(os.sep, "/")] = f.read()


QUIET = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}

TORCH_BUILD = r'''
import linecache, os, sys, types, io, zipfile
import torch

out = sys.argv[1]


class ExecMarker:
    def __reduce__(self):
        return (exec, ("open('sigil_marker', 'w').close()",))


def state():
    return {"weight": torch.arange(4, dtype=torch.float32).reshape(2, 2), "bias": torch.zeros(2)}


# torch.save names the archive's top directory after the file.
torch.save(state(), os.path.join(out, "torch_save.pt"))
torch.save({**state(), "x": ExecMarker()}, os.path.join(out, "torch_save_exec.pt"))
torch.save({**state(), "x": ExecMarker()}, os.path.join(out, "data.pt"))

# TorchScript compiles from source it looks up through linecache: a fixed file name keeps the
# archives' debug records free of this machine's paths.
SRC = """
import torch


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.w)


class ReadsFile(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_file("sigil_secret", False, 16, dtype=torch.uint8)


class SavesFile(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch.save(x, "sigil_marker")
        return x


class CreatesFile(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_file("sigil_marker", True, 1, dtype=torch.uint8)
"""
name = "sigil_corpus_torchscript"
linecache.cache[name + ".py"] = (len(SRC), None, SRC.splitlines(True), name + ".py")
mod = types.ModuleType(name)
mod.__file__ = name + ".py"
sys.modules[name] = mod
exec(compile(SRC, name + ".py", "exec"), mod.__dict__)
for fname, cls in [("ts_model.pt", mod.Tiny), ("ts_from_file.pt", mod.ReadsFile), ("ts_save.pt", mod.SavesFile),
                   ("ts_ops_aten.pt", mod.CreatesFile)]:
    torch.jit.save(torch.jit.script(cls()), os.path.join(out, fname))

# The same call spelled ops.aten.from_file, as hand-written TorchScript may: the code record is
# edited and the archive rewritten (stored, same records in the same order).
p = os.path.join(out, "ts_ops_aten.pt")
with zipfile.ZipFile(p) as zin:
    records = [(i.filename, zin.read(i.filename)) for i in zin.infolist()]
b = io.BytesIO()
with zipfile.ZipFile(b, "w", zipfile.ZIP_STORED) as zout:
    for n, d in records:
        if n.endswith(".py"):
            assert b"torch.from_file(" in d
            d = d.replace(b"torch.from_file(", b"ops.aten.from_file(")
        zout.writestr(zipfile.ZipInfo(n, date_time=(1980, 1, 1, 0, 0, 0)), d)
with open(p, "wb") as f:
    f.write(b.getvalue())
'''

TF_BUILD = r'''
import os, shutil, sys
import tensorflow as tf
from tensorflow.core.protobuf import fingerprint_pb2

out = sys.argv[1]
SPEC = [tf.TensorSpec([None, 2], tf.float32)]


class MatMul(tf.Module):
    def __init__(self):
        super().__init__()
        self.w = tf.Variable([[1.0, 2.0], [3.0, 4.0]], name="w")

    @tf.function(input_signature=SPEC)
    def __call__(self, x):
        return tf.matmul(x, self.w)


class WritesFile(tf.Module):
    @tf.function(input_signature=SPEC)
    def __call__(self, x):
        tf.io.write_file("sigil_marker", "sigil")
        return x


class ReadsFile(tf.Module):
    @tf.function(input_signature=SPEC)
    def __call__(self, x):
        return tf.io.read_file("sigil_secret")


class PrintsToFile(tf.Module):
    @tf.function(input_signature=SPEC)
    def __call__(self, x):
        tf.print("sigil", output_stream="file://sigil_marker")
        return x


for name, m in [("benign", MatMul()), ("writefile", WritesFile()), ("readfile", ReadsFile()),
                ("print_to_file", PrintsToFile())]:
    d = os.path.join(out, name)
    tf.saved_model.save(m, d)
    shutil.rmtree(os.path.join(d, "assets"), ignore_errors=True)
    fp = os.path.join(d, "fingerprint.pb")
    if name == "benign":
        # fingerprint.pb holds a random uuid: a fixed one keeps regeneration stable.
        f = fingerprint_pb2.FingerprintDef()
        with open(fp, "rb") as fh:
            f.ParseFromString(fh.read())
        f.uuid = "0"
        with open(fp, "wb") as fh:
            fh.write(f.SerializeToString())
    else:
        os.remove(fp)  # optional; tf.saved_model.load does not need it
'''


# --- label confirmation ------------------------------------------------------------------------------

LOADER = r'''
import sys, os, pickle, io, zipfile, tarfile
kind, f, NEEDS_CODE = sys.argv[1], sys.argv[2], int(sys.argv[3])
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
elif kind == "torch.load":
    import torch
    torch.load(f, weights_only=False)
elif kind == "torch.load-weights-only":
    import torch
    torch.load(f, weights_only=True)
elif kind in ("torch.jit.load", "tf.saved_model.load"):
    # A model that hands back the bytes of a file it was never given has read that file: the
    # marker is then written here, on its behalf. Models that write files write the marker.
    secret = os.urandom(16)
    with open("sigil_secret", "wb") as fh:
        fh.write(secret)
    if kind == "torch.jit.load":
        import torch
        out = torch.jit.load(f)(torch.ones(1, 2))
        got = bytes(out.flatten().tolist()) if out.dtype == torch.uint8 else None
    else:
        import tensorflow as tf
        out = tf.saved_model.load(os.path.dirname(f))(tf.ones([1, 2]))
        got = out.numpy() if out.dtype == tf.string else None
    if got == secret:
        open("sigil_marker", "w").close()
elif kind == "tf.train.load_checkpoint":
    import tensorflow as tf
    r = tf.train.load_checkpoint(os.path.join(os.path.dirname(f), "variables"))
    for name in r.get_variable_to_shape_map():
        r.get_tensor(name)
elif kind == "tf.saved_model.read_fingerprint":
    import tensorflow as tf
    tf.saved_model.experimental.read_fingerprint(os.path.dirname(f))
elif kind in ("onnx.load-external", "onnxruntime.InferenceSession", "onnxruntime-legacy.InferenceSession"):
    # The model is loaded from model/, which also holds a weights/ subdirectory as a shipped model
    # directory may; the secret lies outside it, in this (scratch) working directory. A model whose
    # external data hands back those bytes has read a file outside its directory: the marker is
    # then written here, on its behalf.
    import shutil
    secret = os.urandom(16)
    with open("sigil_secret", "wb") as fh:
        fh.write(secret)
    os.makedirs(os.path.join("model", "weights"))
    f = shutil.copy(f, "model")
    if kind == "onnx.load-external":
        import onnx
        m = onnx.load(f, load_external_data=True)
        got = [t.raw_data for t in m.graph.initializer]
    else:
        import numpy as np, onnxruntime as ort
        dtypes = {"tensor(float)": np.float32, "tensor(int32)": np.int32}
        def run(model):
            s = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
            feed = {i.name: np.zeros(i.shape, dtypes[i.type]) for i in s.get_inputs()}
            return [o.tobytes() for o in s.run(None, feed)]
        try:
            got = run(f)
        except ort.capi.onnxruntime_pybind11_state.Fail as e:
            # Refused because a node's op is in a domain no library registered: running the model
            # needs a custom-op library, native code. Only that refusal is accepted, and only if the
            # same graph with the standard domain runs, so nothing else in the model is broken.
            import onnx
            m = onnx.load(f, load_external_data=False)
            custom = {n.domain for n in m.graph.node} - {"", "ai.onnx", "ai.onnx.ml"}
            if not custom or not any(f"{n.domain}:{n.op_type}(" in str(e) and "is not a registered function/op" in str(e)
                                     for n in m.graph.node if n.domain in custom):
                raise
            for n in m.graph.node:
                if n.domain in custom:
                    n.domain = ""
            keep = [o for o in m.opset_import if o.domain not in custom]
            del m.opset_import[:]
            m.opset_import.extend(keep)
            run(m.SerializeToString())
            sys.exit(NEEDS_CODE)
    if secret in got:
        open("sigil_marker", "w").close()
else:
    sys.exit(f"unknown loader {kind}")
'''


def interpreter(loader):
    """torch.* loaders run in SIGIL_TORCH_PYTHON, tf.* in SIGIL_TF_PYTHON, onnx.* and onnxruntime.*
    in SIGIL_ONNX_PYTHON, onnxruntime-legacy.* in SIGIL_ORT_LEGACY_PYTHON, the rest here."""
    if loader.startswith("torch."):
        return TORCH.python
    if loader.startswith("tf."):
        return TF.python
    if loader.startswith(("onnx.", "onnxruntime.")):
        return ONNX.python
    if loader.startswith("onnxruntime-legacy."):
        return ORT_LEGACY.python
    return sys.executable


def load(loader, rel):
    """Runs LOADER `loader` on `rel` in a fresh scratch directory: (exit status, marker, stderr)."""
    with tempfile.TemporaryDirectory() as d:
        r = subprocess.run([interpreter(loader), "-c", LOADER, loader, os.path.join(OUT, rel), str(NEEDS_CODE)],
                           cwd=d, capture_output=True, timeout=300, env=QUIET)
        return r.returncode, os.path.exists(os.path.join(d, MARK)), r.stderr.decode()


def outcome(rc, marker):
    if marker:
        return "reads it" if rc == 0 else "reads it, then fails"
    return {0: "loads, reads nothing", NEEDS_CODE: "refuses: needs native code"}.get(rc, "refuses")


def confirm():
    """A label is confirmed when its loader does what the label says: "dangerous", the marker
    appears; "safe", it loads without one; "malformed", it refuses the file; "suspicious", it
    refuses to run the file until native code it does not carry is registered (LOADER exits with
    NEEDS_CODE). A label with "try" is run in each of those loaders: the first that confirms it
    becomes its loader, what the others did goes to "other_loaders"."""
    failures = []
    for rel, meta in sorted(LABELS.items()):
        loaders = meta.pop("try", None) or [meta["loader"]]
        if meta["confirmed"] is False or meta["loader"] == "none":
            meta["confirmed"] = False
            continue
        runs = {}
        for loader in loaders:
            rc, marker, err = runs[loader] = load(loader, rel)
            ok = {"dangerous": marker, "safe": rc == 0 and not marker, "malformed": rc != 0 and not marker,
                  "suspicious": rc == NEEDS_CODE and not marker}[meta["label"]]
            if ok:
                meta["loader"] = loader
                break
        if len(loaders) > 1:
            for loader in loaders:
                if loader != meta["loader"] and loader not in runs:
                    runs[loader] = load(loader, rel)
            meta["other_loaders"] = {l: outcome(*runs[l][:2]) for l in loaders if l != meta["loader"]}
        meta["confirmed"] = ok
        if not ok:
            failures.extend(f"{rel}: label {meta['label']} but {l}: rc={rc} marker={marker}: {err[-300:]}"
                            for l, (rc, marker, err) in runs.items())
    return failures


def main():
    for fw in (TORCH, TF, ONNX, ORT_LEGACY):
        if fw is not None:
            fw.build()
            print(f"{fw.module} {fw.version} ({fw.python}): {'samples built, ' if fw.script else ''}labels confirmed in it")
    gen_pickle()
    gen_torch()
    gen_torchscript()
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
    if os.environ.get("SIGIL_TORCH_PYTHON"):
        TORCH = Framework("SIGIL_TORCH_PYTHON", "torch", TORCH_BUILD)
    if os.environ.get("SIGIL_TF_PYTHON"):
        TF = Framework("SIGIL_TF_PYTHON", "tensorflow", TF_BUILD)
    if os.environ.get("SIGIL_ONNX_PYTHON"):
        ONNX = Framework("SIGIL_ONNX_PYTHON", "onnx+onnxruntime")
    if os.environ.get("SIGIL_ORT_LEGACY_PYTHON"):
        ORT_LEGACY = Framework("SIGIL_ORT_LEGACY_PYTHON", "onnxruntime")
    sys.exit(main())
