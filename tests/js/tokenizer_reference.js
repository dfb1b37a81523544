// Reference encodings from Hugging Face `tokenizers` (the Rust library's Node binding), for
// differential tests of the C++ tokenizer.
//
//   node tokenizer_reference.js TOKENIZER_JSON encode [--no-special] < lines.jsonl
//     Each input line is {"text": ...}; prints the ids of encode(text, add_special_tokens=False)
//     as one JSON array per line. With --no-special, special added tokens get a content that
//     never occurs in text (keeping every id), so their text is encoded as plain text.
//   node tokenizer_reference.js TOKENIZER_JSON decode < lines.jsonl
//     Each input line is a JSON array of ids; prints decode(ids) as one JSON string per line.
'use strict';
const fs = require('fs');
const readline = require('readline');
const { Tokenizer } = require('tokenizers');

async function main() {
  const [file, mode, ...flags] = process.argv.slice(2);
  const spec = JSON.parse(fs.readFileSync(file, 'utf8'));
  if (flags.includes('--no-special')) {
    for (const t of spec.added_tokens || []) {
      if (t.special) t.content = `\u0000\u0001unmatchable ${t.id}\u0001\u0000`;
    }
  }
  const tokenizer = Tokenizer.fromString(JSON.stringify(spec));
  const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  const out = [];
  for await (const line of rl) {
    if (line.trim() === '') continue;
    const value = JSON.parse(line);
    if (mode === 'encode') {
      const enc = await tokenizer.encode(value.text, null, { addSpecialTokens: false });
      out.push(JSON.stringify(enc.getIds()));
    } else if (mode === 'decode') {
      out.push(JSON.stringify(await tokenizer.decode(value, false)));
    } else {
      throw new Error(`unknown mode ${mode}`);
    }
  }
  process.stdout.write(out.length ? out.join('\n') + '\n' : '');
}

main().catch((e) => {
  console.error(e.message);
  process.exit(1);
});
