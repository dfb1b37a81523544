// A multi-turn conversation whose model state is carried from turn to turn: each turn feeds
// only the tokens that the new rendering of the conversation adds, never the history again.
//
// The conversation is rendered with the chat template and tokenized as a whole each turn; the
// tokens already in the state are compared with that rendering. Usually they are a prefix of
// it and only the rest is fed. Where a template rewrites earlier turns (Qwen3 drops the
// thinking of earlier replies, say) or the reply re-tokenizes differently, the state goes back
// to the longest common prefix: a transformer's KV cache is cut there; a QRWKV6 state is
// restored from the latest snapshot at or before it (one is kept per turn) and the tokens after
// the snapshot are fed again.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "io/json.h"
#include "model/model.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace qrwkv {

struct SyncStats {
  int64_t reused = 0;  // tokens of the state kept
  int64_t fed = 0;     // tokens fed to reach the new prompt
};

class ChatSession {
 public:
  // `extra` holds additional template variables (e.g. {"enable_thinking": false}).
  ChatSession(const Model& model, const Tokenizer& tok, const ChatTemplate& tmpl,
              nlohmann::ordered_json extra = nlohmann::ordered_json::object());

  void add_message(const std::string& role, const std::string& content);
  const nlohmann::ordered_json& messages() const { return messages_; }

  // Renders the conversation with the generation prompt and brings the state up to it.
  SyncStats prepare_reply();
  // The logits after the prompt prepared by prepare_reply().
  const std::vector<float>& logits() const { return logits_; }
  // The state, to generate into; after generating call add_reply() with the tokens fed.
  State& state() { return state_; }
  void add_reply(const std::string& text, const std::vector<int32_t>& fed_tokens);

  // The rendered prompt text (with generation prompt) and its tokens.
  std::string render(bool add_generation_prompt) const;
  const std::vector<int32_t>& processed() const { return processed_; }

  void reset();
  // Session files hold the messages, the processed tokens and the state (written atomically).
  void save(const std::string& path) const;
  void load(const std::string& path);

 private:
  void rollback_to(size_t n);
  void feed(std::span<const int32_t> tokens);
  void snapshot();

  const Model* model_;
  const Tokenizer* tok_;
  const ChatTemplate* tmpl_;
  nlohmann::ordered_json extra_;
  nlohmann::ordered_json messages_ = nlohmann::ordered_json::array();
  State state_;
  std::vector<int32_t> processed_;  // the tokens held in state_
  std::vector<float> logits_;       // after processed_.back()
  struct Snapshot {
    size_t n;  // tokens held
    State state;
    std::vector<float> logits;
  };
  std::vector<Snapshot> snapshots_;  // QRWKV6 only, ascending n
};

// The contents of a session file: "QRWKVSES" | u32 version | u64 n | n bytes of JSON
// {"messages": [...], "processed": [ids]} | a serialized State.
struct SessionData {
  nlohmann::ordered_json messages;
  std::vector<int32_t> processed;
  State state;
};
std::string serialize_session(const SessionData& d);
// Parses session bytes; any damage throws Error prefixed with `where`.
SessionData parse_session(const std::string& bytes, const std::string& where);

}  // namespace qrwkv
