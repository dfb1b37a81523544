// Tests of the server's parts that need no network: request parsing and validation, the state
// cache, and the batching scheduler driven directly (determinism alone vs batched, cache hits
// giving the same output, several choices, cancellation freeing slots).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <thread>

#include "model/model.h"
#include "runtime/generator.h"
#include "runtime/loader.h"
#include "server/api.h"
#include "server/scheduler.h"
#include "server/state_cache.h"
#include "tests/cli.h"
#include "tests/server/server_util.h"
#include "text/tokenizer.h"

namespace qrwkv::server {
namespace {

using ::testing::HasSubstr;

RequestLimits limits() {
  RequestLimits l;
  l.max_n = 4;
  l.vocab_size = 1000;
  l.default_max_tokens = 100;
  return l;
}

// The status and code of the ApiError that parsing `body` raises.
std::pair<int, std::string> chat_error(const std::string& body) {
  try {
    parse_chat_request(body, limits());
  } catch (const ApiError& e) {
    return {e.status, e.code};
  }
  return {200, ""};
}

TEST(ServerApi, ParsesChatRequests) {
  const ChatRequest r = parse_chat_request(
      R"({"model":"m","messages":[{"role":"developer","content":"S"},
          {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],
          "max_completion_tokens":7,"temperature":0,"top_p":0.5,"top_k":3,"min_p":0.1,
          "seed":-1,"stop":"END","n":2,"stream":true,"stream_options":{"include_usage":true},
          "logit_bias":{"12":-100},"tools":[{"type":"function"}],"tool_choice":"auto",
          "chat_template_kwargs":{"enable_thinking":false},"response_format":{"type":"text"}})",
      limits());
  EXPECT_EQ(r.model, "m");
  EXPECT_EQ(r.template_input["messages"][0]["role"], "system");
  EXPECT_EQ(r.template_input["messages"][1]["content"], "ab");
  EXPECT_EQ(r.template_input["tools"].size(), 1u);
  EXPECT_EQ(r.template_input["tool_choice"], "auto");
  EXPECT_EQ(r.template_input["enable_thinking"], false);
  EXPECT_EQ(r.template_input["add_generation_prompt"], true);
  EXPECT_EQ(r.gen.max_tokens, 7);
  EXPECT_EQ(r.gen.n, 2);
  EXPECT_TRUE(r.gen.stream);
  EXPECT_TRUE(r.gen.include_usage);
  EXPECT_EQ(r.gen.stop, std::vector<std::string>{"END"});
  EXPECT_TRUE(r.gen.has_seed);
  EXPECT_EQ(r.gen.sampling.seed, ~uint64_t{0});
  EXPECT_EQ(r.gen.sampling.temperature, 0.0f);
  EXPECT_EQ(r.gen.sampling.top_k, 3);
  EXPECT_EQ(r.gen.sampling.logit_bias.at(12), -100.0f);
  // Defaults: the server's max_tokens and the sampler's defaults.
  const ChatRequest d =
      parse_chat_request(R"({"messages":[{"role":"user","content":"x"}]})", limits());
  EXPECT_EQ(d.gen.max_tokens, 100);
  EXPECT_FALSE(d.gen.has_seed);
  EXPECT_EQ(d.gen.sampling.temperature, SamplerParams{}.temperature);
}

