// Whether the adapter bank works with the llama.cpp this process loaded: run once at load, before
// the scheduler starts (it uses the context's first slots and leaves them empty). It makes up two
// random F32 adapters (ranks 8 and 4, the second with alpha) over the first and last layers' weights, decodes
// one prompt mixed in one batch (the first at 0.5, the second at 1, the base model when a third
// slot exists) and compares every row with the same prompt decoded alone through the context's
// own adapter set. Without a pass the scheduler takes turns, as llama.cpp alone would.
#pragma once
#include <string>

#include "adapter_bank.h"
#include "llama.h"

namespace cml {

struct BankCheck {
  bool ok = false;
  std::string reason;   // why not, when !ok
  float error = 0.0f;   // largest logit difference, mixed against alone
  float effect = 0.0f;  // smallest largest logit change either adapter makes: the scale of `error`
};

BankCheck check_bank(llama_model* model, llama_context* ctx, BankLayout layout);

}  // namespace cml
