#!/usr/bin/env bash
# kdseg export: a calibrated student as a TorchScript module, checked in Python (python3-torch):
#   - torch.jit.load reads it with its kdseg.json (preprocessing, classes, temperature, size);
#     on a scan of random CT values, softmax of its forward on the preprocessed slices equals
#     `kdseg predict`'s probabilities of the checkpoint to 1e-5, at two batch sizes;
#   - kdseg takes the file back: `predict --model model.ts` writes the checkpoint's files (to
#     1e-5), `evaluate --model` and `precompute --teacher` run it;
#   - torch.onnx.export of the loaded module gives a model onnx.checker accepts (the ONNX route);
#   - a checkpoint without a preprocessing record, an existing output and a size it was not
#     trained at are refused, naming the file.
#   export_test.sh <kdseg> <work dir>
set -uo pipefail
kdseg=$1
work=$2
here=$(cd "$(dirname "$0")" && pwd)
source "$here/test_lib.sh"
/usr/bin/python3 -c "import torch, nibabel" 2> /dev/null || { echo "python3-torch or python3-nibabel missing"; exit 77; }
start_in "$work"

tiny_store 4 40 6 2  # 40 pixels: not a multiple of 32
tiny_model run 40 12 --fold 0 --task organ-tumor
"$kdseg" calibrate --model run/last.pt --data p.h5 --temperature 1.6 --output cal.pt "${quiet[@]}" > /dev/null ||
  fail "calibrate"
out=$("$kdseg" export --model cal.pt --output model.ts "${quiet[@]}" 2>&1) || fail "export: $out"
grep -q "input \[B,1,40,40\], 3 classes" <<< "$out" || fail "export's summary: $out"

# A scan of random CT values in an axis-aligned RAS grid: its canonical slices are its own planes.
mkdir -p scans
/usr/bin/python3 - << 'PY' || fail "the random scan"
import nibabel as nib, numpy as np
rng = np.random.default_rng(3)
hu = rng.uniform(-150, 250, size=(40, 40, 5)).astype(np.float32)
nib.save(nib.Nifti1Image(hu, np.diag([0.8, 0.8, 2.0, 1.0])), "scans/random.nii.gz")
PY
"$kdseg" predict --model cal.pt --input scans --output pred-ckpt "${quiet[@]}" > /dev/null 2>&1 || fail "predict cal.pt"
"$kdseg" predict --model model.ts --input scans --output pred-ts "${quiet[@]}" > /dev/null 2>&1 ||
  fail "predict model.ts"

/usr/bin/python3 - << 'PY' || fail "Python"
import json, nibabel as nib, numpy as np, torch
files = {"kdseg.json": ""}
module = torch.jit.load("model.ts", _extra_files=files)
meta = json.loads(files["kdseg.json"])
assert meta["classes"] == 3 and meta["input_size"] == 40 and abs(meta["temperature"] - 1.6) < 1e-9, meta
pre = meta["preprocessing"]
assert pre["layout"] == "lits" and pre["task"] == "organ-tumor" and pre["hu_window"] == [-60, 140], pre
assert meta["label_values"] == [0, 1, 2], meta
low, high = pre["hu_window"]
hu = nib.load("scans/random.nii.gz").get_fdata().astype(np.float32)
x = (np.clip(hu, low, high) - low) * (2.0 / (high - low)) - 1.0           # [40,40,5]
slices = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, 2, 0)))[:, None]  # [5,1,40,40]
with torch.no_grad():
    probs = torch.cat([torch.softmax(module(slices[:3]), 1), torch.softmax(module(slices[3:]), 1)]).numpy()
for k in (1, 2):
    kdseg = nib.load(f"pred-ckpt/random_probs_{k}.nii.gz").get_fdata()
    python = np.moveaxis(probs[:, k], 0, 2)
    err = np.abs(kdseg - python).max()
    assert err < 1e-5, (k, err)
    back = nib.load(f"pred-ts/random_probs_{k}.nii.gz").get_fdata()
    assert np.abs(back - kdseg).max() < 1e-5, ("round trip", k, np.abs(back - kdseg).max())
labels = nib.load("pred-ts/random.nii.gz").get_fdata()
assert np.array_equal(labels, nib.load("pred-ckpt/random.nii.gz").get_fdata()), "labels differ"
record = json.load(open("pred-ts/predictions.json"))
assert record["models"][0]["preprocessing_from"] == "the module's kdseg.json", record["models"][0]
assert "exported by kdseg" in record["models"][0]["description"], record["models"][0]
try:
    import onnx, warnings
    warnings.filterwarnings("ignore")  # the exporter's notes on traced constants
except ImportError:
    print("python3-onnx missing: the ONNX route not checked")
else:
    torch.onnx.export(module, slices[:2], "model.onnx", input_names=["slices"], output_names=["logits"],
                      dynamic_axes={"slices": {0: "batch"}, "logits": {0: "batch"}}, opset_version=13)
    onnx.checker.check_model(onnx.load("model.onnx"))
    print("onnx: checked")
print("python: equal to kdseg's")
PY

"$kdseg" evaluate --model model.ts --model cal.pt --data p.h5 --fold 0 --task organ-tumor --output report \
  --no-figures --no-curves --no-surface --bootstrap 10 "${quiet[@]}" > eval.log 2>&1 || fail "evaluate model.ts: $(cat eval.log)"
/usr/bin/python3 - << 'PY' || fail "evaluate's numbers of the module and the checkpoint differ"
import json
models = json.load(open("report/report.json"))["models"]
a, b = (m["summary"] for m in models)
assert abs(a["ece"]["mean"] - b["ece"]["mean"]) < 1e-5 and abs(a["nll"] - b["nll"]) < 1e-5, (a["ece"], b["ece"])
PY
"$kdseg" precompute --teacher model.ts --data p.h5 --output cache --folds 1 --task organ-tumor "${quiet[@]}" \
  > /dev/null 2>&1 || fail "precompute --teacher model.ts"

# Refusals.
out=$("$kdseg" export --model cal.pt --output model.ts "${quiet[@]}" 2>&1) && fail "an existing output was replaced"
grep -q "model.ts: exists" <<< "$out" || fail "no clear refusal: $out"
out=$("$kdseg" export --model cal.pt --output m64.ts --size 64 "${quiet[@]}" 2>&1) && fail "--size 64 was taken"
grep -q "trained on 40-pixel slices" <<< "$out" || fail "--size not explained: $out"
[ ! -e m64.ts ] || fail "m64.ts written after a refusal"
out=$("$kdseg" export --model model.ts --output again.ts "${quiet[@]}" 2>&1) && fail "a TorchScript file was exported"
grep -q "model.ts: not a.*kdseg checkpoint" <<< "$out" || fail "not named: $out"
finish "export: Python's torch.jit.load equals kdseg, the round trip and the ONNX route checked"