TEST(ServerApi, RefusesMalformedRequestsWithTheRightCode) {
  using E = std::pair<int, std::string>;
  EXPECT_EQ(chat_error("{"), E(400, "invalid_json"));
  EXPECT_EQ(chat_error("\"text\""), E(400, "invalid_json"));
  EXPECT_EQ(chat_error(std::string(100, '[') + std::string(100, ']')), E(400, "invalid_json"));
  EXPECT_EQ(chat_error("{}"), E(400, "missing_required_parameter"));
  EXPECT_EQ(chat_error(R"({"messages":{}})"), E(400, "invalid_type"));
  EXPECT_EQ(chat_error(R"({"messages":[]})"), E(400, "invalid_value"));
  EXPECT_EQ(chat_error(R"({"messages":[5]})"), E(400, "invalid_type"));
  EXPECT_EQ(chat_error(R"({"messages":[{"role":"robot","content":"x"}]})"),
            E(400, "invalid_value"));
  EXPECT_EQ(chat_error(R"({"messages":[{"role":"user"}]})"), E(400, "missing_required_parameter"));
  EXPECT_EQ(chat_error(R"({"messages":[{"role":"user","content":[{"type":"image_url"}]}]})"),
            E(400, "unsupported_content"));
  const std::string m = R"("messages":[{"role":"user","content":"x"}])";
  EXPECT_EQ(chat_error("{" + m + R"(,"temperature":"1"})"), E(400, "invalid_type"));
  EXPECT_EQ(chat_error("{" + m + R"(,"temperature":-1})"), E(400, "invalid_value"));
  EXPECT_EQ(chat_error("{" + m + R"(,"max_tokens":1.5})"), E(400, "invalid_type"));
  EXPECT_EQ(chat_error("{" + m + R"(,"max_tokens":18446744073709551615})"),
            E(400, "invalid_value"));
  EXPECT_EQ(chat_error("{" + m + R"(,"n":5})"), E(400, "invalid_value"));
  EXPECT_EQ(chat_error("{" + m + R"(,"n":0})"), E(400, "invalid_value"));
  EXPECT_EQ(chat_error("{" + m + R"(,"stop":[1]})"), E(400, "invalid_type"));
  EXPECT_EQ(chat_error("{" + m + R"(,"stop":[""]})"), E(400, "invalid_value"));
  EXPECT_EQ(chat_error("{" + m + R"(,"stream":"yes"})"), E(400, "invalid_type"));
  EXPECT_EQ(chat_error("{" + m + R"(,"seed":"1"})"), E(400, "invalid_type"));
  EXPECT_EQ(chat_error("{" + m + R"(,"model":3})"), E(400, "invalid_type"));
  EXPECT_EQ(chat_error("{" + m + R"(,"logit_bias":{"abc":1}})"), E(400, "invalid_value"));
  EXPECT_EQ(chat_error("{" + m + R"(,"logit_bias":{"1000":1}})"), E(400, "invalid_value"));
  EXPECT_EQ(chat_error("{" + m + R"(,"logprobs":1})"), E(400, "invalid_type"));
  EXPECT_EQ(chat_error("{" + m + R"(,"top_logprobs":2})"), E(400, "invalid_value"));
  EXPECT_EQ(chat_error("{" + m + R"(,"logprobs":true,"top_logprobs":21})"),
            E(400, "invalid_value"));
  EXPECT_EQ(
      parse_chat_request("{" + m + R"(,"logprobs":true,"top_logprobs":3})", limits()).gen.logprobs,
      3);
  EXPECT_EQ(parse_chat_request("{" + m + R"(,"logprobs":true})", limits()).gen.logprobs, 0);
  EXPECT_EQ(chat_error("{" + m + R"(,"response_format":{"type":"yaml"}})"),
            E(400, "invalid_value"));
  EXPECT_EQ(
      chat_error(
          "{" + m +
          R"(,"response_format":{"type":"json_schema","json_schema":{"schema":{"type":"string"}}}})"),
      E(400, "unsupported_parameter"));
  EXPECT_EQ(chat_error("{" + m + R"(,"tools":{}})"), E(400, "invalid_type"));
  EXPECT_EQ(chat_error("{" + m + R"(,"top_p":0})"), E(400, "invalid_value"));
  try {
    parse_chat_request("{" + m + R"(,"top_k":"x"})", limits());
    FAIL();
  } catch (const ApiError& e) {
    const ojson body = error_body(e);
    EXPECT_EQ(body["error"]["type"], "invalid_request_error");
    EXPECT_EQ(body["error"]["param"], "top_k");
    EXPECT_THAT(body["error"]["message"].get<std::string>(), HasSubstr("top_k"));
  }
}

