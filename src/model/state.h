// The per-sequence state of a model, as a plain value: it can be copied (forking a sequence),
// serialized to bytes or a file, and restored.
//
// QRWKV6: per layer, the previous token's normalized input x_prev [C] (token shift) and the
// WKV matrices S [H, N, N] (S_h[i][j], i over keys, j over values). Its size does not depend on
// how many tokens were processed.
// Transformers (Qwen2, LLaMA): per layer, the KV cache of every processed token, K and V
// [n_tokens, Hkv, D] with RoPE already applied to K.
// Which fields a layer uses, and their sizes, is the architecture's business
// (model/architecture.h); the operations here work for every architecture.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

namespace qrwkv {

struct LayerState {
  std::vector<float> x_prev;   // QRWKV6: [C]
  std::vector<float> wkv;      // QRWKV6: [H, N, N]
  std::vector<float> k_cache;  // transformers: [n_tokens, Hkv, D]
  std::vector<float> v_cache;  // transformers: [n_tokens, Hkv, D]
};

struct State {
  Arch arch = Arch::QRWKV6;
  // Identifies the model shapes this state belongs to (see model_fingerprint()).
  uint64_t fingerprint = 0;
  std::string shape_desc;  // human-readable form of the same shapes, for error messages
  int64_t n_tokens = 0;    // tokens processed so far (the position of the next token)
  std::vector<LayerState> layers;

  // Bytes of state memory held now.
  size_t bytes() const;
};

// A description of the shapes that determine a state's layout, e.g.
// "rwkv6qwen2 L=3 C=64 H=4 Hkv=2 N=16"; its hash is the fingerprint.
std::string model_shape_desc(const Config& c);
uint64_t model_fingerprint(const Config& c);

// An empty (all-zero, zero-token) state for a model with this config.
State new_state(const Config& c);

// Refuses (Error naming `where`) a state made for a model with other shapes.
void check_state_matches(const State& s, const Config& c, const std::string& where);
// The same with the config's fingerprint known (no allocation unless it fails).
void check_state_matches(const State& s, const Config& c, uint64_t fingerprint,
                         const std::string& where);

// Goes back to the first n tokens of a state whose tokens can be dropped (a KV cache); throws
// Error for a recurrent state (which only goes forward: restore a snapshot instead) and for n
// beyond the tokens held.
void truncate_state(State& s, const Config& c, int64_t n);
// Whether truncate_state() can cut this config's states.
bool states_can_truncate(const Config& c);

// Reserves room for a state to hold n tokens, so that growing to them allocates nothing (a KV
// cache; recurrent states are fixed-size already).
void reserve_state(State& s, const Config& c, int64_t n);

// Serialized form (little-endian):
//   "QRWKVSTA" | u32 version | u32 arch | u64 fingerprint | u64 n_tokens | u32 n_layers |
//   u32 len, shape_desc bytes | per layer: u64 counts of x_prev, wkv, k_cache, v_cache, then
//   their floats | u64 FNV-1a checksum of everything before it.
std::string serialize_state(const State& s);
// Parses bytes written by serialize_state; any truncation, corruption or unknown version
// throws Error prefixed with `where`.
State deserialize_state(const std::string& bytes, const std::string& where);

// File forms; save_state writes atomically (temporary file + rename).
void save_state(const State& s, const std::string& path);
State load_state(const std::string& path);

}  // namespace qrwkv
