// export-gguf: writes a model as a GGUF file that llama.cpp runs.
#include <cstdio>

#include "apps/qrwkv/args.h"
#include "apps/qrwkv/command.h"
#include "runtime/gguf_export.h"

namespace qrwkv::app {

namespace {

int run_export_gguf(int argc, char** argv) {
  Args args("export-gguf", "-m PATH -o FILE.gguf [--type f16]",
            {{{"-m", "--model"}, "PATH", "model directory or GGUF file"},
             {{"-o", "--output"}, "FILE", "GGUF file to write (replaced atomically)"},
             {{"--type"},
              "TYPE",
              std::string("type of the matrices: ") + gguf_export_types() +
                  " (default f16); vectors and QRWKV6's LoRA and token-shift tensors stay F32"},
             {{"-v", "--verbose"}, "", "print each tensor as it is written"}});
  args.parse(argc, argv);
  if (!args.has("--output")) throw UsageError("-o FILE is required");
  GgufExportOptions o;
  if (args.has("--type")) o.type = args.get("--type");
  const bool verbose = args.has("--verbose");
  o.log = [verbose](const std::string& line) {
    if (verbose || line.rfind("note:", 0) == 0) std::fprintf(stderr, "%s\n", line.c_str());
  };
  const std::string out = args.get("--output");
  export_gguf(model_dir(args), out, o);
  std::printf("wrote %s\n", out.c_str());
  return 0;
}

CommandRegistrar export_cmd({"export-gguf", "write a model as a GGUF file that llama.cpp runs",
                             &run_export_gguf});

}  // namespace

}  // namespace qrwkv::app
