// Incremental chat: the state carried turn by turn must give the same logits as processing the
// whole rendered conversation at once, also when the template rewrites earlier turns.
#include <gtest/gtest.h>

#include <cmath>

#include "io/error.h"
#include "io/mapped_file.h"
#include "runtime/chat.h"
#include "runtime/generator.h"
#include "runtime/loader.h"
#include "tests/cli.h"

namespace qrwkv {
namespace {

// Renders earlier assistant turns without their "<think>...</think>" part, as reasoning models'
// templates do: the rendering of turn 3 is then not an extension of turn 2's.
const char* kDropThinking =
    "{%- for m in messages %}<|im_start|>{{ m.role }}\n"
    "{%- if m.role == 'assistant' and not loop.last %}{{ m.content.split('</think>')[-1] }}"
    "{%- else %}{{ m.content }}{%- endif %}<|im_end|>\n{% endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

struct Fixture {
  explicit Fixture(const std::string& model)
      : m(Model::load(test::data_path("models/" + model))),
        tok(Tokenizer::from_dir(test::data_path("tiny_chat"))),
        tmpl(ChatTemplate::load(test::data_path("tiny_chat"))) {}
  Model m;
  Tokenizer tok;
  ChatTemplate tmpl;
};

// Feeds a scripted reply as if it had been generated.
void reply(ChatSession& chat, const Model& m, const Tokenizer& tok, const std::string& text) {
  const auto ids = tok.encode(text);
  forward(m, chat.state(), ids, false);
  chat.add_reply(text, ids);
}

double max_rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double max_abs = 0, d = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    max_abs = std::max(max_abs, std::fabs(double{b[i]}));
    d = std::max(d, std::fabs(double{a[i]} - b[i]));
  }
  return d / max_abs;
}

std::vector<float> whole_conversation_logits(const Fixture& f, const ChatSession& chat) {
  State s = f.m.new_state();
  return forward(f.m, s, f.tok.encode(chat.render(true)), false);
}

class IncrementalChat : public ::testing::TestWithParam<std::string> {};

TEST_P(IncrementalChat, ThirdTurnEqualsWholeConversation) {
  Fixture f(GetParam());
  ChatSession chat(f.m, f.tok, f.tmpl);
  chat.add_message("system", "You are terse.");
  chat.add_message("user", "Hello there, who are you?");
  SyncStats s1 = chat.prepare_reply();
  EXPECT_EQ(s1.reused, 0);
  reply(chat, f.m, f.tok, "I am a small model.");
  chat.add_message("user", "What is two plus two?");
  const size_t before2 = chat.processed().size();
  SyncStats s2 = chat.prepare_reply();
  EXPECT_EQ(s2.reused, static_cast<int64_t>(before2));  // nothing processed again
  reply(chat, f.m, f.tok, "Four, of course.");
  chat.add_message("user", "And three plus three?");
  const size_t before3 = chat.processed().size();
  SyncStats s3 = chat.prepare_reply();
  EXPECT_EQ(s3.reused, static_cast<int64_t>(before3));
  EXPECT_EQ(s3.reused + s3.fed, static_cast<int64_t>(f.tok.encode(chat.render(true)).size()));
  EXPECT_EQ(static_cast<int64_t>(chat.processed().size()), chat.state().n_tokens);
  const double err = max_rel_diff(chat.logits(), whole_conversation_logits(f, chat));
  EXPECT_LT(err, 1e-4);
}

TEST_P(IncrementalChat, RewrittenHistoryGoesBackToCommonPrefix) {
  Fixture f(GetParam());
  ChatTemplate t = ChatTemplate::from_source(kDropThinking, "test template");
  ChatSession chat(f.m, f.tok, t);
  chat.add_message("user", "Think about it.");
  chat.prepare_reply();
  reply(chat, f.m, f.tok, "<think>hmm, let me see</think>The answer is yes.");
  chat.add_message("user", "Why?");
  const size_t before = chat.processed().size();
  SyncStats s = chat.prepare_reply();
  // The thinking vanished from the rendering: the state went back before it.
  EXPECT_LT(s.reused, static_cast<int64_t>(before));
  EXPECT_EQ(chat.render(true).find("hmm"), std::string::npos);
  EXPECT_LT(max_rel_diff(chat.logits(), whole_conversation_logits(f, chat)), 1e-4);
  // And the conversation goes on correctly from there.
  reply(chat, f.m, f.tok, "Because.");
  chat.add_message("user", "Thanks.");
  chat.prepare_reply();
  EXPECT_LT(max_rel_diff(chat.logits(), whole_conversation_logits(f, chat)), 1e-4);
}

