#include "io/error.h"

namespace qrwkv {

void fail(const std::string& where, const std::string& what) {
  throw Error(where.empty() ? what : where + ": " + what);
}

}  // namespace qrwkv
