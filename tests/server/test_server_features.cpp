// Tests of the server's structured output: the JSON prefix validator behind response_format
// (exhaustively on small inputs), constrained decoding with the tiny model, tool-call parsing
// (whole and streamed) and the chat template input for tool conversations, and the state
// cache's disk tier (eviction to disk, restore, damaged and foreign files).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "model/model.h"
#include "runtime/chat.h"
#include "runtime/generator.h"
#include "runtime/json_prefix.h"
#include "runtime/loader.h"
#include "server/api.h"
#include "server/scheduler.h"
#include "server/state_cache.h"
#include "server/tool_calls.h"
#include "tests/cli.h"
#include "tests/server/server_util.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace qrwkv::server {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
namespace fs = std::filesystem;

// ---- JSON prefix validator ----------------------------------------------------------------

bool accepts(std::string_view s,
             JsonPrefixValidator::TopLevel top = JsonPrefixValidator::TopLevel::Object) {
  JsonPrefixValidator v(top);
  return v.push(s);
}

bool complete(std::string_view s) {
  JsonPrefixValidator v;
  return v.push(s) && v.complete();
}

// The parser's view of `s` as the start of a JSON object document: `whole` when it is one,
// `error_inside` when the parser finds an error before the end of the input (so that no
// continuation can help).
void parser_view(const std::string& s, bool& whole, bool& error_inside) {
  whole = error_inside = false;
  const size_t first = s.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && s[first] != '{') {
    error_inside = true;
    return;
  }
  try {
    whole = nlohmann::json::parse(s).is_object();
    error_inside = !whole;
  } catch (const nlohmann::json::parse_error& e) {
    error_inside = e.byte <= s.size();
  }
}

// Whether some short continuation makes `s` a whole object document.
bool completable(const std::string& s) {
  const std::string ends = "0\"}]:,1e";
  std::vector<std::string> level = {s};
  for (int n = 0; n < 3; ++n) {
    std::vector<std::string> next;
    for (const std::string& b : level)
      for (char c : ends) {
        const auto j = nlohmann::json::parse(b + c, nullptr, false);
        if (!j.is_discarded() && j.is_object()) return true;
        next.push_back(b + c);
      }
    level = std::move(next);
  }
  return false;
}

TEST(ServerJsonPrefix, AgreesWithTheParserOnEveryShortString) {
  // Every string over an alphabet covering the grammar's tokens, up to 6 characters: the
  // validator calls exactly the whole documents complete, never accepts what the parser
  // finds an error in, and refuses nothing that a short continuation would complete. A
  // refused string is not extended: the checks above cover its extensions.
  const std::string alphabet = "{}[]\":,01-.e+tn \\u";
  std::vector<std::string> level = {""};
  size_t checked = 0;
  for (int len = 1; len <= 6; ++len) {
    std::vector<std::string> next;
    for (const std::string& base : level) {
      for (char c : alphabet) {
        std::string s = base + c;
        JsonPrefixValidator v;
        const bool ok = v.push(s);
        bool whole = false, error_inside = false;
        parser_view(s, whole, error_inside);
        ASSERT_EQ(ok && v.complete(), whole) << "'" << s << "'";
        if (ok) {
          ASSERT_FALSE(error_inside) << "'" << s << "'";
          next.push_back(std::move(s));
        } else if (!error_inside) {
          // The parser has not seen the error yet (it is inside the last token).
          ASSERT_FALSE(completable(s)) << "'" << s << "'";
        }
        ++checked;
      }
    }
    level = std::move(next);
  }
  EXPECT_GT(checked, 100000u);
}

