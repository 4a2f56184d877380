// TEST EMULATOR, NOT A CUDA IMPLEMENTATION. The core of the host emulator that runs the CUDA
// backend's tests (tests/cuda) on the CPU, without nvcc or a GPU: the CTest test
// `cuda_emulated` compiles the backend's kernels with g++ against the fake cuda_runtime.h /
// cublas_v2.h of this directory and runs every thread of every block of every launch.
//
// What it models: each launch runs its blocks one after another; the threads of a block run
// as fibers (cooperative, on one OS thread) that switch at every __syncthreads() and warp
// collective, so block and warp barriers synchronise as on a GPU, __shared__ memory is shared
// by the block, and a barrier that not every thread reaches is reported (deadlock) instead of
// hanging. Launch shapes are checked against the CUDA limits.
//
// What it does not model: GPU memory ordering and races (a thread runs alone until its next
// barrier, in thread order, so a missing barrier shows only where that order exposes it), warp
// divergence and scheduling, concurrency between streams (every call runs synchronously,
// in call order), uninitialised __shared__ memory (it starts at zero), dynamic shared memory,
// device pointers outside the runtime calls (kernels dereference raw host addresses),
// performance.
#pragma once

#include <math.h>  // the kernels call the C math functions (fmax, exp, ...) unqualified, as in CUDA

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <tuple>
#include <vector>

