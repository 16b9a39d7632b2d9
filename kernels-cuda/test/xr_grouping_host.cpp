// The X-resident tile's line grouping (src/tc/tc_kernels.h, xResidentGroupLines) checked on the host: backend-cuda's
// xr_grouping_host.test.ts compiles and runs it wherever nvcc is, GPU or not. Over token counts, line counts,
// consumers and SM counts: every group size is valid (at least a line, a multiple of the consumers above them, the
// groups covering the lines once); the wave model's choice costs no more, under its own cost (waves x (slab + lines
// per consumer)), than any other valid group size with at most four CTAs' worth of groups per SM; and the cases
// measured on an H200 (132 SMs, four consumers) group as the measurements chose. With a cap on the lines per group
// (kernels-cuda/dev/'s wide-slab tile), the choice stays within it and no valid size within it is cheaper.
//
//   nvcc -std=c++17 -x cu -I kernels-cuda/src kernels-cuda/test/xr_grouping_host.cpp -o xr_grouping_host && ./xr_grouping_host
#include <cstdio>

#include "tc/tc_kernels.h"

using bs::tc::kXResidentSlabLines;
using bs::tc::xResidentGroupLines;

namespace {

int failures = 0;
long checks = 0;

void check(bool ok, const char* what, int64_t m, int64_t lines, int consumers, int sms, int64_t value) {
  ++checks;
  if (ok) return;
  if (++failures <= 20)
    std::printf("FAIL %s: m %lld, lines %lld, consumers %d, sms %d: %lld\n", what, static_cast<long long>(m),
                static_cast<long long>(lines), consumers, sms, static_cast<long long>(value));
}

int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

struct Grouping {
  int64_t groups, ctas, waves, cost;
};

Grouping groupingOf(int64_t m, int64_t lines, int consumers, int sms, int64_t groupLines) {
  Grouping g;
  g.groups = ceilDiv(lines, groupLines);
  g.ctas = ceilDiv(m, 64) * g.groups;
  g.waves = ceilDiv(g.ctas, sms);
  g.cost = g.waves * (kXResidentSlabLines + ceilDiv(groupLines, consumers));
  return g;
}

bool validSize(int64_t groupLines, int64_t lines, int consumers) {
  if (groupLines < 1 || groupLines >= lines + consumers) return false;
  return groupLines <= consumers || groupLines % consumers == 0;
}

void checkCase(int64_t m, int64_t lines, int consumers, int sms) {
  const int64_t chosen = xResidentGroupLines(m, lines, consumers, sms);
  check(validSize(chosen, lines, consumers), "a valid group size", m, lines, consumers, sms, chosen);
  const Grouping best = groupingOf(m, lines, consumers, sms, chosen);
  check((best.groups - 1) * chosen < lines, "no empty group", m, lines, consumers, sms, chosen);
  // Every other valid size whose groups stay within four CTAs per SM (at least one group).
  const int64_t mostGroups = std::min(lines, std::max<int64_t>(1, ceilDiv(int64_t{4} * sms, ceilDiv(m, 64))));
  for (int64_t size = 1; size < lines + consumers; ++size) {
    if (!validSize(size, lines, consumers) || ceilDiv(lines, size) > mostGroups) continue;
    const Grouping other = groupingOf(m, lines, consumers, sms, size);
    check(best.cost <= other.cost, "no cheaper grouping", m, lines, consumers, sms, size);
  }
  // The plain rules kernels-cuda/dev/ measures (about 1, 2 or 4 CTAs per SM): valid sizes too.
  for (int perSm : {1, 2, 4}) {
    const int64_t plain = xResidentGroupLines(m, lines, consumers, sms, perSm);
    check(validSize(plain, lines, consumers), "a valid plain group size", m, lines, consumers, sms, plain);
  }
}

// A capped grouping (dev's wide-slab tile: its consumers x the lines each holds): within the cap, valid, and no
// cheaper valid size within the cap and four CTAs per SM.
void checkCapped(int64_t m, int64_t lines, int consumers, int sms, int64_t mostLines) {
  const int64_t chosen = xResidentGroupLines(m, lines, consumers, sms, 0, mostLines);
  check(chosen <= mostLines, "a group within the cap", m, lines, consumers, sms, chosen);
  check(validSize(chosen, lines, consumers), "a valid capped group size", m, lines, consumers, sms, chosen);
  const Grouping best = groupingOf(m, lines, consumers, sms, chosen);
  const int64_t fewest = ceilDiv(lines, mostLines);
  const int64_t mostGroups =
      std::max(fewest, std::min(lines, std::max<int64_t>(1, ceilDiv(int64_t{4} * sms, ceilDiv(m, 64)))));
  for (int64_t size = 1; size <= std::min(mostLines, lines + consumers - 1); ++size) {
    if (!validSize(size, lines, consumers) || ceilDiv(lines, size) > mostGroups) continue;
    const Grouping other = groupingOf(m, lines, consumers, sms, size);
    check(best.cost <= other.cost, "no cheaper capped grouping", m, lines, consumers, sms, size);
  }
}

void expectLayout(int64_t m, int64_t lines, int64_t groupLines, int64_t ctas) {
  const int64_t chosen = xResidentGroupLines(m, lines, 4, 132);
  check(chosen == groupLines, "the measured grouping's lines", m, lines, 4, 132, chosen);
  check(groupingOf(m, lines, 4, 132, chosen).ctas == ctas, "the measured grouping's CTAs", m, lines, 4, 132, chosen);
}

}  // namespace

int main() {
  for (int64_t m : {1, 63, 64, 65, 512, 2048, 2085, 4096, 6000, 8192, 8229, 10000, 16384, 65536})
    for (int64_t lines = 1; lines <= 520; lines += lines < 40 ? 1 : 7)
      for (int consumers : {2, 3, 4})
        for (int sms : {1, 8, 78, 108, 132, 144}) checkCase(m, lines, consumers, sms);
  for (int64_t m : {1, 65, 2048, 2085, 8192, 16384})
    for (int64_t lines = 1; lines <= 260; lines += lines < 40 ? 1 : 7)
      for (int sms : {1, 78, 132})
        for (int64_t cap : {3, 6, 12}) checkCapped(m, lines, 3, sms, cap);
  // The H200's cases (tc-xr.md, "Staged stores and one wave"): one wave of 128 CTAs at 2048 tokens where rounding
  // the plain rule's 5 groups to the consumers made 160 (a second wave of 28), one group per token tile from 8192.
  expectLayout(2048, 128, 32, 128);
  expectLayout(2048, 96, 24, 128);
  expectLayout(2048, 32, 8, 128);
  expectLayout(4096, 128, 64, 128);
  expectLayout(8192, 128, 128, 128);
  expectLayout(8192, 32, 32, 128);
  expectLayout(16384, 128, 128, 256);
  check(groupingOf(2048, 128, 4, 132, xResidentGroupLines(2048, 128, 4, 132, 1)).ctas == 160,
        "the plain rule's partial second wave", 2048, 128, 4, 132, 0);
  if (failures > 0) {
    std::printf("%d of %ld checks failed\n", failures, checks);
    return 1;
  }
  std::printf("ok: %ld checks\n", checks);
  return 0;
}