TEST(ServerJsonPrefix, StringsNumbersLiteralsAndLimits) {
  EXPECT_TRUE(complete(R"({"a": [1, -0.5e+3, true, false, null, "x", {}], "b": {"c": []}})"));
  EXPECT_TRUE(complete("{\"é\": \"\\u00e9\\n\\ud83d\\ude00 \xf0\x9f\x98\x80\"}\n  "));
  EXPECT_TRUE(accepts("{\"a\": 12"));  // a number may go on
  EXPECT_FALSE(complete("{\"a\": 12"));
  for (const char* bad : {"[",
                          "\"x\"",
                          "1",
                          " {\"a\" 1}",
                          "{'a': 1}",
                          "{\"a\":01}",
                          "{\"a\":-}",
                          "{\"a\":1.}",
                          "{\"a\":1e}",
                          "{\"a\":.5}",
                          "{\"a\":tru}",
                          "{\"a\":1,}",
                          "{,}",
                          "{\"a\":[1,]}",
                          "{}}",
                          "{} x",
                          "{\"a\":\"\x01\"}",
                          "{\"a\":\"\\x\"}",
                          "{\"a\":\"\\u12g4\"}",
                          "{\"a\":\"\\udc00\"}",
                          "{\"a\":\"\\ud800x\"}",
                          "{\"a\":\"\xff\"}",
                          "{\"a\":\"\xc0\x80\"}",
                          "{\"a\":\"\xed\xa0\x80\"}",
                          "{\"a\":\"\xf4\x90\x80\x80\"}"})
    EXPECT_FALSE(complete(bad) || (accepts(bad) && std::string_view(bad).back() == '}')) << bad;
  EXPECT_FALSE(accepts("[1]x"));
  EXPECT_FALSE(accepts("{\"a\":1}x"));
  EXPECT_FALSE(accepts("{\"a\":\"\x01"));
  EXPECT_FALSE(accepts("{\"a\":\"\\ud800x"));
  EXPECT_FALSE(accepts("{\"a\":\"\xc0"));
  using T = JsonPrefixValidator::TopLevel;
  EXPECT_TRUE(accepts("[1, 2]", T::Array));
  EXPECT_FALSE(accepts("{", T::Array));
  EXPECT_TRUE(accepts("[", T::ObjectOrArray));
  EXPECT_TRUE(accepts("{", T::ObjectOrArray));
  // Whitespace outside strings is bounded, so that a model cannot stall in it.
  EXPECT_TRUE(accepts("{" + std::string(16, ' ')));
  EXPECT_FALSE(accepts("{" + std::string(17, ' ')));
  EXPECT_TRUE(accepts("{\"" + std::string(100, ' ')));
  // Nesting is bounded too.
  EXPECT_TRUE(accepts("{\"a\":" + std::string(63, '[')));
  EXPECT_FALSE(accepts("{\"a\":" + std::string(64, '[')));
}

// ---- response_format with the tiny model --------------------------------------------------

struct Fixture {
  Model model = Model::load(test::server_chat_model(), {WeightFormat::Stored, nullptr, 1});
  Tokenizer tok = Tokenizer::from_dir(test::server_chat_model());
  std::set<int32_t> eos = end_of_generation_ids(test::server_chat_model(), model.config, tok);
};

std::pair<std::string, std::string> run_job(Scheduler& s, const std::shared_ptr<Job>& job) {
  s.submit(job);
  std::string text, finish;
  std::vector<Event> ev;
  for (;;) {
    const bool over = job->wait(ev, std::chrono::milliseconds(100));
    for (const Event& e : ev) {
      text += e.text;
      if (!e.finish_reason.empty()) finish = e.finish_reason;
    }
    ev.clear();
    if (over) break;
  }
  EXPECT_FALSE(job->error()) << *job->error();
  return {text, finish};
}

TEST(ServerScheduler, JsonResponseFormatGivesParsableJson) {
  Fixture f;
  SchedulerOptions o;
  o.cache_bytes = 0;
  Scheduler sched(f.model, f.tok, f.eos, o);
  int complete_docs = 0;
  for (uint64_t seed = 1; seed <= 12; ++seed) {
    for (auto top : {JsonPrefixValidator::TopLevel::Object, JsonPrefixValidator::TopLevel::Array}) {
      auto job = std::make_shared<Job>();
      job->prompt = f.tok.encode("Answer in JSON:");
      job->sampling.seed = seed;
      job->sampling.temperature = 1.0f;
      job->max_tokens = 400;
      job->json = top;
      const auto [text, finish] = run_job(sched, job);
      // The output is a JSON prefix at any length, and a whole document when it stops.
      JsonPrefixValidator v(top);
      EXPECT_TRUE(v.push(text)) << seed << ": " << text;
      if (finish == "stop") {
        const auto j = nlohmann::json::parse(text, nullptr, false);
        ASSERT_FALSE(j.is_discarded()) << seed << ": " << text;
        EXPECT_EQ(j.is_object(), top == JsonPrefixValidator::TopLevel::Object) << text;
        ++complete_docs;
      } else {
        EXPECT_EQ(finish, "length");
      }
    }
  }
  EXPECT_GT(complete_docs, 0) << "no seed completed a document within max_tokens";
  // Without the constraint the same prompt and seed give text that is not JSON.
  auto plain = std::make_shared<Job>();
  plain->prompt = f.tok.encode("Answer in JSON:");
  plain->sampling.seed = 1;
  plain->max_tokens = 30;
  EXPECT_TRUE(nlohmann::json::parse(run_job(sched, plain).first, nullptr, false).is_discarded());
}

