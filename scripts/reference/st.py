"""Minimal safetensors reader/writer (pure python + torch + numpy).

Format (https://github.com/huggingface/safetensors):
  8 bytes   little-endian u64 N = length of the JSON header
  N bytes   UTF-8 JSON: {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}
            (offsets are relative to the first byte after the header; we pad the header with
            spaces to a multiple of 8 bytes, as the reference implementation does)
  rest      raw little-endian tensor bytes, row-major, packed back to back in header order.

Supported dtypes: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL.
BF16 is handled through torch (bfloat16 viewed as int16 bytes), since numpy has no bfloat16.
"""

import json
import struct
from collections import OrderedDict

import numpy as np
import torch

_TORCH_TO_ST = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}

# numpy dtype used to carry the raw bytes of each safetensors dtype (always little-endian)
_ST_TO_NP = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<i2"),  # reinterpreted as torch.bfloat16 after loading
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().astype("<i2", copy=False).tobytes()
    st = _TORCH_TO_ST[t.dtype]
    return t.numpy().astype(_ST_TO_NP[st], copy=False).tobytes()


def save_file(tensors, path, metadata=None):
    """Write an ordered mapping name -> torch.Tensor to `path` (order is preserved)."""
    header = OrderedDict()
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs = []
    offset = 0
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected torch.Tensor, got {type(t)}")
        if t.dtype not in _TORCH_TO_ST:
            raise TypeError(f"{name}: unsupported dtype {t.dtype}")
        b = _tensor_bytes(t)
        header[name] = {
            "dtype": _TORCH_TO_ST[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(b)],
        }
        blobs.append(b)
        offset += len(b)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((8 - len(hjson) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)


def read_header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n).decode("utf-8")), 8 + n


def load_file(path):
    """Read a safetensors file into an OrderedDict name -> torch.Tensor (header order)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n].decode("utf-8"), object_pairs_hook=OrderedDict)
    base = 8 + n
    out = OrderedDict()
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt = info["dtype"]
        begin, end = info["data_offsets"]
        npdt = _ST_TO_NP[dt]
        shape = tuple(info["shape"])
        count = int(np.prod(shape)) if len(shape) else 1
        if end - begin != count * npdt.itemsize:
            raise ValueError(f"{name}: byte length {end - begin} does not match {dt}{list(shape)}")
        arr = np.frombuffer(data, dtype=npdt, count=count, offset=base + begin).reshape(shape).copy()
        t = torch.from_numpy(arr)
        if dt == "BF16":
            t = t.view(torch.bfloat16)
        out[name] = t
    return out


def load_metadata(path):
    header, _ = read_header(path)
    return header.get("__metadata__", {})


if __name__ == "__main__":  # tiny round-trip self-test
    import os
    import tempfile

    g = torch.Generator().manual_seed(0)
    ts = OrderedDict(
        a=torch.randn(2, 3, generator=g),
        b=torch.randn(4, generator=g).to(torch.float16),
        c=torch.randn(3, 2, generator=g).to(torch.bfloat16),
        d=torch.arange(5, dtype=torch.int64),
        e=torch.arange(3, dtype=torch.int32),
        f=torch.tensor([True, False, True]),
        s=torch.tensor(3.5),
    )
    p = os.path.join(tempfile.mkdtemp(), "t.safetensors")
    save_file(ts, p, {"k": "v"})
    back = load_file(p)
    assert list(back) == list(ts)
    for k in ts:
        assert back[k].dtype == ts[k].dtype and back[k].shape == ts[k].shape, k
        assert torch.equal(back[k], ts[k]), k
    assert load_metadata(p) == {"k": "v"}
    print("st.py round-trip OK")
