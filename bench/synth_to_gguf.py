#!/usr/bin/python3
"""Writes a GGUF file that llama.cpp's llama-bench can load, from a `qrwkv synth` checkpoint
(model_type qwen2 or rwkv6qwen2, BF16 safetensors), for speed comparisons on the same shapes.

The tensors get llama.cpp's names and layouts for the architecture (the transposes and stacks
that llama.cpp's own convert_hf_to_gguf.py applies); the vocabulary is a placeholder of the
right size (llama-bench feeds random token ids). Uses the gguf Python package of a llama.cpp
source tree: pass its gguf-py directory with --gguf-py.

  bench/synth_to_gguf.py --gguf-py /tmp/llama.cpp/gguf-py -m /tmp/synth_q6 -o /tmp/q6-bf16.gguf
"""
import argparse
import json
import struct
import sys
import types
from pathlib import Path


def read_safetensors(path, np):
    """name -> numpy array (BF16 as uint16 bits, F32 as float32), memory-mapped."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        dt = {"BF16": np.uint16, "F16": np.float16, "F32": np.float32}[info["dtype"]]
        out[name] = (data[b:e].view(dt).reshape(info["shape"]), info["dtype"])
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf-py", required=True, help="gguf-py directory of a llama.cpp tree")
    ap.add_argument("-m", "--model", required=True, help="qrwkv synth model directory")
    ap.add_argument("-o", "--output", required=True, help="GGUF file to write")
    args = ap.parse_args()
    sys.path.insert(0, args.gguf_py)
    # gguf's vocabulary helpers import sentencepiece, which writing tensors does not need.
    if "sentencepiece" not in sys.modules:
        stub = types.ModuleType("sentencepiece")
        stub.SentencePieceProcessor = None
        sys.modules["sentencepiece"] = stub
    import numpy as np
    import gguf

    d = Path(args.model)
    cfg = json.loads((d / "config.json").read_text())
    shards = sorted(d.glob("*.safetensors"))
    t = {}
    for s in shards:
        t.update(read_safetensors(s, np))
    arch = cfg["model_type"]
    C, L = cfg["hidden_size"], cfg["num_hidden_layers"]
    H, Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    V, F = cfg["vocab_size"], cfg["intermediate_size"]
    w = gguf.GGUFWriter(args.output, arch)

    def add(name, arr, dtype):
        arr = np.ascontiguousarray(arr)
        if dtype == "BF16":
            w.add_tensor(name, arr, raw_shape=arr.shape, raw_dtype=gguf.GGMLQuantizationType.BF16)
        else:
            w.add_tensor(name, arr.astype(np.float32))

    def f32(name):
        a, dt = t[name]
        if dt == "BF16":
            return (a.astype(np.uint32) << 16).view(np.float32)
        return a.astype(np.float32)

    # RWKV is not context limited: llama.cpp's converter writes 2^20 for rwkv6qwen2.
    w.add_context_length(cfg.get("max_position_embeddings", 32768) if arch == "qwen2" else 1048576)
    w.add_embedding_length(C)
    w.add_block_count(L)
    w.add_feed_forward_length(F)
    w.add_layer_norm_rms_eps(cfg.get("rms_norm_eps", 1e-6))
    w.add_file_type(gguf.LlamaFileType.MOSTLY_BF16)
    w.add_head_count_kv(Hkv)
    if arch == "qwen2":
        w.add_head_count(H)
        w.add_rope_freq_base(cfg.get("rope_theta", 1e6))
    else:
        # As llama.cpp's converter writes rwkv6qwen2: LoRA ranks by hidden size, no head count.
        w.add_wkv_head_size(C // H)
        w.add_time_mix_extra_dim(64 if C >= 4096 else 32)
        w.add_time_decay_extra_dim(128 if C >= 4096 else 64)
        w.add_token_shift_count(1)
        w.add_head_count(0)

    # A placeholder vocabulary of V tokens.
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list([b"<|endoftext|>"] + [f"t{i}".encode() for i in range(1, V)])
    w.add_token_types([gguf.TokenType.CONTROL] + [gguf.TokenType.NORMAL] * (V - 1))
    w.add_token_merges(["t 1"])
    w.add_bos_token_id(0)
    w.add_eos_token_id(0)
    w.add_add_bos_token(False)

    emb, dt = t["model.embed_tokens.weight"]
    add("token_embd.weight", emb, dt)
    add("output_norm.weight", f32("model.norm.weight"), "F32")
    if "lm_head.weight" in t:
        add("output.weight", *t["lm_head.weight"])
    elif arch != "qwen2":
        add("output.weight", emb, dt)  # llama.cpp's rwkv6qwen2 requires an output matrix
    for i in range(L):
        p = f"model.layers.{i}."
        b = f"blk.{i}."
        add(b + "attn_norm.weight", f32(p + "input_layernorm.weight"), "F32")
        add(b + "ffn_norm.weight", f32(p + "post_attention_layernorm.weight"), "F32")
        for hf, gg in (("gate_proj", "ffn_gate"), ("up_proj", "ffn_up"), ("down_proj", "ffn_down")):
            add(b + gg + ".weight", *t[p + "mlp." + hf + ".weight"])
        a = p + "self_attn."
        if arch == "qwen2":
            for hf, gg in (("q_proj", "attn_q"), ("k_proj", "attn_k"), ("v_proj", "attn_v"),
                           ("o_proj", "attn_output")):
                add(b + gg + ".weight", *t[a + hf + ".weight"])
                if a + hf + ".bias" in t:
                    add(b + gg + ".bias", f32(a + hf + ".bias"), "F32")
            continue
        for hf, gg in (("q_proj", "time_mix_receptance"), ("k_proj", "time_mix_key"),
                       ("v_proj", "time_mix_value"), ("gate", "time_mix_gate"),
                       ("o_proj", "time_mix_output")):
            add(b + gg + ".weight", *t[a + hf + ".weight"])
            if a + hf + ".bias" in t:
                add(b + gg + ".bias", f32(a + hf + ".bias"), "F32")
        # The time-mix vectors and LoRA matrices in llama.cpp's layouts (rkvwg order of the
        # five LoRA slices, as its converter permutes them).
        order = [3, 1, 2, 0, 4]
        w1 = f32(a + "time_maa_w1").T  # [5·D, C]
        D = w1.shape[0] // 5
        w1 = w1.reshape(5, D, C)[order].reshape(5 * D, C)
        add(b + "time_mix_w1.weight", w1, "F32")
        w2 = f32(a + "time_maa_w2").transpose(0, 2, 1)[order]  # [5, C, D]
        add(b + "time_mix_w2.weight", w2, "F32")
        add(b + "time_mix_lerp_x.weight", f32(a + "time_maa_x").reshape(1, 1, C), "F32")
        lerp = np.stack([f32(a + "time_maa_" + k).reshape(C) for k in "wkvrg"])
        add(b + "time_mix_lerp_fused.weight", lerp.reshape(5, 1, 1, C), "F32")
        add(b + "time_mix_decay.weight", f32(a + "time_decay").reshape(C), "F32")
        add(b + "time_mix_decay_w1.weight", f32(a + "time_decay_w1").T, "F32")
        add(b + "time_mix_decay_w2.weight", f32(a + "time_decay_w2").T, "F32")

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