// Fibers switch with a few instructions on x86-64 (swapcontext makes two system calls per
// switch, which dominated the run time); elsewhere, under AddressSanitizer (which follows
// stack switches only through swapcontext), or with -DMLCUDA_EMULATOR_UCONTEXT (for a system
// that enforces CET shadow stacks, which the hand-written switch does not maintain), with
// ucontext.
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MLCUDA_EMULATOR_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define MLCUDA_EMULATOR_ASAN 1
#endif
#if defined(__x86_64__) && !defined(MLCUDA_EMULATOR_ASAN) && !defined(MLCUDA_EMULATOR_UCONTEXT)
#define MLCUDA_EMULATOR_FAST_SWITCH 1
#else
#include <ucontext.h>
#endif

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace mlcuda_emulator {

// A fault of the emulated program (a divergent barrier, a bad pointer, ...): no way to go on.
[[noreturn]] inline void fail(const char* what) {
  std::fprintf(stderr, "CUDA test emulator: %s\n", what);
  std::fflush(stderr);
  std::abort();
}

inline constexpr int kWarpSize = 32;
inline constexpr std::size_t kStackBytes = std::size_t(64) << 10;
inline constexpr std::size_t kStackCanary = 256;  // bytes at the stack's low end, checked after each launch

#if defined(MLCUDA_EMULATOR_FAST_SWITCH)
// Saves the callee-saved registers and the SSE / x87 control words on the current stack, stores
// the stack pointer in *from, switches to the stack `to` and restores what was saved there.
__attribute__((naked, noinline)) inline void switch_stack(void** /*from*/, void* /*to*/) {
  asm volatile(
      "pushq %rbp\n\t"
      "pushq %rbx\n\t"
      "pushq %r12\n\t"
      "pushq %r13\n\t"
      "pushq %r14\n\t"
      "pushq %r15\n\t"
      "subq $8, %rsp\n\t"
      "stmxcsr (%rsp)\n\t"
      "fnstcw 4(%rsp)\n\t"
      "movq %rsp, (%rdi)\n\t"
      "movq %rsi, %rsp\n\t"
      "ldmxcsr (%rsp)\n\t"
      "fldcw 4(%rsp)\n\t"
      "addq $8, %rsp\n\t"
      "popq %r15\n\t"
      "popq %r14\n\t"
      "popq %r13\n\t"
      "popq %r12\n\t"
      "popq %rbx\n\t"
      "popq %rbp\n\t"
      "ret\n\t");
}
#endif

// One emulated GPU thread.
struct Thread {
  enum class State { ready, at_block_barrier, at_warp_barrier, exited };
  State state = State::exited;
  dim3 index;
  int phase = 0;  // which of the two warp exchange slots its next warp collective uses
  std::unique_ptr<unsigned char[]> stack;
#if defined(MLCUDA_EMULATOR_FAST_SWITCH)
  void* sp = nullptr;
#else
  ucontext_t context;
#endif
};

// The block being run on this OS thread (the sharded tests run one rank per OS thread).
struct Block {
  dim3 grid_dim, block_dim, block_idx;
  std::vector<Thread> threads;
  int current = -1;        // the running thread
  int alive = 0;           // threads not exited
  int block_arrived = 0;   // threads waiting at __syncthreads()
  std::vector<int> warp_arrived;
  std::vector<unsigned long long> exchange[2];  // per thread: values of warp collectives
  void (*body)(void*) = nullptr;
  void* body_context = nullptr;
#if defined(MLCUDA_EMULATOR_FAST_SWITCH)
  void* scheduler_sp = nullptr;
#else
  ucontext_t scheduler;
#endif
};

// A plain pointer (constant-initialised: no TLS wrapper call on the hot path of threadIdx).
inline thread_local Block* active_block = nullptr;

inline Block& block() {
  if (!active_block) fail("a device function was called outside a kernel launch");
  return *active_block;
}
inline Thread& this_thread() { return active_block->threads[static_cast<std::size_t>(active_block->current)]; }

// Back to the scheduler (the calling thread waits at a barrier, or has exited).
inline void yield_to_scheduler() {
  Block& b = *active_block;
  Thread& t = this_thread();
#if defined(MLCUDA_EMULATOR_FAST_SWITCH)
  switch_stack(&t.sp, b.scheduler_sp);
#else
  swapcontext(&t.context, &b.scheduler);
#endif
}

inline void release(Block& b, Thread::State waiting, int first, int count) {
  for (int i = first; i < first + count; ++i)
    if (b.threads[static_cast<std::size_t>(i)].state == waiting) b.threads[static_cast<std::size_t>(i)].state = Thread::State::ready;
}

// __syncthreads(): released when every thread that has not exited arrived (exited threads do
// not hold the block back, as on the hardware).
inline void block_barrier() {
  Block& b = *active_block;
  if (++b.block_arrived == b.alive) {
    b.block_arrived = 0;
    release(b, Thread::State::at_block_barrier, 0, static_cast<int>(b.threads.size()));
    return;
  }
  this_thread().state = Thread::State::at_block_barrier;
  yield_to_scheduler();
}

inline int warp_lanes(const Block& b, int warp) {
  const int n = static_cast<int>(b.threads.size()) - warp * kWarpSize;
  return n < kWarpSize ? n : kWarpSize;
}

// A warp collective with the full mask: every lane of the warp must arrive (one that exited
// leaves the others waiting, reported as a deadlock).
inline void warp_barrier() {
  Block& b = *active_block;
  const int warp = b.current / kWarpSize;
  const int lanes = warp_lanes(b, warp);
  if (++b.warp_arrived[static_cast<std::size_t>(warp)] == lanes) {
    b.warp_arrived[static_cast<std::size_t>(warp)] = 0;
    release(b, Thread::State::at_warp_barrier, warp * kWarpSize, lanes);
    return;
  }
  this_thread().state = Thread::State::at_warp_barrier;
  yield_to_scheduler();
}

inline void check_full_mask(unsigned mask) {
  if (mask != 0xffffffffu) fail("only warp collectives over the full mask (0xffffffff) are emulated");
}

// Each lane publishes its value, waits for the warp, reads its partner's. Two slots used in
// turn make one barrier per collective enough: a lane overwrites a slot only after the next
// collective's barrier, which every lane reaches after its read of that slot.
inline unsigned long long exchange(unsigned long long bits, int partner_lane) {
  Block& b = *active_block;
  Thread& t = this_thread();
  const int self = b.current, warp = self / kWarpSize;
  auto& slots = b.exchange[t.phase];
  t.phase ^= 1;
  slots[static_cast<std::size_t>(self)] = bits;
  warp_barrier();
  if (partner_lane < 0) {  // __any_sync: the OR of the warp's predicates
    unsigned long long any = 0;
    for (int l = 0; l < warp_lanes(b, warp); ++l) any |= slots[static_cast<std::size_t>(warp * kWarpSize + l)];
    return any;
  }
  if (partner_lane >= warp_lanes(b, warp)) fail("a warp shuffle reads a lane outside the block");
  return slots[static_cast<std::size_t>(warp * kWarpSize + partner_lane)];
}

template <typename V>
V shfl_xor(unsigned mask, V v, int lane_mask) {
  static_assert(sizeof(V) <= sizeof(unsigned long long), "shuffles of up to 8 bytes");
  check_full_mask(mask);
  unsigned long long bits = 0;
  std::memcpy(&bits, &v, sizeof(V));
  const int lane = active_block->current % kWarpSize;
  bits = exchange(bits, (lane ^ lane_mask) & (kWarpSize - 1));
  V out;
  std::memcpy(&out, &bits, sizeof(V));
  return out;
}

inline bool any(unsigned mask, bool predicate) {
  check_full_mask(mask);
  return exchange(predicate ? 1 : 0, -1) != 0;
}

// A fiber's first function: runs the kernel for its thread, then exits.
inline void fiber_main() {
  Block& b = *active_block;
  b.body(b.body_context);
  Thread& t = this_thread();
  t.state = Thread::State::exited;
  --b.alive;
  // Exiting can complete a __syncthreads() the other threads wait at.
  if (b.block_arrived > 0 && b.block_arrived == b.alive) {
    b.block_arrived = 0;
    release(b, Thread::State::at_block_barrier, 0, static_cast<int>(b.threads.size()));
  }
  yield_to_scheduler();
  fail("an exited thread was resumed");
}

// A fresh context for thread i that starts in fiber_main on its own stack.
inline void start_fiber(Block& b, Thread& t) {
  if (!t.stack) {
    t.stack.reset(new unsigned char[kStackBytes]);
    std::memset(t.stack.get(), 0xA5, kStackCanary);
  }
#if defined(MLCUDA_EMULATOR_FAST_SWITCH)
  (void)b;
  // The frame switch_stack pops: control words, six registers, the return address into
  // fiber_main, then a dummy return address for fiber_main (16-byte alignment at its entry).
  auto top = reinterpret_cast<std::uintptr_t>(t.stack.get() + kStackBytes) & ~std::uintptr_t(15);
  auto* frame = reinterpret_cast<std::uint64_t*>(top) - 9;
  std::memset(frame, 0, 9 * sizeof(std::uint64_t));
  std::uint32_t control[2];
  asm volatile("stmxcsr %0\n\tfnstcw %1" : "=m"(control[0]), "=m"(control[1]));
  std::memcpy(&frame[0], control, sizeof control);
  frame[7] = reinterpret_cast<std::uint64_t>(&fiber_main);
  t.sp = frame;
#else
  getcontext(&t.context);
  t.context.uc_stack.ss_sp = t.stack.get();
  t.context.uc_stack.ss_size = kStackBytes;
  t.context.uc_link = &b.scheduler;
  makecontext(&t.context, fiber_main, 0);
#endif
}

inline void run_block(Block& b) {
  const unsigned bx = b.block_dim.x, by = b.block_dim.y;
  const int n = static_cast<int>(b.threads.size());
  for (int i = 0; i < n; ++i) {
    Thread& t = b.threads[static_cast<std::size_t>(i)];
    const unsigned u = static_cast<unsigned>(i);
    t.index = dim3(u % bx, (u / bx) % by, u / (bx * by));
    t.state = Thread::State::ready;
    t.phase = 0;
    start_fiber(b, t);
  }
  b.alive = n;
  b.block_arrived = 0;
  std::fill(b.warp_arrived.begin(), b.warp_arrived.end(), 0);
  // Round robin: each ready thread runs until its next barrier or its exit.
  while (b.alive > 0) {
    bool progressed = false;
    for (int i = 0; i < n; ++i) {
      Thread& t = b.threads[static_cast<std::size_t>(i)];
      if (t.state != Thread::State::ready) continue;
      b.current = i;
      progressed = true;
#if defined(MLCUDA_EMULATOR_FAST_SWITCH)
      switch_stack(&b.scheduler_sp, t.sp);
#else
      swapcontext(&b.scheduler, &t.context);
#endif
    }
    if (!progressed) {
      std::fprintf(stderr, "CUDA test emulator: block (%u, %u, %u): %d of %d threads exited, %d wait at __syncthreads()\n",
                   b.block_idx.x, b.block_idx.y, b.block_idx.z, n - b.alive, n, b.block_arrived);
      fail("deadlock: a barrier or warp collective that not every thread reaches");
    }
  }
  b.current = -1;
}

inline void check_stacks(const Block& b) {
  for (const Thread& t : b.threads)
    for (std::size_t k = 0; k < kStackCanary; ++k)
      if (t.stack[k] != 0xA5) fail("a thread overflowed its emulated stack");
}

// The per-thread "last error" of the runtime (set by a bad launch, read by cudaGetLastError).
inline thread_local int last_launch_error = 0;

// Runs body(context) for every thread of every block of the grid, blocks in order (x fastest).
// Returns false (nothing run) for a shape the hardware rejects.
inline bool run_grid(dim3 grid, dim3 block_dim, void (*body)(void*), void* context) {
  const unsigned long long threads = 1ull * block_dim.x * block_dim.y * block_dim.z;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || threads == 0 || threads > 1024 || block_dim.z > 64 ||
      grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535)
    return false;
  if (active_block) fail("a kernel launched from inside a kernel (dynamic parallelism is not emulated)");
  // One Block (and its fibers' stacks) per OS thread, kept for the next launch.
  thread_local Block b;
  b.grid_dim = grid;
  b.block_dim = block_dim;
  b.body = body;
  b.body_context = context;
  const std::size_t n = static_cast<std::size_t>(threads);
  if (b.threads.size() != n) b.threads = std::vector<Thread>(n);
  b.warp_arrived.assign((n + kWarpSize - 1) / kWarpSize, 0);
  for (auto& slots : b.exchange) slots.assign(n, 0);
  active_block = &b;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        b.block_idx = dim3(x, y, z);
        run_block(b);
      }
  active_block = nullptr;
  check_stacks(b);
  return true;
}

