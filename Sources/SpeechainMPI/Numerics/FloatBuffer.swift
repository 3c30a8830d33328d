/// A block of Float32 owned by one object and freed with it: the storage behind parameters, gradients,
/// optimizer state and activations. It only grows (`reserve`), so a training step that reuses it never allocates.
public final class FloatBuffer {
    public private(set) var pointer: UnsafeMutablePointer<Float>
    public private(set) var count: Int
    private var capacity: Int
    /// Set for memory this buffer does not own (`init(borrowing:)`): what to do instead of freeing it.
    private let release: (() -> Void)?

    public init(count: Int, repeating value: Float = 0) {
        precondition(count >= 0)
        capacity = max(count, 1)
        pointer = .allocate(capacity: capacity)
        pointer.initialize(repeating: value, count: capacity)
        self.count = count
        release = nil
    }

    /// A view of `count` floats someone else owns (a segment of a shared-memory window): never reallocated;
    /// `release` runs when the buffer goes.
    public init(borrowing pointer: UnsafeMutablePointer<Float>, count: Int, release: @escaping () -> Void) {
        self.pointer = pointer
        self.count = count
        capacity = count
        self.release = release
    }

    public convenience init(_ values: [Float]) {
        self.init(count: values.count)
        values.withUnsafeBufferPointer { pointer.update(from: $0.baseAddress!, count: values.count) }
    }

    deinit { if let release { release() } else { pointer.deallocate() } }

    /// Makes room for `newCount` values; contents are kept only when no reallocation is needed,
    /// so callers treat a resized buffer as uninitialised workspace.
    public func resize(to newCount: Int) {
        if newCount > capacity {
            precondition(release == nil, "a borrowed buffer cannot grow")
            pointer.deallocate()
            capacity = newCount
            pointer = .allocate(capacity: capacity)
            pointer.initialize(repeating: 0, count: capacity)
        }
        count = newCount
    }

    public var buffer: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: pointer, count: count) }

    public subscript(i: Int) -> Float {
        get { precondition(i >= 0 && i < count); return pointer[i] }
        set { precondition(i >= 0 && i < count); pointer[i] = newValue }
    }

    public func fill(_ value: Float) { Kernels.fill(pointer, count: count, value: value) }

    public func toArray() -> [Float] { Array(buffer) }

    public func toArray(_ range: Range<Int>) -> [Float] {
        Array(UnsafeBufferPointer(start: pointer + range.lowerBound, count: range.count))
    }

    public func copy(from values: [Float], at offset: Int = 0) {
        precondition(offset + values.count <= count)
        values.withUnsafeBufferPointer { (pointer + offset).update(from: $0.baseAddress!, count: values.count) }
    }
}
