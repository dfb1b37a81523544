#!/usr/bin/env python3
"""Builds tests/data/tiny_chat/tokenizer.json: the Qwen2.5 tokenizer cut down to 1000 ids so
that it fits the golden test models (vocabulary 1000). Ids 0..996 are the first Qwen2.5 BPE
tokens (the 256 byte tokens and the merges that build the next ones), 997..999 the ChatML
special tokens. Run from the repository root."""
import json

src = json.load(open("tests/data/tokenizer/qwen2.5/tokenizer.json", encoding="utf-8"))
keep = 997
vocab = {tok: i for tok, i in src["model"]["vocab"].items() if i < keep}
merges = []
for m in src["model"]["merges"]:
    a, b = m if isinstance(m, list) else m.split(" ", 1)
    if a in vocab and b in vocab and (a + b) in vocab:
        merges.append([a, b])
out = dict(src)
out["model"] = dict(src["model"], vocab=vocab, merges=merges)
specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
out["added_tokens"] = [
    {"id": keep + i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
     "normalized": False, "special": True}
    for i, s in enumerate(specials)
]
json.dump(out, open("tests/data/tiny_chat/tokenizer.json", "w", encoding="utf-8"), ensure_ascii=False)
cfg = json.load(open("tests/data/tokenizer/qwen2.5/tokenizer_config.json", encoding="utf-8"))
tiny_cfg = {
    "add_bos_token": False,
    "bos_token": None,
    "eos_token": "<|im_end|>",
    "pad_token": "<|endoftext|>",
    "chat_template": cfg["chat_template"],
    "tokenizer_class": "Qwen2Tokenizer",
}
json.dump(tiny_cfg, open("tests/data/tiny_chat/tokenizer_config.json", "w", encoding="utf-8"),
          ensure_ascii=False, indent=2)
print(len(vocab), "tokens,", len(merges), "merges")
