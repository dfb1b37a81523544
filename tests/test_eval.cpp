// qrwkv eval: every metric against the same quantity computed here by hand from the model's
// logits (one forward pass over context + continuation, log-softmax in double), lm-eval's
// rolling windows, word counts and standard errors on worked examples, forked scoring against
// scoring from scratch (a recurrent state and a KV cache), task-file errors and the command.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "runtime/eval.h"
#include "runtime/loader.h"
#include "tests/cli.h"
#include "tests/expect.h"
#include "text/tok_utf8.h"

namespace qrwkv {
namespace {

using test::run_cli;

std::string models_dir() { return test::data_path("../../models"); }

LoadedModel load_float32(const std::string& dir) {
  LoadModelOptions o;
  o.model = test::float32_load(2);
  return load_model(dir, o);
}

std::string write_file(const std::string& name, const std::string& text) {
  const std::string path = test::temp_dir() + "/" + name;
  std::ofstream(path) << text;
  return path;
}

// Σ log P(cont | ctx) and whether every continuation token is the argmax, from one forward pass
// over ctx + cont.
std::pair<double, bool> by_hand(const Model& m, const std::vector<int32_t>& ctx,
                                const std::vector<int32_t>& cont) {
  std::vector<int32_t> all = ctx;
  all.insert(all.end(), cont.begin(), cont.end());
  State s = m.new_state();
  const std::vector<float> z = forward(m, s, all, true);
  const auto V = static_cast<size_t>(m.config.vocab_size);
  double ll = 0;
  bool greedy = true;
  for (size_t i = 0; i < cont.size(); ++i) {
    const float* row = z.data() + (ctx.size() + i - 1) * V;
    double mx = row[0], sum = 0;
    size_t best = 0;
    for (size_t v = 0; v < V; ++v)
      if (row[v] > row[best]) best = v;
    mx = row[best];
    for (size_t v = 0; v < V; ++v) sum += std::exp(row[v] - mx);
    ll += row[cont[i]] - mx - std::log(sum);
    greedy = greedy && best == static_cast<size_t>(cont[i]);
  }
  return {ll, greedy};
}

// lm-eval's split of a (context, continuation) pair, written out.
std::pair<std::vector<int32_t>, std::vector<int32_t>> split(const Tokenizer& tok,
                                                            const std::string& ctx,
                                                            const std::string& cont) {
  const std::vector<int32_t> c = tok.encode(ctx), whole = tok.encode(ctx + cont);
  return {c, std::vector<int32_t>(whole.begin() + static_cast<long>(c.size()), whole.end())};
}

TEST(Eval, WorkedExamples) {
  // lm-eval's windows for 12 tokens, max length 5, prefix 99.
  std::vector<int32_t> t(12);
  for (int i = 0; i < 12; ++i) t[i] = i;
  const auto w = eval::rolling_windows(t, 99, 5);
  ASSERT_EQ(w.size(), 3u);
  EXPECT_EQ(w[0].context, (std::vector<int32_t>{99}));
  EXPECT_EQ(w[0].continuations[0], (std::vector<int32_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(w[1].context, (std::vector<int32_t>{4}));
  EXPECT_EQ(w[1].continuations[0], (std::vector<int32_t>{5, 6, 7, 8, 9}));
  EXPECT_EQ(w[2].context, (std::vector<int32_t>{6, 7, 8, 9}));
  EXPECT_EQ(w[2].continuations[0], (std::vector<int32_t>{10, 11}));
  EXPECT_EQ(eval::rolling_windows(std::vector<int32_t>{7}, 99, 5).size(), 1u);
  // len(re.split(r"\s+", s)) in Python.
  EXPECT_EQ(eval::count_words("a b"), 2u);
  EXPECT_EQ(eval::count_words("a b "), 3u);
  EXPECT_EQ(eval::count_words("  a\n\n b"), 3u);
  EXPECT_EQ(tok::char_count("caf\xC3\xA9"), 4u);
  const double x[] = {1, 0, 1, 1};
  const auto [mean, se] = eval::mean_stderr(x);
  EXPECT_DOUBLE_EQ(mean, 0.75);
  EXPECT_DOUBLE_EQ(se, 0.25);  // sqrt(0.75 / 3) / 2
}

TEST(Eval, MetricsEqualTheirDefinitionsOnTheModelsLogits) {
  const LoadedModel lm = load_float32(models_dir() + "/qrwkv6-demo");
  const Model& m = lm.model;
  const Tokenizer& tok = lm.tokenizer;
  const int32_t prefix = eval::prefix_token(tok, lm.eos_ids);

  // Multiple choice, the context's trailing space moving to the continuation.
  const eval::Task mc = eval::load_task(write_file(
      "mc.jsonl",
      R"({"context": "The jury said that the", "choices": ["city", "election was fair", "of"], "gold": 1}
{"context": "He went to the ", "choices": ["house", "ocean and swam"], "gold": 0, "target_delimiter": ""}
{"context": "It was a", "choices": ["good day", "day", "long and"], "gold": 2}
)"));
  ASSERT_EQ(mc.kind, eval::TaskKind::MultipleChoice);
  const eval::TaskRequests mr = eval::task_requests(mc, tok, prefix, 2048);
  const auto ms = eval::score(m, mr.groups);
  double acc = 0, acc_norm = 0;
  for (size_t d = 0; d < mc.docs.size(); ++d) {
    const eval::Doc& doc = mc.docs[d];
    std::vector<double> ll, norm;
    for (size_t c = 0; c < doc.choices.size(); ++c) {
      std::string ctx = doc.context, cont = doc.delimiter + doc.choices[c];
      while (!ctx.empty() && ctx.back() == ' ') {
        cont.insert(cont.begin(), ' ');
        ctx.pop_back();
      }
      const auto [ids_ctx, ids_cont] = split(tok, ctx, cont);
      const auto [l, g] = by_hand(m, ids_ctx, ids_cont);
      EXPECT_NEAR(ms[d][c].logprob, l, 1e-4 * std::max(1.0, std::abs(l))) << d << "/" << c;
      EXPECT_EQ(ms[d][c].greedy, g);
      ll.push_back(l);
      norm.push_back(l / static_cast<double>(doc.choices[c].size()));
    }
    acc += std::max_element(ll.begin(), ll.end()) - ll.begin() == doc.gold;
    acc_norm += std::max_element(norm.begin(), norm.end()) - norm.begin() == doc.gold;
  }
  const auto mm = eval::task_metrics(mc, mr, ms);
  ASSERT_EQ(mm.size(), 2u);
  EXPECT_EQ(mm[0].name, "acc");
  EXPECT_DOUBLE_EQ(mm[0].value, acc / 3);
  EXPECT_EQ(mm[1].name, "acc_norm");
  EXPECT_DOUBLE_EQ(mm[1].value, acc_norm / 3);

  // Last word: accuracy is "every token of the word greedy", perplexity exp(−mean ll).
  const eval::Task lw = eval::load_task(
      write_file("lw.jsonl",
                 "{\"text\": \"The jury said that the city\"}\n{\"text\": \"It was a good day\"}\n"
                 "{\"text\": \"and the\"}\n"));
  const eval::TaskRequests lr = eval::task_requests(lw, tok, prefix, 2048);
  const auto ls = eval::score(m, lr.groups);
  double hits = 0, sum_ll = 0;
  for (const std::string text : {"The jury said that the city", "It was a good day", "and the"}) {
    const std::string s(text);
    const size_t sp = s.rfind(' ');
    const auto [c, w] = split(tok, s.substr(0, sp), s.substr(sp));
    const auto [l, g] = by_hand(m, c, w);
    hits += g;
    sum_ll += l;
  }
  const auto lm_ = eval::task_metrics(lw, lr, ls);
  EXPECT_EQ(lm_[0].name, "acc");
  EXPECT_DOUBLE_EQ(lm_[0].value, hits / 3);
  EXPECT_EQ(lm_[1].name, "perplexity");
  EXPECT_NEAR(lm_[1].value, std::exp(-sum_ll / 3), 1e-4 * lm_[1].value);

  // Rolling perplexity: with a window longer than the text, one pass after the prefix token;
  // with short windows the same total (each window scored after the token(s) before it).
  const std::string doc = "The jury said that the city election was fair.\nIt was a good day.\n";
  const eval::Task pt = eval::load_task(write_file("doc.txt", doc));
  ASSERT_EQ(pt.kind, eval::TaskKind::Perplexity);
  const std::vector<int32_t> ids = tok.encode(doc);
  const auto [ll_all, g_all] = by_hand(m, {prefix}, ids);
  const eval::TaskRequests pr = eval::task_requests(pt, tok, prefix, 2048);
  ASSERT_EQ(pr.groups.size(), 1u);
  const auto pm = eval::task_metrics(pt, pr, eval::score(m, pr.groups));
  const double words = 15, bytes = static_cast<double>(doc.size());  // 14 words + the end's ""
  EXPECT_EQ(pm[0].name, "word_perplexity");
  EXPECT_NEAR(pm[0].value, std::exp(-ll_all / words), 1e-4 * pm[0].value);
  EXPECT_NEAR(pm[1].value, std::exp(-ll_all / bytes), 1e-4 * pm[1].value);
  EXPECT_NEAR(pm[2].value, -ll_all / bytes / std::log(2.0), 1e-4);
  const eval::TaskRequests pw = eval::task_requests(pt, tok, prefix, 4);
  EXPECT_EQ(pw.groups.size(), (ids.size() + 3) / 4);
  double windows = 0;
  for (const auto& g : pw.groups) windows += by_hand(m, g.context, g.continuations[0]).first;
  const auto pwm = eval::task_metrics(pt, pw, eval::score(m, pw.groups));
  EXPECT_NEAR(pwm[2].value, -windows / bytes / std::log(2.0), 1e-4);
}

TEST(Eval, ForkedContextsScoreLikeScoringFromScratch) {
  for (const char* name : {"qrwkv6-demo", "qwen2-demo"}) {
    const LoadedModel lm = load_float32(models_dir() + "/" + name);
    std::vector<eval::Group> groups;
    for (int g = 0; g < 5; ++g) {
      eval::Group gr;
      for (int i = 0; i < 6 + 3 * g; ++i) gr.context.push_back(5 + 31 * i % 400 + g);
      for (int c = 0; c < 3; ++c) gr.continuations.push_back({7 + c, 300 + g, 12 + 5 * c});
      gr.continuations.push_back({9});
      groups.push_back(std::move(gr));
    }
    eval::ScoreOptions o;
    o.batch = 5;
    o.chunk = 4;  // several chunks per context and continuation
    size_t reported = 0;
    o.progress = [&](size_t done, size_t total) {
      EXPECT_LE(done, total);
      reported = done;
    };
    const auto forked = eval::score(lm.model, groups, o);
    EXPECT_EQ(reported, 20u);
    o.fork = false;
    const auto scratch = eval::score(lm.model, groups, o);
    for (size_t g = 0; g < groups.size(); ++g)
      for (size_t c = 0; c < 4; ++c) {
        const double want = by_hand(lm.model, groups[g].context, groups[g].continuations[c]).first;
        EXPECT_NEAR(forked[g][c].logprob, want, 1e-4 * std::abs(want)) << name;
        EXPECT_NEAR(scratch[g][c].logprob, want, 1e-4 * std::abs(want)) << name;
      }
  }
}

TEST(Eval, TaskFileErrorsNameTheLine) {
  test::expect_error(
      [&] { eval::load_task(write_file("a.jsonl", "{\"text\": \"a b\"}\n{oops\n")); },
      {"a.jsonl:2", "not valid JSON"});
  test::expect_error(
      [&] {
        eval::load_task(
            write_file("b.jsonl",
                       "{\"text\": \"a b\"}\n{\"context\": \"x\", \"choices\": [\"a\", \"b\"], "
                       "\"gold\": 0}\n"));
      },
      {"b.jsonl:2", "multiple_choice", "last_word"});
  test::expect_error(
      [&] {
        eval::load_task(
            write_file("c.jsonl", R"({"context": "x", "choices": ["a", "b"], "gold": 2})"));
      },
      {"c.jsonl:1", "gold"});
  test::expect_error([&] { eval::load_task(write_file("d.jsonl", R"({"text": "oneword"})")); },
                     {"d.jsonl:1", "last word"});
  test::expect_error([&] { eval::load_task(write_file("e.jsonl", R"({"foo": 1})")); },
                     {"e.jsonl:1", "document"});
  test::expect_error([&] { eval::load_task(write_file("f.jsonl", "\n")); }, {"no documents"});
}

TEST(Eval, CommandPrintsBothModelsAndTheSpeedup) {
  const std::string task = write_file(
      "t.jsonl",
      R"({"context": "The jury said that the", "choices": ["city", "election was fair", "of"], "gold": 1}
{"context": "It was a", "choices": ["good day", "day", "long and"], "gold": 2}
)");
  const auto r =
      run_cli({"eval", "-m", models_dir() + "/qrwkv6-demo", "--base-model",
               models_dir() + "/qwen2-demo", "--task", task, "--speedup", "-o", "json", "-t", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  for (const char* m : {"qwen2-demo", "qrwkv6-demo"}) {
    ASSERT_TRUE(j.contains(m)) << r.out;
    const auto& t = j[m]["tasks"]["t"];
    EXPECT_EQ(t["kind"], "multiple_choice");
    EXPECT_EQ(t["docs"], 2);
    EXPECT_EQ(t["requests"], 6);
    EXPECT_GE(t["acc"]["value"].get<double>(), 0.0);
    EXPECT_LE(t["acc_norm"]["value"].get<double>(), 1.0);
  }
  EXPECT_GT(j["speedup"]["scratch_tokens"].get<int>(), j["speedup"]["forked_tokens"].get<int>());

  const auto md = run_cli({"eval", "-m", models_dir() + "/qrwkv6-demo", "--task", task});
  ASSERT_EQ(md.exit_code, 0) << md.err;
  EXPECT_THAT(md.out, ::testing::HasSubstr("| t | multiple_choice | 2 | acc |"));

  EXPECT_EQ(run_cli({"eval"}).exit_code, 2);
  EXPECT_EQ(run_cli({"eval", "--task", task, "-b", "0"}).exit_code, 2);
  const auto missing = run_cli({"eval", "--task", test::temp_dir() + "/none.jsonl"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.err, ::testing::HasSubstr("none.jsonl"));
}

}  // namespace
}  // namespace qrwkv
