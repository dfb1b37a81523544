#!/usr/bin/env node
// Load and multi-turn measurements of a running `qrwkv serve` (Node 20, no packages needed).
//
//   node bench/server_load.js load URL [--clients 16] [--seconds 60] [--max-tokens 32] [--key K]
//     Phase 1: one client at a time for a quarter of the time (the unbatched baseline).
//     Phase 2: --clients streaming clients for --seconds. Every stream is checked (role first,
//     content deltas, one finish_reason, usage, [DONE] last); probe requests with fixed seeds
//     are replayed during the load and must give the bytes they gave alone.
//     Prints requests/s, generated tokens/s and the speed-up of phase 2 over phase 1.
//   node bench/server_load.js turns URL [--turns 10] [--max-tokens 32] [--repeat 1] [--key K]
//     A conversation whose every request carries the whole history; prints per turn the prompt
//     tokens, the cached tokens, the tokens processed and the time. Run it against a server
//     started with --state-cache-mb 0 for the comparison without the cache.
'use strict';

const args = process.argv.slice(2);
const mode = args[0];
const url = (args[1] || '').replace(/\/$/, '');
function opt(name, def) {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : def;
}
const key = opt('--key', '');
const maxTokens = Number(opt('--max-tokens', 32));
const headers = { 'Content-Type': 'application/json' };
if (key) headers.Authorization = `Bearer ${key}`;

// One streamed chat completion; throws when the stream is malformed.
async function streamChat(messages, seed) {
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers,
    body: JSON.stringify({ messages, max_tokens: maxTokens, seed, stream: true,
                           stream_options: { include_usage: true } }),
  });
  if (res.status !== 200) throw new Error(`status ${res.status}: ${await res.text()}`);
  const body = await res.text();
  const events = body.split('\n\n');
  if (events.pop() !== '') throw new Error('stream does not end with a blank line');
  if (events.pop() !== 'data: [DONE]') throw new Error('stream does not end with [DONE]');
  let text = '';
  let finish = null;
  let usage = null;
  events.forEach((ev, i) => {
    if (!ev.startsWith('data: ')) throw new Error(`malformed event: ${ev}`);
    const c = JSON.parse(ev.slice(6));
    if (c.object !== 'chat.completion.chunk') throw new Error('wrong object');
    if (c.usage) usage = c.usage;
    if (c.choices.length === 0) return;
    const ch = c.choices[0];
    if (i === 0 && ch.delta.role !== 'assistant') throw new Error('role is not first');
    if (finish) throw new Error('content after finish_reason');
    text += ch.delta.content || '';
    if (ch.finish_reason) finish = ch.finish_reason;
  });
  if (!finish || !usage) throw new Error('no finish_reason or no usage');
  return { text, usage };
}

const probes = [0, 1, 2, 3].map((i) => ({ messages: [{ role: 'user', content: `Probe ${i}` }], seed: 9000 + i }));

async function runClients(n, seconds, reference) {
  const stats = { requests: 0, tokens: 0, errors: 0, mismatches: 0, firstError: null };
  const end = Date.now() + seconds * 1000;
  const t0 = Date.now();
  await Promise.all(Array.from({ length: n }, async (_, c) => {
    for (let i = 0; Date.now() < end; ++i) {
      const probe = reference && i % 4 === 3 ? probes[(c + i) % probes.length] : null;
      const messages = probe ? probe.messages : [{ role: 'user', content: `Client ${c} request ${i}` }];
      try {
        const r = await streamChat(messages, probe ? probe.seed : c * 100000 + i);
        stats.requests += 1;
        stats.tokens += r.usage.completion_tokens;
        if (probe && r.text !== reference.get(probe.seed)) stats.mismatches += 1;
      } catch (e) {
        stats.errors += 1;
        stats.firstError = stats.firstError || String(e);
      }
    }
  }));
  stats.seconds = (Date.now() - t0) / 1000;
  return stats;
}

async function load() {
  const clients = Number(opt('--clients', 16));
  const seconds = Number(opt('--seconds', 60));
  const reference = new Map();
  for (const p of probes) reference.set(p.seed, (await streamChat(p.messages, p.seed)).text);
  const single = await runClients(1, Math.max(5, seconds / 4), null);
  const many = await runClients(clients, seconds, reference);
  const show = (name, s) => console.log(
    `${name}: ${s.requests} requests in ${s.seconds.toFixed(1)} s = ${(s.requests / s.seconds).toFixed(2)} req/s, ` +
    `${(s.tokens / s.seconds).toFixed(1)} generated tokens/s, errors ${s.errors}` +
    (s.mismatches !== undefined ? `, determinism mismatches ${s.mismatches}` : '') +
    (s.firstError ? ` (first error: ${s.firstError})` : ''));
  show('1 client  ', single);
  show(`${clients} clients`, many);
  console.log(`speed-up of batched decoding: ${((many.tokens / many.seconds) / (single.tokens / single.seconds)).toFixed(2)}x`);
  if (many.errors || single.errors || many.mismatches) process.exit(1);
}

async function turns() {
  const n = Number(opt('--turns', 10));
  const repeat = Number(opt('--repeat', 1));  // lengthens each user message
  const messages = [{ role: 'system', content: 'You are a helpful assistant.' }];
  console.log('turn | prompt tokens | cached | processed | completion | seconds');
  for (let t = 1; t <= n; ++t) {
    messages.push({ role: 'user', content: `This is turn ${t}.` + ' Please continue the story.'.repeat(repeat) });
    const t0 = Date.now();
    const r = await streamChat(messages, t);
    const s = (Date.now() - t0) / 1000;
    const u = r.usage;
    const cached = u.prompt_tokens_details ? u.prompt_tokens_details.cached_tokens : 0;
    console.log(`${String(t).padStart(4)} | ${String(u.prompt_tokens).padStart(13)} | ${String(cached).padStart(6)} | ` +
                `${String(u.prompt_tokens - cached).padStart(9)} | ${String(u.completion_tokens).padStart(10)} | ${s.toFixed(3)}`);
    messages.push({ role: 'assistant', content: r.text });
  }
}

(mode === 'load' ? load() : mode === 'turns' ? turns() : Promise.reject(new Error('usage: server_load.js load|turns URL [options]')))
  .catch((e) => {
    console.error(String(e));
    process.exit(1);
  });
