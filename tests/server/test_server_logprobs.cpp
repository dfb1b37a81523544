// Log-probabilities over HTTP as evaluation harnesses read them: lm-evaluation-harness's
// `local-completions` requests (a batch of token-id prompts, echo, max_tokens 1, logprobs 1), its
// remote-tokenizer endpoints, echo with max_tokens 0, and the chat logprobs format (plain and
// streamed). Every logprob is checked against log-softmax of the model's own forward pass.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "model/model.h"
#include "tests/cli.h"
#include "tests/server/server_util.h"

namespace qrwkv {
namespace {

using nlohmann::json;
using test::http;
using test::ServerProcess;

// log-softmax rows of the model's logits for `ids` (row t predicts token t + 1).
std::vector<std::vector<double>> log_softmax_rows(const Model& m, const std::vector<int32_t>& ids) {
  State s = m.new_state();
  const std::vector<float> z = forward(m, s, ids, true);
  const auto V = static_cast<size_t>(m.config.vocab_size);
  std::vector<std::vector<double>> rows;
  for (size_t t = 0; t < ids.size(); ++t) {
    const float* r = z.data() + t * V;
    double mx = r[0], sum = 0;
    for (size_t v = 0; v < V; ++v) mx = std::max(mx, double{r[v]});
    for (size_t v = 0; v < V; ++v) sum += std::exp(r[v] - mx);
    std::vector<double> row(V);
    for (size_t v = 0; v < V; ++v) row[v] = r[v] - mx - std::log(sum);
    rows.push_back(std::move(row));
  }
  return rows;
}

size_t argmax(const std::vector<double>& row) {
  return static_cast<size_t>(std::max_element(row.begin(), row.end()) - row.begin());
}

std::vector<int32_t> tokenize(int port, const std::string& text) {
  const test::HttpResponse r =
      http(port, "POST", "/tokenize", json{{"prompt", text}, {"add_special_tokens", false}}.dump());
  EXPECT_EQ(r.status, 200) << r.body;
  return json::parse(r.body)["tokens"].get<std::vector<int32_t>>();
}

constexpr double kTol = 2e-4;  // the server's batch against a forward pass of one sequence

TEST(ServerLogprobs, LmEvalLoglikelihoodRequestsScoreEveryPromptToken) {
  ServerProcess s({"-np", "4"});
  const Model m = Model::load(test::server_chat_model());
  // lm-eval's remote-tokenizer detection: /tokenizer_info with eos_token, /tokenize's "tokens".
  const test::HttpResponse info = http(s.port(), "GET", "/tokenizer_info");
  ASSERT_EQ(info.status, 200) << info.body;
  EXPECT_TRUE(json::parse(info.body)["eos_token"].is_string()) << info.body;
  EXPECT_TRUE(json::parse(info.body)["chat_template"].is_string());
  const std::vector<int32_t> a = tokenize(s.port(), "The cat sat on the mat");
  const std::vector<int32_t> b = tokenize(s.port(), "A dog");
  ASSERT_GE(a.size(), 3u);
  ASSERT_GE(b.size(), 2u);
  const test::HttpResponse de = http(s.port(), "POST", "/detokenize", json{{"tokens", b}}.dump());
  EXPECT_EQ(json::parse(de.body)["prompt"], "A dog");

  // The exact body of LocalCompletionsAPI._create_payload(generate=False), batch of two.
  const std::string model = json::parse(http(s.port(), "GET", "/v1/models").body)["data"][0]["id"];
  const json body = {{"model", model}, {"prompt", {a, b}}, {"temperature", 0}, {"max_tokens", 1},
                     {"logprobs", 1},  {"seed", 1234},     {"echo", true}};
  const test::HttpResponse r = http(s.port(), "POST", "/v1/completions", body.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  const json j = json::parse(r.body);
  ASSERT_EQ(j["choices"].size(), 2u);
  const std::vector<int32_t>* prompts[] = {&a, &b};
  for (size_t k = 0; k < 2; ++k) {
    const json& c = j["choices"][k];
    EXPECT_EQ(c["index"], k);
    const std::vector<int32_t>& ids = *prompts[k];
    const auto rows = log_softmax_rows(m, ids);
    const json& lp = c["logprobs"];
    // Every prompt token echoed, then the one generated token.
    ASSERT_EQ(lp["tokens"].size(), ids.size() + 1) << lp.dump();
    ASSERT_EQ(lp["token_logprobs"].size(), ids.size() + 1);
    ASSERT_EQ(lp["top_logprobs"].size(), ids.size() + 1);
    ASSERT_EQ(lp["text_offset"].size(), ids.size() + 1);
    EXPECT_TRUE(lp["token_logprobs"][0].is_null());
    EXPECT_TRUE(lp["top_logprobs"][0].is_null());
    for (size_t t = 1; t < ids.size(); ++t) {
      const double want = rows[t - 1][static_cast<size_t>(ids[t])];
      EXPECT_NEAR(lp["token_logprobs"][t].get<double>(), want, kTol) << "prompt token " << t;
      // The most likely token is in the map; lm-eval's is_greedy compares with its maximum.
      double best = -INFINITY;
      for (const auto& [tok, v] : lp["top_logprobs"][t].items()) best = std::max(best, double{v});
      EXPECT_NEAR(best, *std::max_element(rows[t - 1].begin(), rows[t - 1].end()), kTol);
      EXPECT_LE(lp["top_logprobs"][t].size(), 2u);
    }
    // temperature 0: the generated token is the argmax after the prompt.
    const size_t next = argmax(rows.back());
    EXPECT_NEAR(lp["token_logprobs"][ids.size()].get<double>(), rows.back()[next], kTol);
    const std::string echo = c["text"];
    EXPECT_EQ(echo.rfind(k == 0 ? "The cat sat on the mat" : "A dog", 0), 0u) << echo;
    EXPECT_EQ(lp["text_offset"][0], 0);
    EXPECT_EQ(lp["text_offset"][ids.size()].get<size_t>(),
              std::string(k == 0 ? "The cat sat on the mat" : "A dog").size());
  }
  EXPECT_EQ(j["usage"]["prompt_tokens"], a.size() + b.size());

  // max_tokens 0 with a string prompt: the prompt alone, scored.
  const test::HttpResponse z =
      http(s.port(), "POST", "/v1/completions",
           json{{"prompt", "A dog"}, {"max_tokens", 0}, {"echo", true}, {"logprobs", 0}}.dump());
  ASSERT_EQ(z.status, 200) << z.body;
  const json zc = json::parse(z.body)["choices"][0];
  EXPECT_EQ(zc["text"], "A dog");
  EXPECT_EQ(zc["finish_reason"], "length");
  ASSERT_EQ(zc["logprobs"]["tokens"].size(), b.size());
  const auto rows_b = log_softmax_rows(m, b);
  EXPECT_NEAR(zc["logprobs"]["token_logprobs"][1].get<double>(),
              rows_b[0][static_cast<size_t>(b[1])], kTol);
  EXPECT_EQ(zc["logprobs"]["top_logprobs"][1].size(), 1u) << "logprobs 0: the chosen token only";
  EXPECT_EQ(s.stop(), 0) << s.log();
}

TEST(ServerLogprobs, ReplyTokensCarryLogprobsInBothApisPlainAndStreamed) {
  ServerProcess s({"-np", "2"});
  const Model m = Model::load(test::server_chat_model());
  // Text completion without echo: one entry per generated token, offsets into the reply text.
  const std::vector<int32_t> p = tokenize(s.port(), "Once upon a time");
  const test::HttpResponse r =
      http(s.port(), "POST", "/v1/completions",
           json{{"prompt", p}, {"max_tokens", 5}, {"temperature", 0}, {"logprobs", 3}}.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  const json c = json::parse(r.body)["choices"][0];
  const json& lp = c["logprobs"];
  ASSERT_GE(lp["tokens"].size(), 1u);
  std::vector<int32_t> seq = p;
  std::string joined;
  for (size_t i = 0; i < lp["tokens"].size(); ++i) {
    EXPECT_EQ(lp["text_offset"][i].get<size_t>(), joined.size());
    joined += lp["tokens"][i].get<std::string>();
    // Greedy: the chosen token is the most likely, and 3 alternatives (it among them).
    const auto rows = log_softmax_rows(m, seq);
    const size_t best = argmax(rows.back());
    EXPECT_NEAR(lp["token_logprobs"][i].get<double>(), rows.back()[best], kTol);
    EXPECT_EQ(lp["top_logprobs"][i].size(), 3u);
    seq.push_back(static_cast<int32_t>(best));
  }
  EXPECT_EQ(joined, c["text"].get<std::string>());

  // Chat: logprobs true, top_logprobs 2, checked against the rendered prompt's forward pass.
  const json chat = {{"messages", {{{"role", "user"}, {"content", "hello there"}}}},
                     {"max_tokens", 4},
                     {"temperature", 0},
                     {"logprobs", true},
                     {"top_logprobs", 2}};
  const test::HttpResponse rc = http(s.port(), "POST", "/v1/chat/completions", chat.dump());
  ASSERT_EQ(rc.status, 200) << rc.body;
  const json content = json::parse(rc.body)["choices"][0]["logprobs"]["content"];
  ASSERT_GE(content.size(), 1u) << rc.body;
  const test::HttpResponse tpl =
      http(s.port(), "POST", "/apply-template", json{{"messages", chat["messages"]}}.dump());
  std::vector<int32_t> cs = tokenize(s.port(), json::parse(tpl.body)["prompt"]);
  for (const json& e : content) {
    const auto rows = log_softmax_rows(m, cs);
    const size_t best = argmax(rows.back());
    EXPECT_NEAR(e["logprob"].get<double>(), rows.back()[best], kTol);
    ASSERT_EQ(e["top_logprobs"].size(), 2u);
    EXPECT_EQ(e["top_logprobs"][0]["token"], e["token"]);
    EXPECT_GE(e["top_logprobs"][0]["logprob"].get<double>(),
              e["top_logprobs"][1]["logprob"].get<double>());
    std::string bytes;
    for (int b : e["bytes"]) bytes += static_cast<char>(b);
    // The token's text is its bytes, unless they are not whole UTF-8 characters (then U+FFFD).
    if (e["token"].get<std::string>().find("\xEF\xBF\xBD") == std::string::npos) {
      EXPECT_EQ(bytes, e["token"].get<std::string>());
    }
    cs.push_back(static_cast<int32_t>(best));
  }

  // Streamed, the chunks' entries add up to the same list.
  json st = chat;
  st["stream"] = true;
  const test::HttpResponse rs = http(s.port(), "POST", "/v1/chat/completions", st.dump());
  ASSERT_EQ(rs.status, 200);
  json streamed = json::array();
  for (const std::string& ev : test::sse_data(rs.body)) {
    if (ev == "[DONE]") break;
    const json chunk = json::parse(ev);
    for (const json& ch : chunk["choices"])
      if (ch["logprobs"].is_object())
        for (const json& e : ch["logprobs"]["content"]) streamed.push_back(e);
  }
  EXPECT_EQ(streamed, content);

  // A streamed text completion with echo starts with the scored prompt.
  const test::HttpResponse re = http(s.port(), "POST", "/v1/completions",
                                     json{{"prompt", "Once upon a time"},
                                          {"max_tokens", 2},
                                          {"temperature", 0},
                                          {"echo", true},
                                          {"logprobs", 1},
                                          {"stream", true}}
                                         .dump());
  ASSERT_EQ(re.status, 200);
  std::string text;
  json tokens = json::array(), lps = json::array();
  for (const std::string& ev : test::sse_data(re.body)) {
    if (ev == "[DONE]") break;
    const json chunk = json::parse(ev);
    for (const json& ch : chunk["choices"]) {
      text += ch["text"].get<std::string>();
      if (ch["logprobs"].is_object())
        for (size_t i = 0; i < ch["logprobs"]["tokens"].size(); ++i) {
          tokens.push_back(ch["logprobs"]["tokens"][i]);
          lps.push_back(ch["logprobs"]["token_logprobs"][i]);
        }
    }
  }
  EXPECT_EQ(text.rfind("Once upon a time", 0), 0u) << text;
  ASSERT_EQ(tokens.size(), p.size() + 2) << re.body;
  EXPECT_TRUE(lps[0].is_null());
  const auto rows = log_softmax_rows(m, p);
  EXPECT_NEAR(lps[1].get<double>(), rows[0][static_cast<size_t>(p[1])], kTol);
  EXPECT_EQ(s.stop(), 0) << s.log();
}

}  // namespace
}  // namespace qrwkv
