// Readers of config.json keys with the one-line errors every architecture's file uses.
#pragma once

#include <cstdint>
#include <string>

#include "io/json.h"

namespace qrwkv {

// A required positive integer.
int64_t get_dim(const json& j, const char* key, const std::string& where);
// Optional keys (absent or null: the fallback).
int64_t get_dim_or(const json& j, const char* key, int64_t fallback, const std::string& where);
double get_number_or(const json& j, const char* key, double fallback, const std::string& where);
bool get_bool_or(const json& j, const char* key, bool fallback, const std::string& where);

}  // namespace qrwkv
