// Turns token pieces into text that is safe to hand out: never half a UTF-8 character, and never the
// beginning of a stop string that may still complete. Pure C++ so it is testable without a model.
#pragma once
#include <string>
#include <vector>

#include "llama.h"

namespace cml {

class TextStream {
 public:
  explicit TextStream(std::vector<std::string> stops = {});

  // Appends a token's bytes; returns the text that can be released now. When a stop string
  // completes, returns the text before it and stopped() becomes true; nothing is accepted after.
  std::string push(const std::string& piece);
  // End of generation: releases whatever is held back (a dangling partial character included).
  std::string flush();

  bool stopped() const { return stopped_; }
  const std::string& matched_stop() const { return matched_; }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  std::string matched_;
  bool stopped_ = false;
};

// Bytes at the end of s that begin a UTF-8 sequence still missing continuation bytes.
size_t incomplete_utf8_tail(const std::string& s);

// A token's own text (leading space kept); special tokens rendered only when `special`.
std::string token_piece(const llama_vocab* vocab, llama_token t, bool special);

}  // namespace cml
