#!/usr/bin/env bash
# `cachelab encode-prompts`: prompts through the CLIP tokenizer and text encoder into a prompt
# file, checked against the committed reference fixtures (tools/fixtures/clip_text.py): the ids
# of every prompt, the embeddings of the encoded ones, the empty negative prompt, the metadata.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
exe=$1
use_tmp
fx="$root/tests/fixtures"
args=(--tokenizer "$fx/clip_tokenizer" --text-encoder "$fx/clip_text_weights.safetensors" --heads 2)
expect 0 "hugging-face layout, width 32, 2 layers, 2 heads|40 prompts, embeddings [40, 77, 32], 3 truncated to 75 tokens|negative the empty prompt" \
  "the fixture prompts encode" "$exe" encode-prompts --prompts "$fx/clip_prompts.txt" "${args[@]}" --output "$tmp/out/p.safetensors"
expect 0 "ids ok|embeddings ok|negative ok|mask ok|metadata ok" "the file holds the reference ids and embeddings" \
  /usr/bin/python3 - "$tmp/out/p.safetensors" "$fx" "$root/tools/fixtures" <<'PY'
import json, struct, sys
import torch
sys.path.insert(0, sys.argv[3])
import safetensors_io
path, fx = sys.argv[1], sys.argv[2]
out = safetensors_io.read(path)
ref_ids = safetensors_io.read(fx + "/clip_tokenizer_ids.safetensors")["ids"]
data = safetensors_io.read(fx + "/clip_text_data.safetensors")
assert out["ids"].dtype == torch.int64 and torch.equal(out["ids"], ref_ids); print("ids ok")
emb = out["embeddings"]
assert emb.dtype == torch.float32 and tuple(emb.shape) == (40, 77, 32), emb.shape
rows = [next(i for i in range(40) if torch.equal(ref_ids[i], r)) for r in data["ids"]]
err = max(float((emb[i] - h).abs().max() / h.abs().max()) for i, h in zip(rows, data["hidden"]))
assert err < 1e-5, err; print("embeddings ok", err)
assert tuple(out["negative_embeddings"].shape) == (1, 77, 32)
assert float((out["negative_embeddings"][0] - emb[2]).abs().max()) < 1e-6; print("negative ok")  # prompt 2 is ""
assert bool((out["mask"] == 1).all()) and out["mask"].dtype == torch.int64 and tuple(out["negative_mask"].shape) == (1, 77)
print("mask ok")
with open(path, "rb") as fh:
    meta = json.loads(fh.read(struct.unpack("<Q", fh.read(8))[0]))["__metadata__"]
prompts = json.loads(meta["prompts"])
assert len(prompts) == 40 and prompts[2] == "" and meta["text_encoder"] == "clip_text_weights.safetensors", meta
assert meta["tokenizer"] == "clip_tokenizer" and json.loads(meta["negative"]) == "", meta
print("metadata ok")
PY
printf 'a red cube\n\n' > "$tmp/two.txt"
expect 0 "2 prompts|negative \`blurry, low quality\`" "a negative prompt and a blank line (the empty prompt)" \
  "$exe" encode-prompts --prompts "$tmp/two.txt" "${args[@]}" --negative "blurry, low quality" --output "$tmp/two.safetensors"
expect 2 "needs --tokenizer" "--tokenizer is required" \
  "$exe" encode-prompts --prompts "$tmp/two.txt" --text-encoder "$fx/clip_text_weights.safetensors" --output "$tmp/x.safetensors"
expect 2 "holds no CLIP text encoder" "a file that is no text encoder is refused" \
  "$exe" encode-prompts --prompts "$tmp/two.txt" --tokenizer "$fx/clip_tokenizer" --text-encoder "$fx/sd_vae_data.safetensors" --output "$tmp/x.safetensors"
expect 2 "cannot read the prompt file" "a missing prompt file is named" \
  "$exe" encode-prompts --prompts "$tmp/none.txt" "${args[@]}" --output "$tmp/x.safetensors"
expect 2 "width 32 is not divisible by 3 heads" "a head count that does not divide the width is refused" \
  "$exe" encode-prompts --prompts "$tmp/two.txt" --tokenizer "$fx/clip_tokenizer" --text-encoder "$fx/clip_text_weights.safetensors" --heads 3 --output "$tmp/x.safetensors"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