TEST(ServerApi, ResponseFormatTypes) {
  RequestLimits l;
  l.max_n = 1;
  l.vocab_size = 1000;
  const std::string m = R"({"messages":[{"role":"user","content":"hi"}],"response_format":)";
  EXPECT_FALSE(parse_chat_request(m + R"({"type":"text"}})", l).gen.json);
  EXPECT_EQ(parse_chat_request(m + R"({"type":"json_object"}})", l).gen.json,
            JsonPrefixValidator::TopLevel::Object);
  EXPECT_EQ(
      parse_chat_request(
          m + R"({"type":"json_schema","json_schema":{"name":"x","schema":{"type":"array"}}}})", l)
          .gen.json,
      JsonPrefixValidator::TopLevel::Array);
  EXPECT_EQ(
      parse_chat_request(m + R"({"type":"json_schema","json_schema":{"name":"x"}}})", l).gen.json,
      JsonPrefixValidator::TopLevel::ObjectOrArray);
  EXPECT_EQ(
      parse_completion_request(R"({"prompt":"x","response_format":{"type":"json_object"}})", l)
          .gen.json,
      JsonPrefixValidator::TopLevel::Object);
  for (const char* bad :
       {R"({"type":"xml"}})", R"({"type":1}})", R"("json"})",
        R"({"type":"json_schema","json_schema":[]}})",
        R"({"type":"json_schema","json_schema":{"schema":{"type":"number"}}}})"}) {
    try {
      parse_chat_request(m + bad, l);
      ADD_FAILURE() << bad;
    } catch (const ApiError& e) {
      EXPECT_EQ(e.status, 400) << bad;
      EXPECT_EQ(e.param.rfind("response_format", 0), 0u) << bad;
    }
  }
}

// ---- tool calls ---------------------------------------------------------------------------

TEST(ServerToolCalls, ParsesHermesBlocksAndLeavesMalformedOnesAsContent) {
  const std::string text =
      "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": "
      "\"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"time\", \"arguments\": "
      "\"{\\\"tz\\\": \\\"UTC\\\"}\"}\n</tool_call>";
  ParsedReply r = parse_tool_calls(text);
  ASSERT_EQ(r.calls.size(), 2u);
  EXPECT_EQ(r.calls[0].name, "get_weather");
  EXPECT_EQ(nlohmann::json::parse(r.calls[0].arguments), nlohmann::json({{"city", "Paris"}}));
  EXPECT_EQ(r.calls[1].name, "time");
  EXPECT_EQ(nlohmann::json::parse(r.calls[1].arguments), nlohmann::json({{"tz", "UTC"}}));
  EXPECT_THAT(r.calls[0].id, StartsWith("call_"));
  EXPECT_NE(r.calls[0].id, r.calls[1].id);
  EXPECT_EQ(r.content, "Let me check.\n\n");

  // Malformed bodies and an unclosed block are not calls: the text stays as it was.
  for (const std::string& body :
       {std::string("{\"name\": \"f\", \"arguments\": {\"a\": }"), std::string("[1]"),
        std::string("{\"arguments\": {}}"), std::string("{\"name\": 3}"),
        std::string("{\"name\": \"f\", \"arguments\": [1]}"),
        std::string("{\"name\": \"f\", \"arguments\": \"not json\"}"),
        std::string("{\"name\": \"f\", \"arguments\": ") + std::string(100, '[')}) {
    const std::string t = "a<tool_call>" + body + "</tool_call>b";
    r = parse_tool_calls(t);
    EXPECT_TRUE(r.calls.empty()) << body;
    EXPECT_EQ(r.content, t);
  }
  r = parse_tool_calls("x <tool_call>{\"name\": \"f\"}");
  EXPECT_TRUE(r.calls.empty());
  EXPECT_EQ(r.content, "x <tool_call>{\"name\": \"f\"}");
  r = parse_tool_calls("<tool_call>{\"name\": \"f\"}</tool_call>");
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_EQ(r.calls[0].arguments, "{}");
}

