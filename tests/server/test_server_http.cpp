// End-to-end tests of `qrwkv serve` over real sockets: the OpenAI wire format (plain and
// streamed), errors, determinism among concurrent requests, the state cache, and faults
// (clients that hang up, garbage, huge bodies, more clients than slots). The official `openai`
// npm client drives the server too (tests/js/server_openai_test.js) when it is installed.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

#include "tests/cli.h"
#include "tests/server/server_util.h"

namespace qrwkv {
namespace {

using nlohmann::json;
using test::http;
using test::ServerProcess;
using ::testing::HasSubstr;

const std::string kKey = "test-key";

std::string chat_body(const std::string& user, int max_tokens, uint64_t seed, bool stream,
                      const std::string& more = "") {
  json j = {{"messages", {{{"role", "user"}, {"content", user}}}},
            {"max_tokens", max_tokens},
            {"seed", seed},
            {"stream", stream}};
  if (!more.empty()) j.update(json::parse(more));
  return j.dump();
}

// Streams a chat completion and checks the framing; returns the concatenated content.
std::string streamed_chat(int port, const std::string& body, json* usage = nullptr,
                          std::string* finish = nullptr) {
  const test::HttpResponse r = http(port, "POST", "/v1/chat/completions", body, kKey);
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_THAT(r.headers, HasSubstr("text/event-stream"));
  const std::vector<std::string> events = test::sse_data(r.body);
  EXPECT_GE(events.size(), 3u) << r.body;
  if (events.size() < 3) return "";
  EXPECT_EQ(events.back(), "[DONE]");
  std::string text;
  std::string id;
  bool finished = false;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    const json c = json::parse(events[i]);
    EXPECT_EQ(c["object"], "chat.completion.chunk");
    EXPECT_THAT(c["id"].get<std::string>(), ::testing::StartsWith("chatcmpl-"));
    if (id.empty()) id = c["id"];
    EXPECT_EQ(c["id"], id) << "one id per stream";
    if (c["choices"].empty()) {  // the usage chunk, after the finish chunk
      EXPECT_TRUE(finished);
      if (usage != nullptr) *usage = c["usage"];
      continue;
    }
    const json& ch = c["choices"][0];
    if (i == 0) {
      EXPECT_EQ(ch["delta"]["role"], "assistant") << "role comes first";
    }
    EXPECT_FALSE(finished) << "nothing after finish_reason but usage";
    if (ch["delta"].contains("content")) text += ch["delta"]["content"].get<std::string>();
    if (!ch["finish_reason"].is_null()) {
      finished = true;
      if (finish != nullptr) *finish = ch["finish_reason"];
    }
  }
  EXPECT_TRUE(finished);
  return text;
}

json post(int port, const std::string& path, const std::string& body, int expect_status = 200) {
  const test::HttpResponse r = http(port, "POST", path, body, kKey);
  EXPECT_EQ(r.status, expect_status) << r.body;
  EXPECT_THAT(r.headers, HasSubstr("application/json"));
  return json::parse(r.body, nullptr, false);
}

TEST(ServerHttp, HealthModelsAndPlainChatMatchesRunCommand) {
  ServerProcess s({"--api-key", kKey});
  EXPECT_EQ(http(s.port(), "GET", "/health").status, 200) << "health needs no key";
  EXPECT_EQ(http(s.port(), "GET", "/health").body, R"({"status":"ok"})");
  const test::HttpResponse models = http(s.port(), "GET", "/v1/models", "", kKey);
  ASSERT_EQ(models.status, 200);
  const json m = json::parse(models.body);
  EXPECT_EQ(m["object"], "list");
  const std::string id = m["data"][0]["id"];
  EXPECT_FALSE(id.empty());

  const json r = post(s.port(), "/v1/chat/completions",
                      json({{"model", id},
                            {"messages", {{{"role", "user"}, {"content", "Hello"}}}},
                            {"max_tokens", 10},
                            {"seed", 1}})
                          .dump());
  EXPECT_EQ(r["object"], "chat.completion");
  EXPECT_EQ(r["model"], id);
  EXPECT_EQ(r["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(r["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(r["usage"]["completion_tokens"], 10);
  EXPECT_EQ(r["usage"]["total_tokens"],
            r["usage"]["prompt_tokens"].get<int>() + r["usage"]["completion_tokens"].get<int>());
  // The same sampling as the command line: same seed, same defaults, same text.
  const test::CliResult cli = test::run_cli(
      {"run", "-m", test::server_chat_model(), "--chat", "-p", "Hello", "-s", "1", "-n", "10"});
  ASSERT_EQ(cli.exit_code, 0) << cli.err;
  EXPECT_EQ(r["choices"][0]["message"]["content"].get<std::string>() + "\n", cli.out);
  EXPECT_EQ(s.stop(), 0) << s.log();
}

TEST(ServerHttp, StreamingIsWellFormedAndEqualsPlain) {
  ServerProcess s({"--api-key", kKey});
  const json plain = post(s.port(), "/v1/chat/completions", chat_body("Tell me", 16, 7, false));
  json usage;
  std::string finish;
  const std::string text = streamed_chat(
      s.port(), chat_body("Tell me", 16, 7, true, R"({"stream_options":{"include_usage":true}})"),
      &usage, &finish);
  EXPECT_EQ(text, plain["choices"][0]["message"]["content"]);
  EXPECT_EQ(finish, "length");
  EXPECT_EQ(usage["completion_tokens"], 16);
  EXPECT_EQ(usage["prompt_tokens"], plain["usage"]["prompt_tokens"]);
  // The second request with the same prompt starts from the cached state of the first.
  EXPECT_EQ(usage["prompt_tokens_details"]["cached_tokens"], usage["prompt_tokens"]);

  // Text completions, streamed and not; stop strings end the text before them.
  const json c = post(s.port(), "/v1/completions",
                      R"({"prompt":"Once upon a time","max_tokens":12,"seed":3})");
  EXPECT_EQ(c["object"], "text_completion");
  const std::string full = c["choices"][0]["text"];
  ASSERT_GE(full.size(), 4u);
  const test::HttpResponse st =
      http(s.port(), "POST", "/v1/completions",
           R"({"prompt":"Once upon a time","max_tokens":12,"seed":3,"stream":true})", kKey);
  std::string joined;
  const auto events = test::sse_data(st.body);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back(), "[DONE]");
  for (size_t i = 0; i + 1 < events.size(); ++i)
    joined += json::parse(events[i])["choices"][0]["text"].get<std::string>();
  EXPECT_EQ(joined, full);
  const std::string stop = full.substr(full.size() / 2, 2);
  const json stopped =
      post(s.port(), "/v1/completions",
           json({{"prompt", "Once upon a time"}, {"max_tokens", 12}, {"seed", 3}, {"stop", stop}})
               .dump());
  EXPECT_EQ(stopped["choices"][0]["text"], full.substr(0, full.find(stop)));
  EXPECT_EQ(stopped["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(s.stop(), 0) << s.log();
}

TEST(ServerHttp, SeveralChoicesForkOnePrefill) {
  ServerProcess s({"--api-key", kKey, "-np", "4"});
  const json one = post(s.port(), "/v1/chat/completions", chat_body("Hi", 8, 11, false));
  const json three =
      post(s.port(), "/v1/chat/completions", chat_body("Hi", 8, 11, false, R"({"n":3})"));
  ASSERT_EQ(three["choices"].size(), 3u);
  // Choice i uses seed + i, so choice 0 is the single completion.
  EXPECT_EQ(three["choices"][0]["message"]["content"], one["choices"][0]["message"]["content"]);
  EXPECT_NE(three["choices"][1]["message"]["content"], three["choices"][2]["message"]["content"]);
  EXPECT_EQ(three["usage"]["completion_tokens"], 24);
  const json too_many =
      post(s.port(), "/v1/chat/completions", chat_body("Hi", 8, 11, false, R"({"n":5})"), 400);
  EXPECT_EQ(too_many["error"]["param"], "n");
  EXPECT_EQ(s.stop(), 0) << s.log();
}

TEST(ServerHttp, ErrorsAreOpenAiErrorObjects) {
  ServerProcess s({"--api-key", kKey, "--max-body-mb", "1"});
  const int p = s.port();
  auto expect_error = [&](const test::HttpResponse& r, int status, const std::string& type) {
    EXPECT_EQ(r.status, status) << r.body;
    const json j = json::parse(r.body, nullptr, false);
    ASSERT_TRUE(j.is_object()) << r.body;
    EXPECT_EQ(j["error"]["type"], type) << r.body;
    EXPECT_TRUE(j["error"]["message"].is_string()) << r.body;
  };
  const std::string ok = chat_body("x", 2, 1, false);
  expect_error(http(p, "POST", "/v1/chat/completions", ok, ""), 401, "authentication_error");
  expect_error(http(p, "POST", "/v1/chat/completions", ok, "wrong"), 401, "authentication_error");
  expect_error(http(p, "POST", "/v1/chat/completions", "{\"messages\": [", kKey), 400,
               "invalid_request_error");
  expect_error(http(p, "POST", "/v1/chat/completions", "[1,2]", kKey), 400,
               "invalid_request_error");
  expect_error(http(p, "POST", "/v1/chat/completions", R"({"max_tokens":3})", kKey), 400,
               "invalid_request_error");
  expect_error(http(p, "POST", "/v1/chat/completions",
                    chat_body("x", 2, 1, false, R"({"temperature":"hot"})"), kKey),
               400, "invalid_request_error");
  expect_error(http(p, "POST", "/v1/chat/completions",
                    chat_body("x", 2, 1, false, R"({"max_tokens":-4})"), kKey),
               400, "invalid_request_error");
  expect_error(http(p, "POST", "/v1/chat/completions",
                    chat_body("x", 2, 1, false, R"({"model":"gpt-4"})"), kKey),
               404, "invalid_request_error");
  expect_error(http(p, "POST", "/v1/completions", R"({"prompt":[5, 100000]})", kKey), 400,
               "invalid_request_error");
  expect_error(http(p, "GET", "/v1/nothing", "", kKey), 404, "invalid_request_error");
  std::string deep(10000, '[');
  expect_error(http(p, "POST", "/v1/chat/completions", "{\"messages\":" + deep, kKey), 400,
               "invalid_request_error");
  // A body over the limit is refused from its Content-Length, before it is read.
  const std::string big(2u << 20, ' ');
  expect_error(http(p, "POST", "/v1/chat/completions", big, kKey), 413, "invalid_request_error");
  EXPECT_EQ(http(p, "GET", "/health").status, 200);
  EXPECT_EQ(s.stop(), 0) << s.log();
}

// --max-prompt-tokens refuses longer prompts with OpenAI's context_length_exceeded; a reply
// that runs into --request-timeout ends with finish_reason "length", a request still reading its
// prompt then gets a 400 request_timeout. The CLI refuses a long prompt in one line.
TEST(ServerHttp, PromptAndTimeLimitsGiveClearErrors) {
  {
    ServerProcess s({"--api-key", kKey, "--max-prompt-tokens", "8"});
    const int p = s.port();
    json j = post(p, "/v1/completions", R"({"prompt":[1,2,3,4,5,6,7,8],"max_tokens":2})");
    EXPECT_EQ(j["usage"]["prompt_tokens"], 8) << j.dump();
    j = post(p, "/v1/completions", R"({"prompt":[1,2,3,4,5,6,7,8,9],"max_tokens":2})", 400);
    EXPECT_EQ(j["error"]["code"], "context_length_exceeded") << j.dump();
    EXPECT_EQ(j["error"]["param"], "prompt") << j.dump();
    EXPECT_THAT(j["error"]["message"].get<std::string>(),
                HasSubstr("the prompt has 9 tokens, more than the limit of 8"));
    j = post(p, "/v1/chat/completions",
             chat_body("a much longer message than eight tokens", 2, 1, false), 400);
    EXPECT_EQ(j["error"]["code"], "context_length_exceeded") << j.dump();
    EXPECT_EQ(j["error"]["param"], "messages") << j.dump();
    EXPECT_EQ(s.stop(), 0) << s.log();
  }
  {
    ServerProcess s({"--api-key", kKey, "--request-timeout", "0.5"});
    const int p = s.port();
    const auto t0 = std::chrono::steady_clock::now();
    json j = post(p, "/v1/completions",
                  R"({"prompt":[1,2,3],"max_tokens":1000000,"ignore_eos":true,"seed":1})");
    const double took =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_EQ(j["choices"][0]["finish_reason"], "length") << j.dump();
    EXPECT_GT(j["usage"]["completion_tokens"].get<int64_t>(), 0) << j.dump();
    EXPECT_LT(j["usage"]["completion_tokens"].get<int64_t>(), 1000000) << j.dump();
    EXPECT_LT(took, 5.0);
    EXPECT_EQ(s.stop(), 0) << s.log();
  }
  {
    // A deadline shorter than the prompt's first step: the prompt is never read to its end.
    ServerProcess s({"--api-key", kKey, "--request-timeout", "0.000001"});
    const json j = post(s.port(), "/v1/completions", R"({"prompt":[1,2,3],"max_tokens":4})", 400);
    EXPECT_EQ(j["error"]["code"], "request_timeout") << j.dump();
    EXPECT_THAT(j["error"]["message"].get<std::string>(), HasSubstr("--request-timeout"));
    EXPECT_EQ(s.stop(), 0) << s.log();
  }
  const auto r = test::run_cli({"run", "-m", test::server_chat_model(), "-p",
                                "a prompt of more than three tokens", "--max-prompt-tokens", "3"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("more than the limit of 3 (--max-prompt-tokens)"));
}

// 256 hostile connections (idle, half-sent headers, half-sent bodies) do not delay a
// well-formed request by more than a second, and the server keeps serving after they go.
TEST(ServerHttp, IdleAndHalfSentConnectionsDoNotDelayOthers) {
  ServerProcess s({"--api-key", kKey});
  const int p = s.port();
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::unique_ptr<test::Socket>> hostile;
  for (int i = 0; i < 256; ++i) {
    hostile.push_back(std::make_unique<test::Socket>(p));
    if (i % 3 == 1)
      hostile.back()->send_all("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-");
    if (i % 3 == 2)
      hostile.back()->send_all(
          "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"prompt\"");
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  // Opening them is quick too: the accept queue holds a burst of connections.
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0);
  for (int round = 0; round < 3; ++round) {
    const auto t1 = std::chrono::steady_clock::now();
    const json j = post(p, "/v1/completions", R"({"prompt":[1,2,3],"max_tokens":2,"seed":1})");
    const double took =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
    std::printf("a request among 256 hostile connections took %.3f s\n", took);
    EXPECT_EQ(j["usage"]["completion_tokens"], 2) << j.dump();
    EXPECT_LT(took, 1.0);
  }
  hostile.clear();
  EXPECT_EQ(post(p, "/v1/completions",
                 R"({"prompt":[1,2],"max_tokens":1})")["usage"]["completion_tokens"],
            1);
  EXPECT_EQ(s.stop(), 0) << s.log();
}

// Beyond --max-connections a connection is refused with a 503 OpenAI error object, and served
// again once the others are gone; bad values of the connection flags are usage errors.
TEST(ServerHttp, ConnectionsBeyondTheLimitAreRefusedCleanly) {
  ServerProcess s({"--api-key", kKey, "--max-connections", "4", "--read-timeout", "30"});
  const int p = s.port();
  std::vector<std::unique_ptr<test::Socket>> idle;
  for (int i = 0; i < 4; ++i) idle.push_back(std::make_unique<test::Socket>(p));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const test::HttpResponse r =
      http(p, "POST", "/v1/completions", R"({"prompt":[1],"max_tokens":1})", kKey);
  EXPECT_EQ(r.status, 503) << r.body;
  const json j = json::parse(r.body, nullptr, false);
  EXPECT_EQ(j["error"]["code"], "too_many_connections") << r.body;
  idle.clear();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(
      post(p, "/v1/completions", R"({"prompt":[1],"max_tokens":1})")["usage"]["completion_tokens"],
      1);
  EXPECT_EQ(s.stop(), 0) << s.log();
  for (const char* bad : {"--max-connections", "--read-timeout", "--keep-alive-timeout"}) {
    const auto u = test::run_cli({"serve", "-m", test::server_chat_model(), bad, "0"});
    EXPECT_EQ(u.exit_code, 2) << bad;
    EXPECT_THAT(u.err, HasSubstr(bad));
  }
}

TEST(ServerHttp, TokenizeDetokenizeApplyTemplateMetrics) {
  ServerProcess s({});
  const json t = post(s.port(), "/tokenize", R"({"content":"Hello world"})");
  ASSERT_TRUE(t["tokens"].is_array());
  ASSERT_FALSE(t["tokens"].empty());
  const json d = post(s.port(), "/detokenize", json({{"tokens", t["tokens"]}}).dump());
  EXPECT_EQ(d["content"], "Hello world");
  const json a =
      post(s.port(), "/apply-template",
           R"({"messages":[{"role":"system","content":"S"},{"role":"user","content":"U"}]})");
  EXPECT_EQ(a["prompt"],
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
            "<|im_start|>assistant\n");
  // Tools reach the template.
  const json tools = post(
      s.port(), "/apply-template",
      R"({"messages":[{"role":"user","content":"U"}],"tools":[{"type":"function","function":{"name":"get_time"}}]})");
  EXPECT_THAT(tools["prompt"].get<std::string>(), HasSubstr("get_time"));
  post(s.port(), "/v1/completions", R"({"prompt":"abc","max_tokens":3,"seed":1})");
  const test::HttpResponse m = http(s.port(), "GET", "/metrics");
  EXPECT_EQ(m.status, 200);
  for (const char* name :
       {"qrwkv_http_requests_total{path=\"/tokenize\",status=\"200\"} 1",
        "qrwkv_tokens_generated_total 3", "qrwkv_queue_depth 0", "qrwkv_state_cache_entries",
        "qrwkv_state_cache_hits_total 0", "qrwkv_tokens_per_second"})
    EXPECT_THAT(m.body, HasSubstr(name));
  EXPECT_EQ(s.stop(), 0) << s.log();
}

// Eight concurrent streams with different seeds; each must equal the same request run alone.
TEST(ServerHttp, SeededOutputIsTheSameAloneAndAmongConcurrentRequests) {
  ServerProcess s({"--api-key", kKey, "-np", "8", "--state-cache-mb", "0"});
  constexpr int kClients = 8;
  auto body = [](int i) { return chat_body("Story " + std::to_string(i % 3), 24, 100 + i, true); };
  std::vector<std::string> alone(kClients), together(kClients);
  for (int i = 0; i < kClients; ++i) alone[i] = streamed_chat(s.port(), body(i));
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i)
    threads.emplace_back([&, i] { together[i] = streamed_chat(s.port(), body(i)); });
  for (auto& t : threads) t.join();
  for (int i = 0; i < kClients; ++i) {
    EXPECT_FALSE(alone[i].empty());
    EXPECT_EQ(together[i], alone[i]) << "client " << i;
  }
  const std::string metrics = http(s.port(), "GET", "/metrics", "", kKey).body;
  EXPECT_THAT(metrics, HasSubstr("qrwkv_requests_finished_total 16"));
  EXPECT_EQ(s.stop(), 0) << s.log();
}

TEST(ServerHttp, MultiTurnPromptsOnlyFeedTheNewTokens) {
  ServerProcess s({"--api-key", kKey});
  json messages = json::array();
  int64_t previous_prompt = 0;
  for (int turn = 0; turn < 4; ++turn) {
    messages.push_back({{"role", "user"}, {"content", "Turn " + std::to_string(turn)}});
    const json r = post(s.port(), "/v1/chat/completions",
                        json({{"messages", messages}, {"max_tokens", 6}, {"seed", turn}}).dump());
    const json& u = r["usage"];
    const int64_t prompt = u["prompt_tokens"], cached = u["prompt_tokens_details"]["cached_tokens"];
    if (turn > 0) {
      // At least the previous prompt comes from the cache (its reply too, when the reply
      // re-tokenizes to the tokens generated), so what is fed does not grow with the history.
      EXPECT_GE(cached, previous_prompt) << "turn " << turn;
      EXPECT_LE(prompt - cached, 40) << "turn " << turn;
    }
    previous_prompt = prompt;
    messages.push_back(r["choices"][0]["message"]);
  }
  EXPECT_EQ(s.stop(), 0) << s.log();
}

TEST(ServerHttp, SurvivesHangUpsGarbageHugeBodiesAndMoreClientsThanSlots) {
  ServerProcess s({"--api-key", kKey, "-np", "1"});
  const int p = s.port();
  // A stream that would never end (no end-of-generation, no limit) whose client hangs up: its
  // only slot must be freed, or the next request would wait forever.
  {
    test::Socket sock(p);
    sock.send_all(test::request_text("POST", "/v1/chat/completions",
                                     chat_body("x", 1000000, 1, true, R"({"ignore_eos":true})"),
                                     kKey));
    std::string got;
    while (got.find("\"content\":\"") == std::string::npos || got.size() < 2000)
      ASSERT_TRUE(sock.recv_some(got, 5)) << got;
  }
  const json after = post(p, "/v1/chat/completions", chat_body("y", 4, 2, false));
  EXPECT_EQ(after["usage"]["completion_tokens"], 4);
  EXPECT_THAT(http(p, "GET", "/metrics", "", kKey).body,
              HasSubstr("qrwkv_requests_cancelled_total 1"));

  // Garbage instead of HTTP, and a truncated request line.
  for (const std::string& junk :
       {std::string("\x01\xff\xfeGARBAGE\r\n\r\n", 14),
        std::string("POST /v1/chat/completions HTTP/1.1\r\nContent-Le")}) {
    test::Socket sock(p);
    sock.send_all(junk);
    ::shutdown(sock.fd(), SHUT_WR);
    sock.recv_all(10);
  }
  // A 100 MB body: refused (413) without keeping it; the client may see the connection close
  // while it is still sending.
  {
    test::Socket sock(p);
    std::string head =
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + kKey +
        "\r\nConnection: close\r\nContent-Length: " + std::to_string(100u << 20) + "\r\n\r\n";
    sock.send_all(head);
    const std::string chunk(1 << 20, 'a');
    for (int i = 0; i < 100 && sock.send_all(chunk); ++i) {
    }
    const std::string raw = sock.recv_all(10);
    if (!raw.empty()) {
      EXPECT_EQ(test::parse_response(raw).status, 413) << raw.substr(0, 200);
    }
  }
  // Six clients on one slot: they queue, and all are served.
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 6; ++i)
    threads.emplace_back([&, i] {
      const test::HttpResponse r =
          http(p, "POST", "/v1/chat/completions", chat_body("z", 8, i, i % 2 == 0), kKey);
      if (r.status == 200) ++ok;
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 6);
  EXPECT_EQ(http(p, "GET", "/health").status, 200);
  EXPECT_EQ(s.stop(), 0) << s.log();
}

TEST(ServerHttp, OfficialOpenAiClient) {
  const std::string script = test::data_path("../js/server_openai_test.js");
  const std::string module = test::data_path("../js/node_modules/openai/package.json");
  if (!std::filesystem::exists(module) || std::system("node --version >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "node or tests/js/node_modules/openai missing (run scripts/setup)";
  ServerProcess s({"--api-key", kKey, "-np", "4"});
  const std::string out = test::temp_dir() + "/node.out";
  const std::string cmd = "node '" + script + "' http://127.0.0.1:" + std::to_string(s.port()) +
                          "/v1 " + kKey + " >'" + out + "' 2>&1";
  const int rc = std::system(cmd.c_str());
  EXPECT_EQ(rc, 0) << test::read_file(out);
  EXPECT_THAT(test::read_file(out), HasSubstr("all passed"));
  EXPECT_EQ(s.stop(), 0) << s.log();
}

// The load measurement of bench/server_load.js, bounded for the test suite: 16 streaming clients
// against 8 slots for a few seconds, after a one-client baseline. The script exits non-zero on
// any error, malformed stream or seeded probe whose bytes differ from its output alone.
TEST(ServerHttp, SixteenStreamingClientsAreErrorFreeAndDeterministic) {
  if (std::system("node --version >/dev/null 2>&1") != 0) GTEST_SKIP() << "node missing";
  ServerProcess s({"--api-key", kKey, "-np", "8"});
  const std::string out = test::temp_dir() + "/load.out";
  const std::string cmd = "node '" + test::data_path("../../bench/server_load.js") +
                          "' load http://127.0.0.1:" + std::to_string(s.port()) +
                          " --clients 16 --seconds 6 --max-tokens 16 --key " + kKey + " >'" + out +
                          "' 2>&1";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << test::read_file(out);
  EXPECT_THAT(test::read_file(out), HasSubstr("determinism mismatches 0"));
  EXPECT_EQ(s.stop(), 0) << s.log();
}

// curl, the other client every user has: a stream ends with [DONE], and a missing key is a 401
// with an OpenAI error object.
TEST(ServerHttp, Curl) {
  if (std::system("curl --version >/dev/null 2>&1") != 0) GTEST_SKIP() << "curl missing";
  ServerProcess s({"--api-key", kKey});
  const std::string url = "http://127.0.0.1:" + std::to_string(s.port()) + "/v1/chat/completions";
  const std::string dir = test::temp_dir();
  const std::string body =
      R"({"messages":[{"role":"user","content":"Hi"}],"max_tokens":8,"seed":3,"stream":true})";
  std::string cmd = "curl -sN -H 'Authorization: Bearer " + std::string(kKey) +
                    "' -H 'Content-Type: application/json' -d '" + body + "' " + url + " >'" + dir +
                    "/stream.out'";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  const std::string stream = test::read_file(dir + "/stream.out");
  EXPECT_THAT(stream, HasSubstr("\"role\":\"assistant\""));
  EXPECT_EQ(stream.substr(stream.size() - 14), "data: [DONE]\n\n") << stream;
  cmd = "curl -s -o '" + dir +
        "/denied.out' -w '%{http_code}' -H 'Content-Type: application/json' -d '" + body + "' " +
        url + " >'" + dir + "/status.out'";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  EXPECT_EQ(test::read_file(dir + "/status.out"), "401");
  const json err = json::parse(test::read_file(dir + "/denied.out"));
  EXPECT_TRUE(err["error"]["message"].is_string()) << err.dump();
  EXPECT_EQ(s.stop(), 0) << s.log();
}

}  // namespace
}  // namespace qrwkv