TEST(ServerApi, ParsesCompletionAndUtilityRequests) {
  CompletionRequest c = parse_completion_request(R"({"prompt":"abc"})", limits());
  ASSERT_EQ(c.prompts.size(), 1u);
  EXPECT_FALSE(c.prompts[0].has_ids);
  EXPECT_EQ(c.prompts[0].text, "abc");
  EXPECT_FALSE(c.echo);
  EXPECT_EQ(c.gen.logprobs, -1);
  c = parse_completion_request(R"({"prompt":["abc"]})", limits());
  EXPECT_EQ(c.prompts[0].text, "abc");
  c = parse_completion_request(R"({"prompt":[1,2,999]})", limits());
  ASSERT_EQ(c.prompts.size(), 1u);
  EXPECT_EQ(c.prompts[0].ids, (std::vector<int32_t>{1, 2, 999}));
  c = parse_completion_request(R"({"prompt":[[4]]})", limits());
  EXPECT_EQ(c.prompts[0].ids, (std::vector<int32_t>{4}));
  // What lm-evaluation-harness sends to score continuations: a batch of token-id prompts.
  c = parse_completion_request(R"({"model":"m","prompt":[[4,5],[6]],"temperature":0,
      "max_tokens":1,"logprobs":1,"seed":1234,"echo":true})",
                               limits());
  ASSERT_EQ(c.prompts.size(), 2u);
  EXPECT_EQ(c.prompts[1].ids, (std::vector<int32_t>{6}));
  EXPECT_TRUE(c.echo);
  EXPECT_EQ(c.gen.logprobs, 1);
  EXPECT_EQ(c.gen.max_tokens, 1);
  c = parse_completion_request(R"({"prompt":["a","b"],"max_tokens":0,"echo":true})", limits());
  EXPECT_EQ(c.prompts.size(), 2u);
  EXPECT_EQ(c.gen.max_tokens, 0);
  for (const char* bad :
       {R"({})", R"({"prompt":""})", R"({"prompt":[]})", R"({"prompt":[1000]})",
        R"({"prompt":[-1]})", R"({"prompt":["a",""]})", R"({"prompt":3})", R"({"prompt":[1.5]})",
        R"({"prompt":"a","echo":1})", R"({"prompt":"a","logprobs":21})",
        R"({"prompt":"a","logprobs":-1})", R"({"prompt":"a","logprobs":"1"})",
        R"({"prompt":["a","b"],"stream":true})"})
    EXPECT_THROW(parse_completion_request(bad, limits()), ApiError) << bad;
  RequestLimits few = limits();
  few.max_prompts = 2;
  EXPECT_THROW(parse_completion_request(R"({"prompt":["a","b","c"]})", few), ApiError);
  EXPECT_EQ(parse_tokenize_request(R"({"content":"hi"})").content, "hi");
  EXPECT_EQ(parse_tokenize_request(R"({"prompt":"hi","add_special_tokens":false})").content, "hi");
  EXPECT_THROW(parse_tokenize_request(R"({"content":1})"), ApiError);
  EXPECT_EQ(parse_detokenize_request(R"({"tokens":[1,2]})", 10), (std::vector<int32_t>{1, 2}));
  EXPECT_THROW(parse_detokenize_request(R"({"tokens":[10]})", 10), ApiError);
  EXPECT_EQ(parse_template_request(R"({"messages":[{"role":"user","content":"x"}],
                                       "add_generation_prompt":false})")["add_generation_prompt"],
            false);
}

// ---- state cache ---------------------------------------------------------------------------

