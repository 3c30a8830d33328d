# Sourced by setup.sh and test.sh: one release build serves the user's binary and the test suite
# (@testable imports need -enable-testing), so CI compiles the package once.
SWIFT_RELEASE_FLAGS=(-c release -Xswiftc -enable-testing)
