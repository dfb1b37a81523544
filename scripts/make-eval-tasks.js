// Builds the evaluation tasks of the demo models from held-out text (scripts/split-corpus),
// deterministically (a fixed seed): no model or tokenizer of the demo saw a sentence of them.
// Usage: node make-eval-tasks.js HELDOUT_TXT OUT_DIR
//   heldout-endings.jsonl   multiple choice: the first 60% of a sentence's words, and its true
//                           ending among the endings of three other held-out sentences of about
//                           the same length (HellaSwag-like) → acc, acc_norm
//   heldout-lastword.jsonl  a sentence without its final punctuation; the task is its last word
//                           (LAMBADA-like) → acc, perplexity
//   heldout-text.jsonl      documents of 40 consecutive held-out lines → word_perplexity,
//                           byte_perplexity, bits_per_byte
'use strict';
const fs = require('fs');
const path = require('path');

const [heldout, out] = process.argv.slice(2);
if (!heldout || !out) {
  console.error('usage: node make-eval-tasks.js HELDOUT_TXT OUT_DIR');
  process.exit(2);
}

// mulberry32: a small seeded generator, so that the tasks are the same on every machine.
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = rng(20261207);
function shuffle(a) {
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

const lines = fs.readFileSync(heldout, 'utf8').split('\n').map((l) => l.trim()).filter((l) => l);
// Plain one-line sentences: printable ASCII, ending with a period, of 8 to 40 words.
const words = (s) => s.split(' ').filter((w) => w);
const plain = (s) => /^[\x20-\x7e]+$/.test(s) && /[a-z]\.$/.test(s) && words(s).length >= 8 &&
  words(s).length <= 40;
const order = shuffle(lines.map((_, i) => i).filter((i) => plain(lines[i])));

// Disjoint sentences for the two sentence tasks.
const endingIds = order.slice(0, 400);
const lastWordPool = order.slice(400);

const split = (s) => {
  const w = words(s);
  const k = Math.ceil(w.length * 0.6);
  return { context: w.slice(0, k).join(' '), ending: w.slice(k).join(' '), n: w.length - k };
};
const endings = endingIds.map((i) => split(lines[i]));
const pool = lines.filter(plain).map(split);
const endingsOut = endings.map((e) => {
  // Distractors: endings of other sentences with about as many words (a length cue would
  // otherwise give the answer away).
  const near = pool.filter((p) => p.ending !== e.ending && Math.abs(p.n - e.n) <= 1);
  const picks = new Set();
  while (picks.size < 3) picks.add(near[Math.floor(rand() * near.length)].ending);
  const choices = shuffle([e.ending, ...picks]);
  return { context: e.context, choices, gold: choices.indexOf(e.ending) };
});

const lastWord = [];
for (const i of lastWordPool) {
  const s = lines[i].slice(0, -1);  // without the final period
  const last = s.slice(s.lastIndexOf(' ') + 1);
  if (/^[a-z]{3,}$/.test(last)) lastWord.push({ text: s });
  if (lastWord.length === 500) break;
}

// The documents: consecutive runs of the held-out lines, in file order.
const docs = [];
for (let i = 0; i + 40 <= lines.length && docs.length < 12; i += 180)
  docs.push({ document: lines.slice(i, i + 40).join('\n') + '\n' });

fs.mkdirSync(out, { recursive: true });
const write = (name, rows) => {
  const file = path.join(out, name);
  fs.writeFileSync(file + '.tmp', rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
  fs.renameSync(file + '.tmp', file);
  console.log(`${file}: ${rows.length} documents`);
};
write('heldout-endings.jsonl', endingsOut);
write('heldout-lastword.jsonl', lastWord);
write('heldout-text.jsonl', docs);
