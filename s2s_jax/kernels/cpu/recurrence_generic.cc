// The inner loops for any CPU: the compiler's baseline instruction set.
#include "recurrence_types.h"

namespace generic {
#define KERNELS_ISA "generic"
#define VW 8
#define MR 3
#include "recurrence_kernels.h"
}  // namespace generic

const Kernels* generic_kernels() { return &generic::kKernels; }