TEST(ServerToolCalls, MessageShapes) {
  std::string finish = "stop";
  ojson m = chat_message("<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 1}}\n</tool_call>",
                         true, finish);
  EXPECT_EQ(finish, "tool_calls");
  EXPECT_TRUE(m["content"].is_null());
  ASSERT_EQ(m["tool_calls"].size(), 1u);
  const ojson& c = m["tool_calls"][0];
  EXPECT_THAT(c["id"].get<std::string>(), StartsWith("call_"));
  EXPECT_EQ(c["type"], "function");
  EXPECT_EQ(c["function"]["name"], "f");
  ASSERT_TRUE(c["function"]["arguments"].is_string()) << "OpenAI sends arguments as a string";
  EXPECT_EQ(ojson::parse(c["function"]["arguments"].get<std::string>()), ojson({{"x", 1}}));

  finish = "stop";
  m = chat_message("Sure. <tool_call>{\"name\": \"f\"}</tool_call>  ", true, finish);
  EXPECT_EQ(m["content"], "Sure.");
  finish = "stop";
  const std::string plain = "<tool_call>{\"name\": \"f\"}</tool_call>";
  m = chat_message(plain, false, finish);
  EXPECT_EQ(m["content"], plain) << "without tools in the request nothing is parsed";
  EXPECT_FALSE(m.contains("tool_calls"));
  EXPECT_EQ(finish, "stop");
  m = chat_message("no calls here", true, finish);
  EXPECT_EQ(m["content"], "no calls here");
  EXPECT_FALSE(m.contains("tool_calls"));
  EXPECT_EQ(finish, "stop");
}

TEST(ServerToolCalls, StreamedDeltasMatchTheWholeReply) {
  const std::vector<std::string> texts = {
      "Let me check.\n<tool_call>\n{\"name\": \"a\", \"arguments\": {\"q\": \"<tool\"}}\n"
      "</tool_call>\n<tool_call>\n{\"name\": \"b\", \"arguments\": {}}\n</tool_call>\n",
      "Plain text with a < sign and <tool but no call.",
      "Bad: <tool_call>{\"name\": }</tool_call> then <tool_call>{\"name\": \"c\"}</tool_call> end",
      "Unclosed <tool_call>{\"name\": \"d\"",
      "<tool_call>{\"name\": \"e\"}</tool_call>",
  };
  for (const std::string& text : texts) {
    std::string whole_finish = "stop";
    const ojson whole = chat_message(text, true, whole_finish);
    for (size_t piece = 1; piece <= 7; ++piece) {
      ToolCallStream s;
      std::vector<ojson> deltas;
      for (size_t i = 0; i < text.size(); i += piece)
        for (ojson& d : s.push(std::string_view(text).substr(i, piece))) deltas.push_back(d);
      for (ojson& d : s.flush()) deltas.push_back(d);
      std::string content;
      std::vector<std::string> names, args;
      int expected_index = 0;
      for (const ojson& d : deltas) {
        if (d.contains("content")) content += d["content"].get<std::string>();
        if (d.contains("tool_calls")) {
          const ojson& c = d["tool_calls"][0];
          EXPECT_EQ(c["index"], expected_index++);
          EXPECT_THAT(c["id"].get<std::string>(), StartsWith("call_"));
          names.push_back(c["function"]["name"]);
          args.push_back(c["function"]["arguments"]);
        }
      }
      const ojson& calls = whole.contains("tool_calls") ? whole["tool_calls"] : ojson::array();
      ASSERT_EQ(names.size(), calls.size()) << text;
      for (size_t i = 0; i < names.size(); ++i) {
        EXPECT_EQ(names[i], calls[i]["function"]["name"]);
        EXPECT_EQ(args[i], calls[i]["function"]["arguments"]);
      }
      EXPECT_EQ(s.saw_calls(), !calls.empty());
      const std::string expected =
          whole["content"].is_null() ? "" : whole["content"].get<std::string>();
      // The whole reply's content is trimmed when it has calls; the stream only drops the
      // whitespace around the calls.
      EXPECT_EQ(content, expected) << text << " / piece " << piece;
    }
  }
}