TEST_P(IncrementalChat, SessionFileResumesTheConversation) {
  Fixture f(GetParam());
  const std::string path = test::temp_dir() + "/chat.session";
  std::vector<float> expected;
  {
    ChatSession chat(f.m, f.tok, f.tmpl);
    chat.add_message("user", "First question.");
    chat.prepare_reply();
    reply(chat, f.m, f.tok, "First answer.");
    chat.save(path);
    chat.add_message("user", "Second question.");
    chat.prepare_reply();
    expected = chat.logits();
  }
  ChatSession resumed(f.m, f.tok, f.tmpl);
  resumed.load(path);
  EXPECT_EQ(resumed.messages().size(), 2u);
  resumed.add_message("user", "Second question.");
  SyncStats s = resumed.prepare_reply();
  EXPECT_GT(s.reused, 0);
  EXPECT_LT(max_rel_diff(resumed.logits(), expected), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Models, IncrementalChat, ::testing::Values("qrwkv6_tiny", "qwen2_tiny"));

TEST(Chat, SessionFileForAnotherModelIsRefused) {
  Fixture rwkv("qrwkv6_tiny");
  Fixture qwen("qwen2_tiny");
  const std::string path = test::temp_dir() + "/chat.session";
  ChatSession a(rwkv.m, rwkv.tok, rwkv.tmpl);
  a.add_message("user", "Hi.");
  a.prepare_reply();
  a.save(path);
  ChatSession b(qwen.m, qwen.tok, qwen.tmpl);
  EXPECT_THROW(b.load(path), Error);
}

TEST(Chat, EndOfGenerationIdsFromEverySource) {
  Fixture f("qrwkv6_tiny");
  const auto ids = end_of_generation_ids(test::data_path("models/qrwkv6_tiny"), f.m.config, f.tok);
  EXPECT_TRUE(ids.count(1));    // config.json eos_token_id
  EXPECT_TRUE(ids.count(999));  // <|im_end|>: tokenizer_config eos_token
  EXPECT_TRUE(ids.count(997));  // <|endoftext|>
}

}  // namespace
}  // namespace qrwkv

namespace qrwkv {
namespace {

// Generation streams only complete UTF-8 characters, even when a character's bytes come from
// different tokens: the byte tokens of "é" (0xC3 0xA9) are made likely, so some replies split
// it across tokens and others leave a lone byte behind.
TEST(Generate, StreamsCompleteUtf8Characters) {
  Fixture f("qrwkv6_tiny");
  const auto lead = f.tok.token_to_id("\u00c3");  // byte 0xC3 in the byte-level alphabet
  const auto cont = f.tok.token_to_id("\u00a9");  // byte 0xA9
  ASSERT_TRUE(lead && cont);
  SamplerParams p;
  p.temperature = 1.0f;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  p.seed = 1;
  p.logit_bias[*lead] = 8.0f;
  p.logit_bias[*cont] = 8.0f;
  Sampler sampler(p);
  GenerateOptions opt;
  opt.n_predict = 300;
  State s = f.m.new_state();
  const auto prompt = f.tok.encode("Caf");
  const auto logits = prefill(f.m, s, prompt);
  std::vector<std::string> pieces;
  const GenerateResult r = generate(f.m, f.tok, s, logits, sampler, opt,
                                    [&](std::string_view piece) { pieces.emplace_back(piece); });
  std::string joined;
  for (const auto& piece : pieces) {
    EXPECT_TRUE(utf8_is_valid(piece)) << "a piece holds a broken character";
    joined += piece;
  }
  EXPECT_EQ(joined, f.tok.decode(r.tokens));
  EXPECT_EQ(joined, r.text);
  EXPECT_NE(joined.find("\u00e9"), std::string::npos) << "no split character was generated";
  EXPECT_EQ(s.n_tokens, static_cast<int64_t>(prompt.size() + r.tokens.size()));
}

}  // namespace
}  // namespace qrwkv

namespace qrwkv {
namespace {

TEST(Chat, DamagedSessionFilesAreRefused) {
  Fixture f("qrwkv6_tiny");
  ChatSession chat(f.m, f.tok, f.tmpl);
  chat.add_message("user", "Hi.");
  chat.prepare_reply();
  const std::string path = test::temp_dir() + "/s.session";
  chat.save(path);
  const std::string bytes = read_text_file(path);
  auto expect = [&](const std::string& b, const std::string& msg) {
    try {
      parse_session(b, "s.session");
      ADD_FAILURE() << "no error for " << msg;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(msg), std::string::npos) << e.what();
    }
  };
  expect(bytes.substr(0, bytes.size() - 20), "truncated");
  expect(bytes.substr(0, 30), "truncated session file");
  expect("not a session", "bad magic");
  std::string meta = bytes;
  meta[22] = '!';  // inside the JSON metadata
  expect(meta, "corrupt session file");
  const SessionData d = parse_session(bytes, "s.session");
  EXPECT_EQ(d.messages.size(), 1u);
  EXPECT_EQ(static_cast<int64_t>(d.processed.size()), d.state.n_tokens);
}

}  // namespace
}  // namespace qrwkv
