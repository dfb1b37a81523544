// Drives `qrwkv serve` with the official OpenAI client (the `openai` npm package): plain and
// streamed chat and text completions, several choices, stop strings, JSON output, a tool
// conversation, and the error classes the client raises. Usage: node server_openai_test.js BASE_URL API_KEY
// Prints one line per check and "all passed" at the end; exits 1 on the first failure.
'use strict';
const assert = require('node:assert/strict');
const OpenAI = require('openai');

const [baseURL, apiKey] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60000 });

async function check(name, fn) {
  try {
    await fn();
    console.log(`ok ${name}`);
  } catch (e) {
    console.log(`FAILED ${name}: ${e && e.stack ? e.stack : e}`);
    process.exit(1);
  }
}

async function streamChat(params) {
  const stream = await client.chat.completions.create({ ...params, stream: true });
  const texts = {};
  const finish = {};
  let usage = null;
  let first = true;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      if (first) assert.equal(c.delta.role, 'assistant');
      first = false;
      texts[c.index] = (texts[c.index] || '') + (c.delta.content || '');
      if (c.finish_reason) finish[c.index] = c.finish_reason;
    }
  }
  return { texts, finish, usage };
}

async function main() {
  const models = await client.models.list();
  const model = models.data[0].id;
  const messages = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hello there' }];

  let plain;
  await check('models.list', async () => {
    assert.equal(models.data.length, 1);
    assert.equal(models.data[0].object, 'model');
  });
  await check('chat, not streamed', async () => {
    plain = await client.chat.completions.create({ model, messages, max_tokens: 12, seed: 5 });
    assert.equal(plain.object, 'chat.completion');
    assert.equal(plain.choices.length, 1);
    assert.equal(plain.choices[0].message.role, 'assistant');
    assert.equal(typeof plain.choices[0].message.content, 'string');
    assert.equal(plain.choices[0].finish_reason, 'length');
    assert.equal(plain.usage.completion_tokens, 12);
    assert.equal(plain.usage.total_tokens, plain.usage.prompt_tokens + 12);
  });
  await check('chat, streamed with usage, equals the plain reply', async () => {
    const s = await streamChat({ model, messages, max_tokens: 12, seed: 5,
                                 stream_options: { include_usage: true } });
    assert.equal(s.texts[0], plain.choices[0].message.content);
    assert.equal(s.finish[0], 'length');
    assert.equal(s.usage.completion_tokens, 12);
    assert.equal(s.usage.prompt_tokens_details.cached_tokens, s.usage.prompt_tokens);
  });
  await check('chat, n = 3 (streamed and not)', async () => {
    const r = await client.chat.completions.create({ model, messages, max_tokens: 12, seed: 5, n: 3 });
    assert.equal(r.choices.length, 3);
    assert.deepEqual(r.choices.map((c) => c.index), [0, 1, 2]);
    assert.equal(r.usage.completion_tokens, 36);
    // Choice i samples with seed + i: choice 0 is the single reply.
    assert.equal(r.choices[0].message.content, plain.choices[0].message.content);
    const s = await streamChat({ model, messages, max_tokens: 12, seed: 5, n: 3 });
    for (let i = 0; i < 3; ++i) assert.equal(s.texts[i], r.choices[i].message.content);
  });
  await check('chat, stop string', async () => {
    const full = plain.choices[0].message.content;
    const stop = full.slice(4, 6);
    const r = await client.chat.completions.create({ model, messages, max_tokens: 12, seed: 5, stop: [stop] });
    assert.equal(r.choices[0].message.content, full.slice(0, full.indexOf(stop)));
    assert.equal(r.choices[0].finish_reason, 'stop');
  });
  await check('completions, streamed and not', async () => {
    const r = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 10, seed: 2 });
    assert.equal(r.object, 'text_completion');
    assert.equal(r.usage.completion_tokens, 10);
    const stream = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 10,
                                                     seed: 2, stream: true });
    let text = '';
    for await (const chunk of stream) text += chunk.choices.map((c) => c.text).join('');
    assert.equal(text, r.choices[0].text);
  });
  await check('errors: bad request, unknown model, bad key', async () => {
    await assert.rejects(client.chat.completions.create({ model, messages: 'hi' }),
                         (e) => e instanceof OpenAI.BadRequestError && e.status === 400 && /messages/.test(e.message));
    await assert.rejects(client.chat.completions.create({ model, messages, temperature: 'x' }),
                         (e) => e instanceof OpenAI.BadRequestError);
    await assert.rejects(client.chat.completions.create({ model: 'no-such-model', messages }),
                         (e) => e instanceof OpenAI.NotFoundError && e.status === 404);
    const bad = new OpenAI({ baseURL, apiKey: 'wrong', maxRetries: 0 });
    await assert.rejects(bad.chat.completions.create({ model, messages }),
                         (e) => e instanceof OpenAI.AuthenticationError && e.status === 401);
  });
  await check('concurrent streams are deterministic', async () => {
    const params = (i) => ({ model, messages: [{ role: 'user', content: `Item ${i}` }], max_tokens: 16, seed: 40 + i });
    const alone = [];
    for (let i = 0; i < 6; ++i) alone.push((await streamChat(params(i))).texts[0]);
    const together = await Promise.all([0, 1, 2, 3, 4, 5].map((i) => streamChat(params(i))));
    for (let i = 0; i < 6; ++i) assert.equal(together[i].texts[0], alone[i]);
  });
  await check('response_format json_object gives JSON', async () => {
    let whole = 0;
    for (let seed = 1; seed <= 4; ++seed) {
      const r = await client.chat.completions.create({ model, messages, max_tokens: 300, seed, temperature: 1.0,
                                                       response_format: { type: 'json_object' } });
      if (r.choices[0].finish_reason === 'stop') {
        assert.equal(typeof JSON.parse(r.choices[0].message.content), 'object');
        ++whole;
      }
    }
    assert.ok(whole > 0);
    await assert.rejects(client.chat.completions.create({ model, messages, response_format: { type: 'xml' } }),
                         (e) => e instanceof OpenAI.BadRequestError);
  });
  await check('a tool conversation is accepted', async () => {
    const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object',
      properties: { city: { type: 'string' } } } } }];
    const r = await client.chat.completions.create({ model, max_tokens: 8, seed: 1, tools, messages: [
      { role: 'user', content: 'Weather in Paris?' },
      { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function',
        function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }] },
      { role: 'tool', tool_call_id: 'call_1', content: 'sunny' }] });
    assert.equal(r.choices[0].message.role, 'assistant');
  });
  await check('completions: lm-eval scoring request (token-id batch, echo, logprobs)', async () => {
    const prompt = [[3, 4, 5, 6], [7, 8]];
    const r = await client.completions.create({ model, prompt, temperature: 0, max_tokens: 1,
      logprobs: 1, seed: 1234, echo: true });
    assert.equal(r.choices.length, 2);
    const sorted = [...r.choices].sort((a, b) => a.index - b.index);
    sorted.forEach((c, k) => {
      const lp = c.logprobs;
      assert.equal(lp.tokens.length, prompt[k].length + 1);
      assert.equal(lp.token_logprobs[0], null);
      // lm-eval's parse_logprobs: the continuation's logprobs and whether each was the greedy one.
      for (let i = 1; i < lp.token_logprobs.length; i++) {
        assert.ok(lp.token_logprobs[i] <= 0);
        assert.ok(Math.max(...Object.values(lp.top_logprobs[i])) >= lp.token_logprobs[i]);
      }
    });
  });
  await check('chat: logprobs with top_logprobs, streamed and not', async () => {
    const params = { model, max_tokens: 4, temperature: 0, logprobs: true, top_logprobs: 2,
      messages: [{ role: 'user', content: 'Hello' }] };
    const r = await client.chat.completions.create(params);
    const content = r.choices[0].logprobs.content;
    assert.ok(content.length >= 1);
    for (const e of content) {
      assert.equal(e.top_logprobs.length, 2);
      assert.equal(e.logprob, e.top_logprobs[0].logprob);
      assert.ok(Array.isArray(e.bytes));
    }
    const stream = await client.chat.completions.create({ ...params, stream: true });
    const streamed = [];
    for await (const chunk of stream)
      for (const c of chunk.choices) if (c.logprobs) streamed.push(...c.logprobs.content);
    assert.deepEqual(streamed, content);
  });
  console.log('all passed');
}

main().catch((e) => {
  console.log(`FAILED: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