TEST(ServerToolCalls, ToolConversationsReachTheTemplateAsHuggingFacePassesThem) {
  RequestLimits l;
  l.max_n = 1;
  l.vocab_size = 1000;
  const std::string body = R"({
    "messages": [
      {"role": "user", "content": "Weather in Paris?"},
      {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
      {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
    ],
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "d",
      "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
  })";
  const ChatRequest r = parse_chat_request(body, l);
  EXPECT_TRUE(r.tools);
  const ojson& call = r.template_input["messages"][1]["tool_calls"][0];
  EXPECT_EQ(call["function"]["arguments"], ojson({{"city", "Paris"}}))
      << "string arguments are passed as the mapping templates expect";
  const ChatTemplate t = ChatTemplate::load(test::data_path("chat/qwen2.5"));
  const std::string prompt = t.render(r.template_input);
  EXPECT_THAT(prompt, HasSubstr("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": "
                                "{\"city\": \"Paris\"}}\n</tool_call>"));
  EXPECT_THAT(prompt, HasSubstr("<tool_response>\nsunny\n</tool_response>"));
  EXPECT_THAT(prompt, HasSubstr("\"name\": \"get_weather\""));

  // tool_choice "none" turns parsing off; malformed tool_calls are 400s.
  ojson j = ojson::parse(body);
  j["tool_choice"] = "none";
  EXPECT_FALSE(parse_chat_request(j.dump(), l).tools);
  for (const char* bad : {R"([{"type":"function"}])", R"({"a":1})", R"([{"function":{"name":1}}])",
                          R"([{"function":{"name":"f","arguments":5}}])"}) {
    ojson b = ojson::parse(body);
    b["messages"][1]["tool_calls"] = ojson::parse(bad);
    try {
      parse_chat_request(b.dump(), l);
      ADD_FAILURE() << bad;
    } catch (const ApiError& e) {
      EXPECT_EQ(e.status, 400) << bad;
    }
  }
  ojson b = ojson::parse(body);
  b["messages"][0]["tool_calls"] = ojson::array();
  EXPECT_THROW(parse_chat_request(b.dump(), l), ApiError) << "only assistants call tools";
}

// ---- disk tier of the state cache ---------------------------------------------------------

