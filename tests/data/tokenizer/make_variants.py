#!/usr/bin/env python3
"""Builds small tokenizer.json variants and their reference encodings.

Each variant keeps the first merges of the Qwen2.5 vocabulary (ids below 256 + MERGES) and
swaps in another normalizer / pre-tokenizer / added-token setup, covering the GPT-2 and LLaMA-3
styles, every Split behavior, Digits, NFKC/NFD/Lowercase and the added-token flags. The expected
ids and decoded text come from Hugging Face `tokenizers` (tests/js/tokenizer_reference.js), so
run `npm install` in tests/js first. Run from the repository root:

    python3 tests/data/tokenizer/make_variants.py
"""
import copy
import json
import os
import random
import subprocess
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, '..', '..', '..'))
MERGES = 2000

LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def byte_level(prefix, regex):
    return {"type": "ByteLevel", "add_prefix_space": prefix, "trim_offsets": True,
            "use_regex": regex}


def seq(*steps):
    return {"type": "Sequence", "pretokenizers": list(steps)}


STD_ADDED = [("<|endoftext|>", True, {}), ("<|im_start|>", True, {}), ("<|im_end|>", True, {})]

VARIANTS = {
    'gpt2': dict(normalizer=None, pre_tokenizer=byte_level(False, True),
                 added=[("<|endoftext|>", True, {})]),
    'gpt2_prefix': dict(normalizer=None, pre_tokenizer=byte_level(True, True), added=STD_ADDED),
    'llama3': dict(normalizer=None,
                   pre_tokenizer=seq({"type": "Split", "pattern": {"Regex": LLAMA3},
                                      "behavior": "Isolated", "invert": False},
                                     byte_level(False, False)),
                   added=STD_ADDED, ignore_merges=True, string_merges=True),
    'behaviors': dict(
        normalizer={"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"}]},
        pre_tokenizer=seq(
            {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithNext",
             "invert": False},
            {"type": "Split", "pattern": {"Regex": "[.,!?]"}, "behavior": "MergedWithPrevious",
             "invert": False},
            {"type": "Digits", "individual_digits": False},
            byte_level(True, False)),
        added=STD_ADDED),
    'behaviors2': dict(
        normalizer={"type": "NFD"},
        pre_tokenizer=seq(
            {"type": "Split", "pattern": {"Regex": "\\s+"}, "behavior": "Removed",
             "invert": False},
            {"type": "Split", "pattern": {"Regex": "\\p{L}+"}, "behavior": "Contiguous",
             "invert": True},
            {"type": "Digits", "individual_digits": True},
            byte_level(False, True)),
        added=STD_ADDED),
    'added_flags': dict(
        normalizer={"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Lowercase"}]},
        pre_tokenizer=seq({"type": "Split", "pattern": {"Regex": LLAMA3}, "behavior": "Isolated",
                           "invert": False},
                          byte_level(False, False)),
        added=[("<|endoftext|>", True, {}), ("<|im_start|>", True, {"lstrip": True}),
               ("<|im_end|>", True, {"rstrip": True}),
               ("<mask>", True, {"lstrip": True, "rstrip": True}),
               ("zzq", False, {"single_word": True}), ("ВЫШКА", False, {"normalized": True}),
               ("Qux", False, {"normalized": False}), ("<sw>", True, {"single_word": True}),
               ("abxq", False, {"single_word": True, "normalized": False})]),
}

FIXED = [
    "Hello world", " leading", "trailing ", "a  b   c", "tabs\tand\nlines\r\n", "I'm you're THEY'LL",
    "don’t", "12345678901234567890", "3.14 and -42", "café vs cafe\u0301", "Å and A\u030a",
    "ﬁve ①②③ ｆｕｌｌ", "İstanbul ΣΑΣ", "<|im_start|>user\nhi<|im_end|>\n", "x <|im_start|> y",
    "a <|im_end|>  b", "  <mask>  ", "zzq azzq zzq. zzq_", "ВЫШКА вышка Qux qux", "<sw> a<sw> <sw>é",
    "abxq abxq1 cabxq abxq-", "emoji 😀👍🏽 👨\u200d👩\u200d👧", "你好，世界！", "नमस्ते", "", " ", "\n\n",
    "x\u00a0y\u3000z\u180e", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "1 22 333 4444 55555",
]