TEST(ServerStateCache, UsesTheLongestPrefixAndEvictsLeastRecentlyUsed) {
  const Model m = Model::load(test::data_path("models/qrwkv6_tiny"));
  const size_t entry = m.state_bytes() + m.config.vocab_size * sizeof(float);
  StateCache cache(m.config, 2 * entry + 200);
  auto state_for = [&](std::vector<int32_t> t) {
    State s = m.new_state();
    return std::make_pair(forward(m, s, t, false), s);
  };
  auto [l1, s1] = state_for({1, 2, 3});
  cache.insert({1, 2, 3}, s1, l1);
  auto [l2, s2] = state_for({1, 2, 3, 4, 5});
  cache.insert({1, 2, 3, 4, 5}, s2, l2);
  EXPECT_EQ(cache.entries(), 2u);

  auto hit = cache.lookup(std::vector<int32_t>{1, 2, 3, 4, 5, 6});
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->n_tokens, 5u);
  EXPECT_EQ(hit->state.n_tokens, 5);
  EXPECT_TRUE(hit->logits.empty()) << "more tokens follow: no logits needed";
  hit = cache.lookup(std::vector<int32_t>{1, 2, 3});
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->n_tokens, 3u);
  EXPECT_EQ(hit->logits, l1) << "the whole prompt is cached: its logits come along";
  // A recurrent state cannot be cut back: [1, 2, 4] shares only a prefix with the entries.
  EXPECT_FALSE(cache.lookup(std::vector<int32_t>{1, 2, 4}));
  EXPECT_FALSE(cache.lookup(std::vector<int32_t>{7}));

  // {1,2,3} was used last, so a third entry evicts {1,2,3,4,5}.
  auto [l3, s3] = state_for({9});
  cache.insert({9}, s3, l3);
  EXPECT_EQ(cache.entries(), 2u);
  EXPECT_LE(cache.bytes(), cache.budget());
  EXPECT_EQ(cache.lookup(std::vector<int32_t>{1, 2, 3, 4, 5, 6})->n_tokens, 3u);
  StateCache off(m.config, 0);
  off.insert({1, 2, 3}, s1, l1);
  EXPECT_EQ(off.entries(), 0u);
}

TEST(ServerStateCache, CutsTransformerKvCachesToTheCommonPrefix) {
  const Model m = Model::load(test::data_path("models/qwen2_tiny"));
  StateCache cache(m.config, size_t{64} << 20);
  State s = m.new_state();
  const std::vector<int32_t> tokens = {5, 6, 7, 8};
  const std::vector<float> logits = forward(m, s, tokens, false);
  cache.insert(tokens, s, logits);
  auto hit = cache.lookup(std::vector<int32_t>{5, 6, 9});
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->n_tokens, 2u);
  EXPECT_EQ(hit->state.n_tokens, 2);
  // Continuing the cut cache gives what a fresh state gives.
  const std::vector<int32_t> rest = {9};
  const std::vector<float> cont = forward(m, hit->state, rest, false);
  State fresh = m.new_state();
  const std::vector<float> whole = forward(m, fresh, std::vector<int32_t>{5, 6, 9}, false);
  ASSERT_EQ(cont.size(), whole.size());
  for (size_t i = 0; i < cont.size(); ++i) EXPECT_NEAR(cont[i], whole[i], 1e-4f);
  // The prompt [5, 6, 7, 8] is a prefix of nothing longer, but the entry has its logits.
  EXPECT_EQ(cache.lookup(tokens)->n_tokens, 4u);
  // A prompt inside an entry: cut one token short so that feeding it gives the logits.
  EXPECT_EQ(cache.lookup(std::vector<int32_t>{5, 6, 7})->n_tokens, 2u);
}

// ---- scheduler -----------------------------------------------------------------------------

struct Fixture {
  explicit Fixture(std::string model_dir = test::server_chat_model()) : dir(std::move(model_dir)) {}
  std::string dir;
  Model model = Model::load(dir, {WeightFormat::Stored, nullptr, 1});
  Tokenizer tok = Tokenizer::from_dir(dir);
  std::set<int32_t> eos = end_of_generation_ids(dir, model.config, tok);
};

struct Output {
  std::vector<std::string> text;
  std::vector<std::string> finish;
  Usage usage;
  std::optional<std::string> error;
};

Output drain(Job& job) {
  Output o;
  o.text.resize(static_cast<size_t>(job.n));
  o.finish.resize(static_cast<size_t>(job.n));
  std::vector<Event> ev;
  while (!job.wait(ev, std::chrono::milliseconds(100))) {
  }
  for (const Event& e : ev) {
    o.text[e.index] += e.text;
    if (!e.finish_reason.empty()) o.finish[e.index] = e.finish_reason;
  }
  o.usage = job.usage();
  o.error = job.error();
  return o;
}