TEST(ServerStateCache, DiskTierKeepsEvictedStatesAndSkipsDamagedOrForeignFiles) {
  const Model m = Model::load(test::data_path("models/qrwkv6_tiny"));
  const size_t entry = m.state_bytes() + m.config.vocab_size * sizeof(float) + 64;
  const std::string dir = test::temp_dir() + "/states";
  auto state_for = [&](std::vector<int32_t> t) {
    State s = m.new_state();
    return std::make_pair(forward(m, s, t, false), s);
  };
  auto [l1, s1] = state_for({1, 2, 3});
  auto [l2, s2] = state_for({4, 5});
  DiskTierOptions disk{dir, size_t{64} << 20, 42};
  {
    StateCache cache(m.config, entry + 100, disk);  // room for one entry in memory
    cache.insert({1, 2, 3}, s1, l1);
    EXPECT_EQ(cache.disk_entries(), 0u);
    cache.insert({4, 5}, s2, l2);  // evicts {1, 2, 3} to disk
    EXPECT_EQ(cache.entries(), 1u);
    EXPECT_EQ(cache.disk_entries(), 1u);
    auto hit = cache.lookup(std::vector<int32_t>{1, 2, 3});
    ASSERT_TRUE(hit) << "found on disk";
    EXPECT_EQ(hit->n_tokens, 3u);
    EXPECT_EQ(hit->logits, l1);
    EXPECT_EQ(serialize_state(hit->state), serialize_state(s1));
    cache.persist();  // {4, 5} was evicted by the load above; everything is on disk now
    EXPECT_EQ(cache.disk_entries(), 2u);
  }
  // No temporary files are left behind.
  std::string file1, file2;  // the files of {1, 2, 3} and {4, 5}
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    EXPECT_EQ(e.path().extension(), ".qrwkvstate") << e.path();
    ++files;
    const std::string bytes = test::read_file(e.path().string());
    (bytes.size() > 20 && bytes[20] == 3 ? file1 : file2) = e.path().string();
  }
  ASSERT_EQ(files, 2u);
  ASSERT_FALSE(file1.empty());
  ASSERT_FALSE(file2.empty());
  // Damaged files: garbage, and (in place of the file of {1, 2, 3}) a truncated copy and a
  // copy with a flipped byte in the state.
  const std::string good = test::read_file(file1);
  fs::remove(file1);
  auto write = [&](const std::string& name, const std::string& bytes) {
    std::ofstream(dir + "/" + name, std::ios::binary) << bytes;
  };
  write("garbage.qrwkvstate", "not a state at all");
  write("truncated.qrwkvstate", good.substr(0, good.size() / 2));
  std::string flipped = good;
  flipped[flipped.size() - 100] ^= 0x55;
  write("flipped.qrwkvstate", flipped);
  // Temporaries of writes that never finished: an old one is removed, a recent one may be a
  // write in progress and stays.
  write("old.qrwkvstate.tmp.1", "partial");
  fs::last_write_time(dir + "/old.qrwkvstate.tmp.1",
                      fs::file_time_type::clock::now() - std::chrono::hours(1));
  write("new.qrwkvstate.tmp.2", "partial");
  {
    StateCache cache(m.config, entry + 100, disk);
    // The garbage is skipped when indexed; the others have intact headers and are skipped
    // when a request needs them, which then misses the cache.
    EXPECT_EQ(cache.disk_entries(), 3u);
    EXPECT_FALSE(fs::exists(dir + "/old.qrwkvstate.tmp.1"));
    EXPECT_TRUE(fs::exists(dir + "/new.qrwkvstate.tmp.2"));
    EXPECT_FALSE(cache.lookup(std::vector<int32_t>{1, 2, 3, 9}));
    EXPECT_EQ(cache.disk_entries(), 1u);
    auto hit = cache.lookup(std::vector<int32_t>{4, 5, 6});
    ASSERT_TRUE(hit);
    EXPECT_EQ(hit->n_tokens, 2u);
    EXPECT_EQ(serialize_state(hit->state), serialize_state(s2));
  }
  write("a.qrwkvstate", good);  // {1, 2, 3} again, under another name, the newest file
  fs::last_write_time(dir + "/a.qrwkvstate", fs::file_time_type::clock::now());
  {
    // Another model (another key) uses none of them.
    DiskTierOptions other = disk;
    other.model_key = 43;
    StateCache cache(m.config, entry + 100, other);
    EXPECT_EQ(cache.disk_entries(), 0u);
    EXPECT_FALSE(cache.lookup(std::vector<int32_t>{1, 2, 3, 9}));
  }
  {
    // The directory's budget keeps the newest files.
    DiskTierOptions small = disk;
    small.budget_bytes = good.size() + 10;
    StateCache cache(m.config, entry + 100, small);
    EXPECT_EQ(cache.disk_entries(), 1u);
    EXPECT_TRUE(cache.lookup(std::vector<int32_t>{1, 2, 3, 9})) << "the newest file stays";
    EXPECT_LE(cache.disk_bytes(), small.budget_bytes);
  }
}

// ---- over HTTP ----------------------------------------------------------------------------

std::string chat_json(const nlohmann::json& messages, int max_tokens, uint64_t seed,
                      const std::string& more = "") {
  nlohmann::json j = {{"messages", messages}, {"max_tokens", max_tokens}, {"seed", seed}};
  if (!more.empty()) j.update(nlohmann::json::parse(more));
  return j.dump();
}

nlohmann::json post_chat(int port, const std::string& body, double seconds = 60) {
  const test::HttpResponse r = test::http(port, "POST", "/v1/chat/completions", body, "", seconds);
  EXPECT_EQ(r.status, 200) << r.body;
  return nlohmann::json::parse(r.body, nullptr, false);
}

