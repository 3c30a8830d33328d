import Foundation

/// Batches loaded and collated ahead of the step on a thread of their own (SpeeChain's DataLoader workers, with
/// `depth` batches in flight): while the step computes on batch i, the loader fills batch i + 1.
///
/// The batches live in `BatchSlots`, kept by the caller across epochs, so their buffers stay sized for the largest
/// batch seen and a warm step neither allocates nor copies: `next()` hands out the slot itself, which stays the
/// step's until the following `next()`. Hand-over is two semaphores (pthread mutex and condition: libdispatch's allocate when they block); an error on the loading thread is rethrown by
/// the `next()` that would have returned its batch. Random draws happen in step order on the loading thread, from
/// the generator given, so the batches do not depend on timing.
public final class BatchLoader {
    private let slots: BatchSlots
    private let steps: [[Int]]
    private let free: CountingSemaphore
    private let ready = CountingSemaphore(0)
    private let finished = CountingSemaphore(0)
    private var thread: Thread?
    /// Written by the loading thread before it signals `ready`, read by the consumer after its wait.
    private var failure: Error?
    private var failedAt = Int.max
    private let cancelled = ManagedAtomicFlag()
    private var taken = 0
    private var started = false

    /// Starts loading `steps` (each the items of one batch) with `source` into `slots`.
    public init(source: BatchSource, steps: [[Int]], slots: BatchSlots, random: Xoshiro256) {
        self.slots = slots
        self.steps = steps
        free = CountingSemaphore(slots.count)
        let count = slots.count
        let flush = Denormals.flushed   // the creating thread's setting (MXCSR is per thread)
        let thread = Thread { [slots, steps, free, ready, finished, cancelled, unowned self] in
            Denormals.setFlushed(flush)
            var random = random
            for (i, items) in steps.enumerated() {
                free.wait()
                if cancelled.isSet { break }
                do {
                    try source.collate(items, into: &slots.pointer[i % count], random: &random)
                } catch {
                    self.failure = error
                    self.failedAt = i
                    ready.signal()
                    break
                }
                ready.signal()
            }
            finished.signal()
        }
        thread.name = "speechain-mpi batch loader"
        thread.stackSize = 8 << 20
        self.thread = thread
        thread.start()
        started = true
    }

    /// The next batch (nil after the last one). Valid until the following call.
    public func next() throws -> UnsafeMutablePointer<Batch>? {
        if taken > 0 { free.signal() }   // the previous batch is done with
        guard taken < steps.count else { return nil }
        ready.wait()
        if taken == failedAt, let failure {
            taken = steps.count
            throw failure
        }
        let slot = slots.pointer + taken % slots.count
        taken += 1
        return slot
    }

    /// The generator of an epoch's loading on one rank (speed perturbation): one stream per (seed, epoch, rank).
    public static func random(seed: UInt64, epoch: Int, rank: Int) -> Xoshiro256 {
        Xoshiro256(seed: seed, stream: 0x10AD_0000_0000 | UInt64(epoch) << 20 | UInt64(rank))
    }

    /// Stops the loading thread (after the batch it is loading) and waits for it.
    public func finish() {
        guard started else { return }
        started = false
        cancelled.set()
        // wake the thread wherever it waits for a free slot
        for _ in 0...slots.count { free.signal() }
        finished.wait()
        thread = nil
    }

    deinit { finish() }
}

/// The batches a `BatchLoader` fills, kept across epochs so that their buffers are reused.
public final class BatchSlots: @unchecked Sendable {
    public let count: Int
    let pointer: UnsafeMutablePointer<Batch>

    public init(count: Int = 2) {
        precondition(count >= 1)
        self.count = count
        pointer = .allocate(capacity: count)
        pointer.initialize(repeating: Batch(), count: count)
    }

    deinit {
        pointer.deinitialize(count: count)
        pointer.deallocate()
    }
}

/// A flag set once by one thread and read by another.
final class ManagedAtomicFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.lock(); value = true; lock.unlock() }
    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
}

/// A counting semaphore over a pthread mutex and condition variable, allocated once: waiting and signalling
/// allocate nothing (DispatchSemaphore on Linux allocates each time a wait blocks).
final class CountingSemaphore: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var value: Int

    init(_ value: Int) {
        self.value = value
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }

    func wait() {
        pthread_mutex_lock(mutex)
        while value == 0 { pthread_cond_wait(condition, mutex) }
        value -= 1
        pthread_mutex_unlock(mutex)
    }

    func signal() {
        pthread_mutex_lock(mutex)
        value += 1
        pthread_cond_signal(condition)
        pthread_mutex_unlock(mutex)
    }

    deinit {
        pthread_cond_destroy(condition); pthread_mutex_destroy(mutex)
        condition.deallocate(); mutex.deallocate()
    }
}