std::shared_ptr<Job> make_job(const Tokenizer& tok, const std::string& text, uint64_t seed,
                              int64_t max_tokens, int n = 1) {
  auto j = std::make_shared<Job>();
  j->prompt = tok.encode(text);
  j->sampling.seed = seed;
  j->max_tokens = max_tokens;
  j->n = n;
  return j;
}

// What the runtime's own generator produces for a prompt with a seed: the reference that the
// scheduler's batched, cached decoding must reproduce.
GenerateResult generate_alone(Fixture& f, const std::vector<int32_t>& ids, uint64_t seed,
                              int64_t n_predict) {
  State s = f.model.new_state();
  SamplerParams p;
  p.seed = seed;
  Sampler sampler(p);
  for (int32_t t : ids) sampler.accept(t);
  GenerateOptions go;
  go.n_predict = n_predict;
  go.eos_ids = f.eos;
  return generate(f.model, f.tok, s, prefill(f.model, s, ids), sampler, go, {});
}

// Both recurrent architectures: the golden QRWKV6 model and the QRWKV7 demo model (whose state is
// the delta rule's matrices; the golden QRWKV7 models have too small a vocabulary for the test
// tokenizer).
class ServerSchedulerArch : public ::testing::TestWithParam<const char*> {
 protected:
  static std::string model_dir(const std::string& name) {
    return name == "qrwkv6" ? test::server_chat_model() : test::data_path("../../models/" + name);
  }
};
INSTANTIATE_TEST_SUITE_P(Recurrent, ServerSchedulerArch,
                         ::testing::Values("qrwkv6", "qrwkv7-demo"));

TEST_P(ServerSchedulerArch, BatchedOutputEqualsAloneAndTheGenerator) {
  Fixture f(model_dir(GetParam()));
  SchedulerOptions o;
  o.n_parallel = 8;
  o.cache_bytes = 0;
  o.prefill_chunk = 3;  // prompts advance a few tokens per step, interleaved with decoding
  Scheduler sched(f.model, f.tok, f.eos, o);
  auto prompt = [](int i) {
    return "Prompt number " + std::to_string(i) + (i % 2 ? " and more" : "");
  };
  std::vector<Output> alone;
  for (int i = 0; i < 8; ++i) {
    auto j = make_job(f.tok, prompt(i), 50 + i, 20);
    sched.submit(j);
    alone.push_back(drain(*j));
  }
  // The runtime's own generator gives the same text for the same seed.
  {
    const GenerateResult r = generate_alone(f, f.tok.encode(prompt(0)), 50, 20);
    EXPECT_EQ(alone[0].text[0], r.text);
    EXPECT_EQ(alone[0].finish[0], r.finish_reason);
  }
  std::vector<std::shared_ptr<Job>> jobs;
  for (int i = 0; i < 8; ++i) jobs.push_back(make_job(f.tok, prompt(i), 50 + i, 20));
  for (auto& j : jobs) sched.submit(j);
  for (int i = 0; i < 8; ++i) {
    const Output b = drain(*jobs[i]);
    EXPECT_EQ(b.text[0], alone[i].text[0]) << i;
    EXPECT_EQ(b.usage.completion_tokens, alone[i].usage.completion_tokens) << i;
  }
  const SchedulerStats st = sched.stats();
  EXPECT_EQ(st.requests_finished, 16);
  EXPECT_EQ(st.cache_hits, 0);
}

