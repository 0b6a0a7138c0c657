// The adapter bank's gathered kernel (adapter_bank.h), a ggml custom op on the CPU: dst = res +
// for each token, Σ over its own members m of B_m (s_m · A_m x), s_m its scale for m (the first
// value of m's rows in the token's column of the mask). Sources, in order: res [n_out, n], cur
// [n_in, n], A [n_in, rows], B transposed [n_out, rows] (A and B F32, or F16 when every member's
// were), mask [rows, n]; userdata: the weight's AdapterBank::Layout. dst may be res itself (the
// graph adds in place: ggml_custom_inplace), else res is copied into it. ggml runs it on every thread:
// each takes a run of the tokens ordered by member, or, with fewer adapted tokens than threads,
// its share of the output columns.
#pragma once
#include "adapter_bank.h"
#include "ggml.h"

namespace cml {

void gathered_lora(ggml_tensor* dst, int ith, int nth, void* userdata);

// The kernel's loops: AVX2 with FMA and F16C, or portable C++ (GCC's vector types). gathered_lora
// runs the first where the CPU has them (gathered_isa() says which); gathered_lora_as runs the one
// asked for (portable where the CPU lacks AVX2), so that a test can hold each to a reference.
enum class GatheredIsa { Portable, Avx2 };
GatheredIsa gathered_isa();
void gathered_lora_as(GatheredIsa isa, ggml_tensor* dst, int ith, int nth, void* userdata);

}  // namespace cml
