// Reference training run of Hugging Face `tokenizers` (the Rust library's Node binding), for the
// differential test of `qrwkv train-tokenizer`'s trainer.
//
//   node bpe_train_reference.js SPEC_JSON OUT_JSON FILE...
//     Loads SPEC_JSON (a tokenizer.json whose pipeline is used, with an empty BPE model), trains
//     it on the files with the binding's default BpeTrainer (every line, with its line ending, is
//     one sequence; min_frequency 0; vocabulary up to 30000) and saves the result to OUT_JSON.
'use strict';
const { Tokenizer } = require('tokenizers');

try {
  const [spec, out, ...files] = process.argv.slice(2);
  const tokenizer = Tokenizer.fromFile(spec);
  tokenizer.train(files);
  tokenizer.save(out, false);
} catch (e) {
  console.error(e.message);
  process.exit(1);
}