TEST_P(ServerSchedulerArch, CachedPrefixesGiveTheSameOutputAndCountCachedTokens) {
  Fixture f(model_dir(GetParam()));
  SchedulerOptions o;
  o.cache_bytes = 64u << 20;
  Scheduler cached(f.model, f.tok, f.eos, o);
  o.cache_bytes = 0;
  Scheduler plain(f.model, f.tok, f.eos, o);
  auto run = [&](Scheduler& s, const std::string& text) {
    auto j = make_job(f.tok, text, 9, 12);
    s.submit(j);
    return drain(*j);
  };
  const std::string base = "A long shared beginning of a conversation.";
  const Output first = run(cached, base);
  EXPECT_EQ(first.usage.cached_tokens, 0);
  const Output again = run(cached, base);
  EXPECT_EQ(again.usage.cached_tokens, again.usage.prompt_tokens);
  EXPECT_EQ(again.text, first.text);
  const Output longer = run(cached, base + " And more.");
  EXPECT_EQ(longer.usage.cached_tokens, static_cast<int64_t>(f.tok.encode(base).size()));
  EXPECT_EQ(longer.text, run(plain, base + " And more.").text);
  // The state at the end of the reply: a prompt that continues the reply's tokens is served
  // from there. The reply's tokens come from the runtime's generator with the same seed.
  std::vector<int32_t> ids = f.tok.encode(base);
  {
    const GenerateResult r = generate_alone(f, ids, 9, 12);
    EXPECT_EQ(r.text, first.text[0]);
    ids.insert(ids.end(), r.tokens.begin(), r.tokens.end());
  }
  for (int32_t t : f.tok.encode(" Next.")) ids.push_back(t);
  auto run_ids = [&](Scheduler& s) {
    auto j = make_job(f.tok, "", 9, 12);
    j->prompt = ids;
    s.submit(j);
    return drain(*j);
  };
  const Output cont = run_ids(cached);
  EXPECT_GT(cont.usage.cached_tokens, longer.usage.cached_tokens);
  EXPECT_EQ(cont.text, run_ids(plain).text);
  EXPECT_GT(cached.stats().cache_hits, 2);
}

TEST(ServerScheduler, ChoicesCancellationAndLimits) {
  Fixture f;
  SchedulerOptions o;
  o.n_parallel = 2;
  o.max_queue = 2;
  Scheduler sched(f.model, f.tok, f.eos, o);
  auto single = make_job(f.tok, "Fork me", 3, 10);
  sched.submit(single);
  const Output one = drain(*single);
  auto pair = make_job(f.tok, "Fork me", 3, 10, 2);
  sched.submit(pair);
  const Output two = drain(*pair);
  EXPECT_EQ(two.text[0], one.text[0]);
  EXPECT_EQ(two.usage.completion_tokens, 20);

  auto zero = make_job(f.tok, "Nothing", 3, 0);
  sched.submit(zero);
  const Output z = drain(*zero);
  EXPECT_EQ(z.text[0], "");
  EXPECT_EQ(z.finish[0], "length");

  // Two endless jobs fill both slots; a third waits until one of them is cancelled.
  auto endless1 = make_job(f.tok, "Forever", 1, -1);
  auto endless2 = make_job(f.tok, "Forever", 2, -1);
  endless1->ignore_eos = endless2->ignore_eos = true;
  sched.submit(endless1);
  sched.submit(endless2);
  std::vector<Event> ev;
  for (auto* j : {&endless1, &endless2}) {
    ev.clear();
    while (ev.empty()) (*j)->wait(ev, std::chrono::milliseconds(100));
  }
  auto waiting = make_job(f.tok, "Later", 4, 5);
  sched.submit(waiting);
  EXPECT_FALSE(waiting->wait(ev, std::chrono::milliseconds(200))) << "no free slot yet";
  // The queue holds two at most.
  sched.submit(make_job(f.tok, "q", 1, 1));
  EXPECT_THROW(sched.submit(make_job(f.tok, "q", 1, 1)), ApiError);
  endless1->cancel();
  const Output w = drain(*waiting);
  EXPECT_FALSE(w.error);
  EXPECT_EQ(w.usage.completion_tokens, 5);
  endless2->cancel();
  EXPECT_TRUE(drain(*endless1).error);
  EXPECT_TRUE(drain(*endless2).error);
  EXPECT_EQ(sched.stats().requests_cancelled, 2);
  sched.stop();
  EXPECT_THROW(sched.submit(make_job(f.tok, "q", 1, 1)), ApiError);
}

}  // namespace
}  // namespace qrwkv::server
