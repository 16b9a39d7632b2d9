// The merged schedules of the grouped tiles (bsr_mma_grouped.cu, bsr_wgmma_multicast.cu), built on the host when a
// pattern is uploaded (tc_bench builds them; the addon does not).
//
// A row group is kScheduleGroup consecutive block rows; its schedule is the sorted union of their block columns,
// one record per column: the column, the mask of members that hold a block there and each member's value block
// (-1 where absent). A CTA of the grouped bsrLinear walks it, loading each slice of X once for every member that
// uses it. Column groups are the same over block columns (their members' block rows and value blocks, through the
// column-wise index), for bsrMatmul. Each group's records run from groupPtr[g] to groupPtr[g + 1].
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "bsr_pattern.h"

namespace bs::tc {

constexpr int kScheduleGroup = 4;                      // members per group
// int32 per record: line, mask, value block per member, pipeline slot (the multicast clusters' shared ring)
constexpr int kScheduleRecord = 3 + kScheduleGroup;
constexpr int kScheduleSlotField = 2 + kScheduleGroup;

// Whether patterns of this block shape get schedules (the grouped mma.sync tile takes 32x32 blocks, the multicast
// clusters 32x32 and 64x64).
bool wantsGroupSchedules(int64_t blockHeight, int64_t blockWidth);

// Where appendGroupSchedules put each array, in int32 from the start of the packed buffer.
struct GroupScheduleOffsets {
  size_t rowGroupPtr = 0, rowGroupSteps = 0, colGroupPtr = 0, colGroupSteps = 0;
};

// Appends both schedules of a validated pattern (CSR rowPtr/colIdx, CSC colPtr/rowIdx/valueIndex) to `packed`.
// `slots` > 1 also gives each record one of that many pipeline slots, shared by its members: greedily the slot whose
// last use by any member is furthest back in that member's own steps, so a member's consecutive steps never share a
// slot and each reuses one as late as the others allow (a ring over the union, u % slots, would leave a member that
// holds a third of the union only a third of the ring).
GroupScheduleOffsets appendGroupSchedules(std::vector<int32_t>& packed, int64_t blockRows, int64_t blockCols,
                                          const int32_t* rowPtr, const int32_t* colIdx, const int32_t* colPtr,
                                          const int32_t* rowIdx, const int32_t* valueIndex, int slots = 0);

// Points the view's schedule fields into the uploaded buffer `base`.
void bindGroupSchedules(BsrPatternView& view, const int32_t* base, const GroupScheduleOffsets& offsets);

}  // namespace bs::tc
