#include "llama_log.h"

#include <cstdio>
#include <cstdlib>
#include <mutex>

#include "llama.h"

namespace cml {
namespace {

thread_local std::string* t_capture = nullptr;
thread_local ggml_log_level t_last_level = GGML_LOG_LEVEL_NONE;
thread_local void (*t_listener)(const char*, void*) = nullptr;
thread_local void* t_listener_user = nullptr;
bool g_echo = false;

void on_log(ggml_log_level level, const char* text, void*) {
  if (level != GGML_LOG_LEVEL_CONT) t_last_level = level;
  const ggml_log_level effective = level == GGML_LOG_LEVEL_CONT ? t_last_level : level;
  if (t_capture != nullptr && effective >= GGML_LOG_LEVEL_WARN) *t_capture += text;
  if (t_listener != nullptr && level == GGML_LOG_LEVEL_INFO) t_listener(text, t_listener_user);
  if (g_echo) std::fputs(text, stderr);
}

}  // namespace

void install_log_hook() {
  static std::once_flag once;
  std::call_once(once, [] {
    const char* v = std::getenv("CML_LLAMA_LOG");
    g_echo = v != nullptr && *v != '\0' && std::string(v) != "0";
    llama_log_set(on_log, nullptr);
  });
}

LogListener::LogListener(void (*fn)(const char*, void*), void* user) {
  t_listener = fn;
  t_listener_user = user;
}

LogListener::~LogListener() {
  t_listener = nullptr;
  t_listener_user = nullptr;
}

LogCapture::LogCapture() { t_capture = new std::string(); }

LogCapture::~LogCapture() {
  delete t_capture;
  t_capture = nullptr;
}

std::string LogCapture::text() const {
  std::string out;
  if (t_capture == nullptr) return out;
  size_t start = 0;
  const std::string& s = *t_capture;
  while (start < s.size()) {
    size_t end = s.find('\n', start);
    if (end == std::string::npos) end = s.size();
    std::string line = s.substr(start, end - start);
    while (!line.empty() && (line.back() == ' ' || line.back() == '\r')) line.pop_back();
    if (!line.empty()) out += (out.empty() ? "" : "; ") + line;
    start = end + 1;
  }
  return out;
}

}  // namespace cml
