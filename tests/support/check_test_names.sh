#!/bin/sh
# ctest takes a discovered Catch test's name as a CMake list, so a name with a ';' becomes two
# ctest entries whose specs match no test: each "passes" with "No tests ran", and the test itself
# never runs. Fails, naming them, when any test of the given binaries has one in its name.
status=0
checked=0
for binary in "$@"; do
    # a build that makes only some test binaries (the sanitizer build: unit_tests) checks those
    if [ ! -x "$binary" ]; then
        echo "check_test_names: $binary is not built here; its names are checked where it is"
        continue
    fi
    # Catch2 2.x exits with the number of tests listed: the output, not the status, says it worked
    names=$("$binary" --list-test-names-only 2>/dev/null)
    [ -n "$names" ] || { echo "check_test_names: $binary lists no tests"; exit 1; }
    checked=$((checked + 1))
    bad=$(printf '%s\n' "$names" | grep -F ';')
    if [ -n "$bad" ]; then
        printf '%s: a test name holds a semicolon (ctest would never run it; use " -- "):\n%s\n' "$binary" "$bad"
        status=1
    fi
done
[ $checked -gt 0 ] || { echo "check_test_names: none of $* is built: nothing was checked"; exit 1; }
[ $status -eq 0 ] && echo "check_test_names: no test name holds a semicolon ($checked of $# binaries built here)"
exit $status
