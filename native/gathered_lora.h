// The adapter bank's gathered kernel (adapter_bank.h), a ggml custom op on the CPU: dst = res +
// for each token, Σ over its own members m of B_m (s_m · A_m x), s_m its scale for m (the first
// value of m's rows in the token's column of the mask). Sources, in order: res [n_out, n], cur
// [n_in, n], A [n_in, rows], B [gathered_b_cols(n_out), rows] in tiles (below; A and B F32, or F16
// when every member's were), mask [rows, n]; userdata: the weight's AdapterBank::Layout. dst may
// be res itself (the graph adds in place: ggml_custom_inplace), else res is copied into it. ggml
// runs it on every thread: each takes a run of the tokens ordered by member, or, with fewer
// adapted tokens than threads, its share of the output columns (on tile edges).
#pragma once
#include "adapter_bank.h"
#include "ggml.h"

namespace cml {

// B's gathered copy: each member's block (its rank rows, at row `offset` of the copy) in tiles of
// kGatheredTile output columns, a tile's rows one after the other, so that the kernel reads a
// member's B front to back as it reads its A, and its prefetches run ahead of it (the hardware's
// stop at each 4 KB page). Row-major, each block of columns took a line from every one of the rank
// rows, and prefetches per row helped little: with the rows in DRAM, as they are in a decode, the
// kernel took 381-413 µs a step, against 322-343 tiled and prefetched (docs/engine.md). Columns
// past n_out, to a whole tile, hold 0.
constexpr int64_t kGatheredTile = 8;
inline int64_t gathered_b_cols(int64_t n_out) { return (n_out + kGatheredTile - 1) / kGatheredTile * kGatheredTile; }
// Where B[r, o] of a member of rank `rank` lies in its block.
inline int64_t gathered_b_at(int64_t rank, int64_t r, int64_t o) {
  return (o / kGatheredTile * rank + r) * kGatheredTile + o % kGatheredTile;
}

void gathered_lora(ggml_tensor* dst, int ith, int nth, void* userdata);

// The kernel's loops: AVX2 with FMA and F16C, or portable C++ (GCC's vector types). gathered_lora
// runs the first where the CPU has them (gathered_isa() says which); gathered_lora_as runs the one
// asked for (portable where the CPU lacks AVX2), so that a test can hold each to a reference.
enum class GatheredIsa { Portable, Avx2 };
GatheredIsa gathered_isa();
void gathered_lora_as(GatheredIsa isa, ggml_tensor* dst, int ith, int nth, void* userdata);

}  // namespace cml
