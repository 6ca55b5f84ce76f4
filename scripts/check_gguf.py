"""Checks tiller's steering-vector files against Python's own readers and writers, both ways.

Usage: python3 scripts/check_gguf.py TILLER_BINARY MODEL_DIR VECTOR.safetensors VECTOR.gguf WORK_DIR

1. Reads VECTOR.gguf (written by `tiller derive --gguf`) with PyPI's `gguf` package, llama.cpp's
   own reader: general.architecture "controlvector", controlvector.model_hint the model's
   model_type, controlvector.layer_count (i32 or u32) equal to the number of tensors, each tensor
   direction.N an F32 1-D array of hidden_size values with 1 <= N < num_hidden_layers.
2. Reads VECTOR.safetensors with `safetensors` (numpy): tensors blocks.N.<hook> of (hidden_size,)
   F32, unit norm, the documented metadata keys, and the same values as the GGUF (the GGUF holds
   the vector times --gguf-scale, 1 by default).
3. Writes control vectors with `gguf`'s GGUFWriter, one with layer_count as u32 the way repeng's
   export_gguf does and one with i32 as llama.cpp's cvector-generator does, has `tiller derive
   --from` read each (validated against MODEL_DIR) and write it back as safetensors, and checks
   that the values survived.

Exits non-zero and names every mismatch. Run with build/pyref/bin/python, the private environment
that scripts/reference/make_fixtures.sh (`make fixtures`) builds from
scripts/reference/requirements.txt, where gguf and safetensors are pinned. For example:

    bin/tiller init --config cmd/tiller/testdata/tiny-config.json --out M --seed 1
    bin/tiller derive --model M --pairs joy --layer 1 --out joy.safetensors --gguf joy.gguf
    build/pyref/bin/python scripts/check_gguf.py bin/tiller M joy.safetensors joy.gguf /tmp
"""

import importlib.metadata
import json
import subprocess
import sys

import gguf
import numpy as np
from safetensors import safe_open

problems = []


def check(ok, what):
    if not ok:
        problems.append(what)
        print("FAIL:", what)


def field_value(reader, key):
    f = reader.fields.get(key)
    if f is None:
        return None, None
    return f.contents(), gguf.GGUFValueType(f.types[0]).name


def main():
    tiller, model, st_path, gguf_path, work = sys.argv[1:6]
    with open(f"{model}/config.json") as f:
        cfg = json.load(f)
    d, layers, model_type = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["model_type"]

    # 1. Our GGUF, read by gguf (llama.cpp's reader).
    r = gguf.GGUFReader(gguf_path)
    arch, _ = field_value(r, "general.architecture")
    hint, hint_type = field_value(r, "controlvector.model_hint")
    count, count_type = field_value(r, "controlvector.layer_count")
    check(arch == "controlvector", f"general.architecture is {arch!r}")
    check(hint == model_type and hint_type == "STRING", f"model_hint {hint!r} ({hint_type}), want {model_type!r}")
    check(count_type in ("INT32", "UINT32") and count == len(r.tensors), f"layer_count {count} ({count_type}) for {len(r.tensors)} tensors")
    from_gguf = {}
    for t in r.tensors:
        n = int(t.name.split(".")[1]) if t.name.startswith("direction.") else -1
        check(t.tensor_type == gguf.GGMLQuantizationType.F32, f"{t.name} has type {t.tensor_type.name}")
        check(len(t.shape) == 1 and int(t.shape[0]) == d, f"{t.name} has shape {list(t.shape)}, want [{d}]")
        check(1 <= n < layers, f"{t.name}: block index {n} outside 1..{layers - 1}")
        from_gguf[n] = np.array(t.data, dtype=np.float32)
    print(f"{gguf_path}: gguf {importlib.metadata.version('gguf')} reads arch={arch} hint={hint} layer_count={count} ({count_type}), tensors {sorted(r.tensors[i].name for i in range(len(r.tensors)))}")

    # 2. Our safetensors, read by safetensors.
    with safe_open(st_path, framework="numpy") as f:
        meta = f.metadata()
        for key in ("format", "hook", "model", "model_shape", "hidden_size", "method", "positions", "pairs_sha256", "mean_norm"):
            check(key in meta, f"{st_path}: metadata lacks {key}")
        check(meta.get("format") == "tiller-steering-vector/1", f"format {meta.get('format')!r}")
        norms = json.loads(meta.get("mean_norm", "{}"))
        for name in f.keys():
            v = f.get_tensor(name)
            layer = int(name.split(".")[1])
            check(name == f"blocks.{layer}.{meta.get('hook')}", f"tensor name {name}")
            check(v.dtype == np.float32 and v.shape == (d,), f"{name}: {v.dtype} {v.shape}")
            check(abs(float(np.linalg.norm(v)) - 1) < 1e-5, f"{name}: norm {np.linalg.norm(v)}")
            check(str(layer) in norms and norms[str(layer)] > 0, f"{name}: no mean_norm")
            n = layer if meta.get("hook") == "hook_resid_post" else layer - 1
            check(n in from_gguf and np.array_equal(from_gguf[n], v), f"{name}: GGUF direction.{n} differs from the safetensors values")
        print(f"{st_path}: safetensors reads {list(f.keys())}, metadata keys {sorted(meta)}")

    # 3. GGUFs written by gguf, read by tiller: layer_count as u32 (repeng) and as i32 (llama.cpp).
    rng = np.random.default_rng(7)
    want = {n: rng.standard_normal(d).astype(np.float32) for n in range(1, layers)}
    for count_type in ("uint32", "int32"):
        py_gguf = f"{work}/python-{count_type}.gguf"
        w = gguf.GGUFWriter(py_gguf, "controlvector")
        w.add_string("controlvector.model_hint", model_type)
        getattr(w, f"add_{count_type}")("controlvector.layer_count", len(want))
        for n, v in want.items():
            w.add_tensor(f"direction.{n}", v)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        back = f"{work}/python-{count_type}.safetensors"
        run = subprocess.run([tiller, "derive", "--from", py_gguf, "--model", model, "--out", back], capture_output=True, text=True)
        print(f"tiller derive --from {py_gguf}: exit {run.returncode}\n{run.stdout}{run.stderr}", end="")
        check(run.returncode == 0, f"tiller could not read the GGUF that gguf wrote with a {count_type} layer_count")
        if run.returncode == 0:
            with safe_open(back, framework="numpy") as f:
                for n, v in want.items():
                    name = f"blocks.{n}.hook_resid_post"
                    check(name in f.keys() and np.array_equal(f.get_tensor(name), v), f"{name}: values changed on the way through tiller ({count_type} layer_count)")

    print("OK" if not problems else f"{len(problems)} problems")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