TEST(ServerHttp, StateDirLetsARestartedServerContinueACachedConversation) {
  const std::string dir = test::temp_dir() + "/state-dir";
  const nlohmann::json turn1 = {{{"role", "user"}, {"content", "Hello there"}}};
  std::string reply;
  int64_t prompt1 = 0;
  {
    test::ServerProcess s({"--state-dir", dir});
    const nlohmann::json r = post_chat(s.port(), chat_json(turn1, 8, 3));
    reply = r["choices"][0]["message"]["content"];
    prompt1 = r["usage"]["prompt_tokens"];
    EXPECT_EQ(r["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    EXPECT_EQ(s.stop(), 0) << s.log();
  }
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(dir)) files += e.path().extension() == ".qrwkvstate";
  EXPECT_GE(files, 1u) << "the states were saved at exit";
  std::ofstream(dir + "/junk.qrwkvstate", std::ios::binary) << "QRWKVPFX but nothing else";

  nlohmann::json turn2 = turn1;
  turn2.push_back({{"role", "assistant"}, {"content", reply}});
  turn2.push_back({{"role", "user"}, {"content", "And then?"}});
  std::string continued;
  {
    test::ServerProcess s({"--state-dir", dir});
    const nlohmann::json r = post_chat(s.port(), chat_json(turn2, 8, 4));
    EXPECT_GE(r["usage"]["prompt_tokens_details"]["cached_tokens"].get<int64_t>(), prompt1)
        << "the first turn's state came from disk";
    continued = r["choices"][0]["message"]["content"];
    EXPECT_EQ(s.stop(), 0) << s.log();
    EXPECT_THAT(s.log(), HasSubstr("junk.qrwkvstate"));
  }
  // The same reply as a server that computes everything.
  test::ServerProcess fresh({"--state-cache-mb", "0"});
  const nlohmann::json r = post_chat(fresh.port(), chat_json(turn2, 8, 4));
  EXPECT_EQ(r["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
  EXPECT_EQ(r["choices"][0]["message"]["content"], continued);
}

TEST(ServerHttp, NonStreamingClientThatHangsUpFreesItsSlot) {
  test::ServerProcess s({"-np", "1"});
  const int p = s.port();
  {
    // A reply that would never end on the only slot; the client gives up and closes.
    test::Socket sock(p);
    sock.send_all(test::request_text(
        "POST", "/v1/chat/completions",
        chat_json({{{"role", "user"}, {"content", "x"}}}, 1000000, 1, R"({"ignore_eos":true})"),
        ""));
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (std::chrono::steady_clock::now() < end &&
           test::http(p, "GET", "/metrics").body.find("qrwkv_active_sequences 1") ==
               std::string::npos)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const auto t0 = std::chrono::steady_clock::now();
  const nlohmann::json r =
      post_chat(p, chat_json({{{"role", "user"}, {"content", "y"}}}, 4, 2), 20);
  EXPECT_EQ(r["usage"]["completion_tokens"], 4);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0);
  EXPECT_THAT(test::http(p, "GET", "/metrics").body, HasSubstr("qrwkv_requests_cancelled_total 1"));
  EXPECT_EQ(s.stop(), 0) << s.log();
}

TEST(ServerHttp, JsonResponseFormatAndToolRequests) {
  test::ServerProcess s({"-np", "2"});
  const nlohmann::json msgs = {{{"role", "user"}, {"content", "Give me JSON"}}};
  int parsed = 0;
  for (uint64_t seed = 1; seed <= 6; ++seed) {
    const nlohmann::json r = post_chat(
        s.port(), chat_json(msgs, 300, seed,
                            R"({"temperature":1.0,"response_format":{"type":"json_object"}})"));
    const std::string text = r["choices"][0]["message"]["content"];
    JsonPrefixValidator v;
    EXPECT_TRUE(v.push(text)) << text;
    if (r["choices"][0]["finish_reason"] == "stop") {
      EXPECT_TRUE(nlohmann::json::parse(text, nullptr, false).is_object()) << text;
      ++parsed;
    }
  }
  EXPECT_GT(parsed, 0);
  const test::HttpResponse bad =
      test::http(s.port(), "POST", "/v1/chat/completions",
                 chat_json(msgs, 4, 1, R"({"response_format":{"type":"grammar"}})"));
  EXPECT_EQ(bad.status, 400);
  EXPECT_THAT(bad.body, HasSubstr("response_format"));
  // With tools the reply of this model (random text, no calls) keeps the plain shape.
  const nlohmann::json t = post_chat(
      s.port(),
      chat_json(msgs, 6, 1,
                R"({"tools":[{"type":"function","function":{"name":"f","parameters":{}}}]})"));
  EXPECT_TRUE(t["choices"][0]["message"]["content"].is_string());
  EXPECT_NE(t["choices"][0]["finish_reason"], "tool_calls");
  EXPECT_EQ(s.stop(), 0) << s.log();
}

}  // namespace
}  // namespace qrwkv::server