// kernel<<<grid, block, shared_bytes, stream>>>(args) is rewritten (rewrite_launches.cmake) to
// mlcuda_emulator::launch(kernel, grid, block, shared_bytes, stream)(args): the arguments
// convert to the kernel's parameter types once, and every thread gets its own copy, as on the
// device.
template <typename... Params>
class Launch {
 public:
  Launch(void (*kernel)(Params...), dim3 grid, dim3 block_dim, std::size_t shared_bytes)
      : kernel_(kernel), grid_(grid), block_(block_dim), shared_bytes_(shared_bytes) {}

  void operator()(Params... params) const {
    if (shared_bytes_ != 0) fail("dynamic shared memory is not emulated");
    struct Call {
      void (*kernel)(Params...);
      std::tuple<Params...> params;
    };
    Call call{kernel_, std::tuple<Params...>(params...)};
    // std::apply passes the stored arguments to the by-value parameters: a copy per thread.
    const bool ok = run_grid(grid_, block_, [](void* c) {
          Call& k = *static_cast<Call*>(c);
          std::apply(k.kernel, k.params);
        }, &call);
    if (!ok) last_launch_error = 9;  // cudaErrorInvalidConfiguration
  }

 private:
  void (*kernel_)(Params...);
  dim3 grid_, block_;
  std::size_t shared_bytes_;
};

