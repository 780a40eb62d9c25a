#!/usr/bin/env python3
"""Writes a cachelab prompt file: T5 features of a list of prompts, as PixArt-alpha's
T5Embedder makes them (t5-v1_1-xxl, 120 tokens padded to max_length, attention mask).
Run it where transformers and the T5 encoder are installed (a GPU helps: the encoder has
4.7B parameters); cachelab itself never runs T5.

usage: python3 tools/t5_embed.py PROMPTS.txt OUT.safetensors --t5 PATH/t5-v1_1-xxl
           [--pixart-repo PATH/PixArt-alpha] [--negative "text"] [--max-length 120] [--device cuda]

PROMPTS.txt holds one prompt per line. With --pixart-repo the prompts are cleaned and
embedded by the repository's own diffusion/model/t5.py (T5Embedder, its training-time
caption cleaning; needs ftfy and bs4 too); without it, prompts are lower-cased and stripped
(T5Embedder's use_text_preprocessing=False) and embedded by transformers directly, with the
same tokenizer settings. --negative embeds one negative prompt used for every sample (the
unconditional half of guidance); without it PixArt guides with its stored null caption.

The file (read by the image pipeline: `pipeline: {type: image, prompts: OUT.safetensors}`;
sample i uses prompt i % N):
  embeddings           F32 [N, L, E]   L = max_length (120), E = 4096 for t5-v1_1-xxl
  mask                 I64 [N, L]      1 = real token, 0 = padding
  negative_embeddings  F32 [1, L, E]   only with --negative
  negative_mask        I64 [1, L]
metadata: the prompts (JSON), the encoder path, max_length. Other text encoders (CLIP for
Stable Diffusion, any L and E) write the same layout.

Not tested in cachelab's test suite (transformers and the T5 weights are not available
there); the layout it writes is the one tests/models/test_pixart.cpp reads.
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures"))
import safetensors_io  # noqa: E402


def embedder(args):
    if args.pixart_repo:
        sys.path.insert(0, os.path.abspath(args.pixart_repo))
        from diffusion.model.t5 import T5Embedder
        t5 = T5Embedder(device=args.device, local_cache=True, cache_dir=os.path.dirname(os.path.abspath(args.t5)),
                        dir_or_name=os.path.basename(os.path.abspath(args.t5)), torch_dtype=torch.float,
                        model_max_length=args.max_length)
        return t5.get_text_embeddings
    from transformers import AutoTokenizer, T5EncoderModel
    tok = AutoTokenizer.from_pretrained(args.t5)
    model = T5EncoderModel.from_pretrained(args.t5, torch_dtype=torch.float).to(args.device).eval()

    def embed(texts):
        texts = [t.lower().strip() for t in texts]
        b = tok(texts, max_length=args.max_length, padding="max_length", truncation=True, return_attention_mask=True,
                add_special_tokens=True, return_tensors="pt")
        with torch.no_grad():
            out = model(input_ids=b["input_ids"].to(args.device), attention_mask=b["attention_mask"].to(args.device))
        return out["last_hidden_state"], b["attention_mask"]
    return embed


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("prompts")
    p.add_argument("out")
    p.add_argument("--t5", required=True, help="folder of t5-v1_1-xxl (config, weights, tokenizer)")
    p.add_argument("--pixart-repo", default="", help="PixArt-alpha checkout: use its T5Embedder and caption cleaning")
    p.add_argument("--negative", default=None, help="one negative prompt for every sample")
    p.add_argument("--max-length", type=int, default=120)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=8)
    args = p.parse_args(argv[1:])
    prompts = [line.strip() for line in open(args.prompts, encoding="utf-8") if line.strip()]
    if not prompts:
        raise SystemExit(f"error: {args.prompts} has no prompt (one per line)")
    embed = embedder(args)
    embs, masks = [], []
    for i in range(0, len(prompts), args.batch):
        e, m = embed(prompts[i:i + args.batch])
        embs.append(e.float().cpu())
        masks.append(m.long().cpu())
    data = {"embeddings": torch.cat(embs), "mask": torch.cat(masks)}
    if args.negative is not None:
        e, m = embed([args.negative])
        data["negative_embeddings"], data["negative_mask"] = e.float().cpu(), m.long().cpu()
    meta = {"prompts": json.dumps(prompts), "encoder": os.path.basename(os.path.abspath(args.t5)),
            "max_length": str(args.max_length), "written_by": "tools/t5_embed.py"}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    safetensors_io.write(args.out, data, meta)
    print(f"wrote {args.out}: {len(prompts)} prompts, embeddings {tuple(data['embeddings'].shape)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
