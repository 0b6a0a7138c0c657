// llama.cpp reports why a load failed only through its log callback; we capture those lines per
// thread so a JS error can carry llama.cpp's own reason instead of "returned NULL".
#pragma once
#include <string>

namespace cml {

// Installs the process-wide llama/ggml log hook (idempotent). Lines go to stderr only when the
// CML_LLAMA_LOG environment variable is set; warnings and errors are always captured.
void install_log_hook();

// While alive, every info line llama.cpp logs on the calling thread also goes to `fn` (the quantizer
// reports its progress only there, as "[ 12/ 291] name ...").
class LogListener {
 public:
  explicit LogListener(void (*fn)(const char* text, void* user), void* user);
  ~LogListener();
};

// Starts capturing warnings/errors logged on the calling thread; returns what was captured since.
class LogCapture {
 public:
  LogCapture();
  ~LogCapture();
  std::string text() const;  // captured lines, trimmed, joined with "; "
};

}  // namespace cml