template <typename... Params, typename Stream>
Launch<Params...> launch(void (*kernel)(Params...), dim3 grid, dim3 block_dim, std::size_t shared_bytes, Stream) {
  return Launch<Params...>(kernel, grid, block_dim, shared_bytes);
}
template <typename... Params>
Launch<Params...> launch(void (*kernel)(Params...), dim3 grid, dim3 block_dim, std::size_t shared_bytes = 0) {
  return Launch<Params...>(kernel, grid, block_dim, shared_bytes);
}

}  // namespace mlcuda_emulator

// CUDA's function and variable qualifiers: host code here. __shared__ variables are per OS
// thread, that is, per block being run (blocks run one at a time on it).
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static thread_local

// The built-in variables of the running thread.
#define threadIdx (::mlcuda_emulator::this_thread().index)
#define blockIdx (::mlcuda_emulator::block().block_idx)
#define blockDim (::mlcuda_emulator::block().block_dim)
#define gridDim (::mlcuda_emulator::block().grid_dim)

inline void __syncthreads() { mlcuda_emulator::block_barrier(); }

template <typename V>
V __shfl_xor_sync(unsigned mask, V v, int lane_mask) {
  return mlcuda_emulator::shfl_xor(mask, v, lane_mask);
}

inline bool __any_sync(unsigned mask, bool predicate) { return mlcuda_emulator::any(mask, predicate); }

// Threads switch only at barriers, so a read-modify-write is atomic within the block; other
// OS threads (ranks) have their own memory.
inline unsigned long long atomicMin(unsigned long long* address, unsigned long long value) {
  const unsigned long long old = *address;
  if (value < old) *address = value;
  return old;
}