def random_text(rng):
    pieces = [
        lambda: rng.choice(['hello', 'World', 'THE', 'naïve', 'ǅemal', 'straße', 'İstanbul',
                            'ΣΊΣΥΦΟΣ', 'x', 'zzq', 'abxq', 'Qux', 'ВЫШКА']),
        lambda: str(rng.randint(0, 10 ** rng.randint(1, 8))),
        lambda: rng.choice([' ', '  ', '\t', '\n', '\r\n', '\r', '\u00a0', '\u3000', '\u2028',
                            '\u180e', '\u200b', '\x0b', '\x0c', '\x85', '\u2009', ' \n ']),
        lambda: rng.choice(['.', ',', '!', '?', ';', '...', '"', "'", '(', ')', '#', '->', '<',
                            '>', '|', '/', '\\']),
        lambda: rng.choice(["'s", "'S", "'t", "'re", "'VE", "'m", "'ll", "'d", "’s"]),
        lambda: ''.join(rng.choice('你好世界中文测试가각한국어') for _ in range(rng.randint(1, 5))),
        lambda: rng.choice(['नमस्ते', 'مرحبا', 'Привет', 'Γειά', '日本語', 'テキスト']),
        lambda: rng.choice(['😀', '👍🏽', '👨\u200d👩\u200d👧', '🇺🇸', '❤️']),
        lambda: rng.choice(['e\u0301', 'a\u0308', 'c\u0327', '\u0301', 'x\u0301\u0302', 'ﬁ', '①']),
        lambda: rng.choice(['<|im_start|>', '<|im_end|>', '<|endoftext|>', '<mask>', '<sw>',
                            '<|im_', '|>']),
        lambda: rng.choice('abz') * rng.randint(1, 30),
    ]
    s = ''.join(rng.choice(pieces)() for _ in range(rng.randint(0, 16)))
    # Characters unassigned in the Unicode version of PCRE2 would be classified differently.
    return ''.join(c for c in s if unicodedata.category(c) != 'Cn')


def reference(path, mode, lines, flags=()):
    res = subprocess.run(['node', os.path.join(ROOT, 'tests/js/tokenizer_reference.js'), path,
                          mode, *flags], input=''.join(l + '\n' for l in lines),
                         capture_output=True, text=True, check=True)
    return [json.loads(l) for l in res.stdout.split('\n') if l]


def main():
    base = json.load(open(os.path.join(HERE, 'qwen2.5', 'tokenizer.json'), encoding='utf-8'))
    vocab = {s: i for s, i in base['model']['vocab'].items() if i < 256 + MERGES}
    merges = base['model']['merges'][:MERGES]
    rng = random.Random(20240601)
    texts = FIXED + [random_text(rng) for _ in range(150)]
    out = {"source": "HF tokenizers (Node binding 0.23.2) encode(text, add_special_tokens=False)",
           "variants": []}
    for name, v in VARIANTS.items():
        t = copy.deepcopy(base)
        t['model']['vocab'] = vocab
        t['model']['merges'] = ([a + ' ' + b for a, b in merges] if v.get('string_merges')
                                else merges)
        if v.get('ignore_merges'):
            t['model']['ignore_merges'] = True
        t['normalizer'] = v['normalizer']
        t['pre_tokenizer'] = v['pre_tokenizer']
        t['added_tokens'] = []
        for i, (content, special, extra) in enumerate(v['added']):
            d = {"id": len(vocab) + i, "content": content, "single_word": False, "lstrip": False,
                 "rstrip": False, "normalized": not special, "special": special}
            d.update(extra)
            t['added_tokens'].append(d)
        os.makedirs(os.path.join(HERE, 'variants', name), exist_ok=True)
        path = os.path.join(HERE, 'variants', name, 'tokenizer.json')
        with open(path, 'w', encoding='utf-8') as f:
            json.dump(t, f, ensure_ascii=False)
        lines = [json.dumps({"text": s}) for s in texts]
        ids = reference(path, 'encode', lines)
        ids_plain = reference(path, 'encode', lines, ['--no-special'])
        decoded = reference(path, 'decode', [json.dumps(x) for x in ids])
        cases = [{"text": s, "ids": a, "ids_no_special": b, "decoded": d}
                 for s, a, b, d in zip(texts, ids, ids_plain, decoded)]
        out["variants"].append({"name": name, "cases": cases})
    # One case per line keeps the file small and its diffs readable.
    with open(os.path.join(HERE, 'variants', 'cases.json'), 'w', encoding='utf-8') as f:
        f.write('{"source": %s, "variants": [\n' % json.dumps(out["source"]))
        for vi, v in enumerate(out["variants"]):
            f.write('{"name": %s, "cases": [\n' % json.dumps(v["name"]))
            f.write(',\n'.join(json.dumps(c, ensure_ascii=False) for c in v["cases"]))
            f.write('\n]}' + (',' if vi + 1 < len(out["variants"]) else '') + '\n')
        f.write(']}\n')


if __name__ == '__main__':
    main()
