#include "tests/model_util.h"

#include <filesystem>
#include <fstream>

#include "io/mapped_file.h"
#include "tests/cli.h"

namespace qrwkv::test {

std::vector<OwnedTensor> read_tensors(const std::string& path) {
  SafetensorsFile f(path);
  std::vector<OwnedTensor> out;
  for (const auto& [name, info] : f.header().tensors) {
    OwnedTensor t{name, info.dtype, info.shape, {}};
    t.bytes.assign(reinterpret_cast<const char*>(f.data(info)), info.end - info.begin);
    out.push_back(std::move(t));
  }
  return out;
}

void write_tensors(const std::string& path, const std::vector<OwnedTensor>& tensors) {
  std::vector<TensorToWrite> w;
  for (const auto& t : tensors) w.push_back({t.name, t.dtype, t.shape, t.bytes.data()});
  write_safetensors(path, w);
}

std::string altered_model(const std::string& src, const std::function<void(json&)>& edit_config,
                          const std::function<void(std::vector<OwnedTensor>&)>& edit_tensors) {
  const std::string from = data_path("models/" + src);
  const std::string to = temp_dir();
  json config = load_json_file(from + "/config.json");
  if (edit_config) edit_config(config);
  std::ofstream(to + "/config.json") << config.dump(2);
  auto tensors = read_tensors(from + "/model.safetensors");
  if (edit_tensors) edit_tensors(tensors);
  write_tensors(to + "/model.safetensors", tensors);
  return to;
}

}  // namespace qrwkv::test
