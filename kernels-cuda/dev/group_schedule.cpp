#include "group_schedule.h"

#include <algorithm>
#include <limits>

namespace bs::tc {

namespace {

// One schedule: groups of kScheduleGroup consecutive lines (block rows or columns). Member k's entries are
// [ptr[line], ptr[line + 1]) with other-axis index `other[e]` and value block `value(e)`. Each entry lands in
// exactly one record, so the products are right even where a line's entries are not sorted.
template <class Value>
void appendSchedule(std::vector<int32_t>& packed, int64_t lines, const int32_t* ptr, const int32_t* other,
                    Value value, int slots, size_t& ptrAt, size_t& stepsAt) {
  const int64_t groups = (lines + kScheduleGroup - 1) / kScheduleGroup;
  std::vector<int32_t> steps;
  std::vector<int32_t> groupPtr(static_cast<size_t>(groups) + 1, 0);
  for (int64_t g = 0; g < groups; ++g) {
    int64_t cursor[kScheduleGroup], end[kScheduleGroup];
    for (int k = 0; k < kScheduleGroup; ++k) {
      const int64_t line = g * kScheduleGroup + k;
      cursor[k] = line < lines ? ptr[line] : 0;
      end[k] = line < lines ? ptr[line + 1] : 0;
    }
    int32_t count = 0;
    // Per member: own steps so far, and the own step at which it last used each slot.
    int64_t ownSteps[kScheduleGroup] = {};
    std::vector<int64_t> lastUse(static_cast<size_t>(kScheduleGroup) * std::max(slots, 1), -1);
    for (;;) {
      int32_t next = std::numeric_limits<int32_t>::max();
      for (int k = 0; k < kScheduleGroup; ++k)
        if (cursor[k] < end[k]) next = std::min(next, other[cursor[k]]);
      if (next == std::numeric_limits<int32_t>::max()) break;
      int32_t record[kScheduleRecord];
      record[0] = next;
      record[1] = 0;
      for (int k = 0; k < kScheduleGroup; ++k) {
        record[2 + k] = -1;
        if (cursor[k] < end[k] && other[cursor[k]] == next) {
          record[1] |= 1 << k;
          record[2 + k] = value(cursor[k]++);
        }
      }
      record[kScheduleSlotField] = 0;
      if (slots > 1) {
        int64_t best = -1;
        for (int slot = 0; slot < slots; ++slot) {
          int64_t distance = std::numeric_limits<int64_t>::max();
          for (int k = 0; k < kScheduleGroup; ++k)
            if ((record[1] >> k) & 1) {
              const int64_t last = lastUse[static_cast<size_t>(k) * slots + slot];
              if (last >= 0) distance = std::min(distance, ownSteps[k] - last);
            }
          if (distance > best) {
            best = distance;
            record[kScheduleSlotField] = slot;
          }
        }
        for (int k = 0; k < kScheduleGroup; ++k)
          if ((record[1] >> k) & 1) lastUse[static_cast<size_t>(k) * slots + record[kScheduleSlotField]] = ownSteps[k]++;
      }
      steps.insert(steps.end(), record, record + kScheduleRecord);
      ++count;
    }
    groupPtr[static_cast<size_t>(g) + 1] = groupPtr[static_cast<size_t>(g)] + count;
  }
  ptrAt = packed.size();
  packed.insert(packed.end(), groupPtr.begin(), groupPtr.end());
  stepsAt = packed.size();
  packed.insert(packed.end(), steps.begin(), steps.end());
}

}  // namespace

bool wantsGroupSchedules(int64_t blockHeight, int64_t blockWidth) {
  return blockHeight == blockWidth && (blockHeight == 32 || blockHeight == 64);
}

GroupScheduleOffsets appendGroupSchedules(std::vector<int32_t>& packed, int64_t blockRows, int64_t blockCols,
                                          const int32_t* rowPtr, const int32_t* colIdx, const int32_t* colPtr,
                                          const int32_t* rowIdx, const int32_t* valueIndex, int slots) {
  GroupScheduleOffsets at;
  // Row groups: the row-wise entries are the value blocks themselves.
  appendSchedule(packed, blockRows, rowPtr, colIdx, [](int64_t e) { return static_cast<int32_t>(e); }, slots,
                 at.rowGroupPtr, at.rowGroupSteps);
  appendSchedule(packed, blockCols, colPtr, rowIdx, [valueIndex](int64_t e) { return valueIndex[e]; }, slots,
                 at.colGroupPtr, at.colGroupSteps);
  return at;
}

void bindGroupSchedules(BsrPatternView& view, const int32_t* base, const GroupScheduleOffsets& offsets) {
  view.rowGroupPtr = base + offsets.rowGroupPtr;
  view.rowGroupSteps = base + offsets.rowGroupSteps;
  view.colGroupPtr = base + offsets.colGroupPtr;
  view.colGroupSteps = base + offsets.colGroupSteps;
}

}  // namespace bs::tc
