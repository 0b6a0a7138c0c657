#include "text_stream.h"

#include <algorithm>

namespace cml {

size_t incomplete_utf8_tail(const std::string& s) {
  // Walk back over at most 3 continuation bytes to the lead byte, then compare its length.
  const size_t n = s.size();
  for (size_t back = 1; back <= std::min<size_t>(4, n); ++back) {
    const unsigned char c = static_cast<unsigned char>(s[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte
    size_t need = 1;
    if ((c & 0xE0) == 0xC0)
      need = 2;
    else if ((c & 0xF0) == 0xE0)
      need = 3;
    else if ((c & 0xF8) == 0xF0)
      need = 4;
    return need > back ? back : 0;
  }
  return 0;  // only stray continuation bytes: nothing will complete them
}

TextStream::TextStream(std::vector<std::string> stops) {
  for (auto& s : stops) {
    if (!s.empty()) stops_.push_back(std::move(s));
  }
}

std::string TextStream::push(const std::string& piece) {
  if (stopped_) return {};
  held_ += piece;

  // Any match starts inside held_: a prefix of a stop string is never released (see below).
  size_t first = std::string::npos;
  for (const auto& stop : stops_) {
    const size_t at = held_.find(stop);
    if (at < first) {
      first = at;
      matched_ = stop;
    }
  }
  if (first != std::string::npos) {
    stopped_ = true;
    std::string out = held_.substr(0, first);
    held_.clear();
    return out;
  }

  size_t keep = incomplete_utf8_tail(held_);
  for (const auto& stop : stops_) {
    const size_t max_len = std::min(stop.size() - 1, held_.size());
    for (size_t len = max_len; len > keep; --len) {
      if (held_.compare(held_.size() - len, len, stop, 0, len) == 0) {
        keep = len;
        break;
      }
    }
  }
  // A held-back stop prefix may begin mid-character; release only whole characters before it.
  size_t cut = held_.size() - keep;
  while (cut > 0 && cut < held_.size() && (static_cast<unsigned char>(held_[cut]) & 0xC0) == 0x80) --cut;
  std::string out = held_.substr(0, cut);
  held_.erase(0, cut);
  return out;
}

std::string TextStream::flush() {
  std::string out;
  out.swap(held_);
  return stopped_ ? std::string() : out;
}

std::string token_piece(const llama_vocab* vocab, llama_token t, bool special) {
  char buf[128];
  int32_t n = llama_token_to_piece(vocab, t, buf, sizeof buf, 0, special);
  if (n >= 0) return std::string(buf, n);
  std::string big(static_cast<size_t>(-n), '\0');
  n = llama_token_to_piece(vocab, t, big.data(), static_cast<int32_t>(big.size()), 0, special);
  big.resize(std::max(n, 0));
  return big;
}

}  // namespace cml
