// Every error code the addon reports, in one list: thrown as `err.code` or sent in an error event.
// src/engine/errors.ts maps each to a class and src/server/errors.ts each class to an HTTP status;
// errorCodes() hands the list to JS, and test/engine/errors.test.ts checks that none is missing.
#pragma once

#define CML_ERROR_CODES(X) \
  X(INVALID_PARAMS)        \
  X(UNKNOWN_ADAPTER)       \
  X(CONTEXT_OVERFLOW)      \
  X(QUEUE_FULL)            \
  X(ENGINE_CLOSED)         \
  X(NOT_LOADED)            \
  X(ALREADY_LOADED)        \
  X(LOADING)               \
  X(MODEL_NOT_FOUND)       \
  X(MODEL_INVALID)         \
  X(MODEL_LOAD_FAILED)     \
  X(CONTEXT_FAILED)        \
  X(ADAPTER_LOAD_FAILED)   \
  X(DECODE_FAILED)         \
  X(NON_FINITE)            \
  X(MERGE_FAILED)

namespace cml::code {
#define CML_ERROR_CODE(name) inline constexpr const char* name = #name;
CML_ERROR_CODES(CML_ERROR_CODE)
#undef CML_ERROR_CODE
}  // namespace cml::code
