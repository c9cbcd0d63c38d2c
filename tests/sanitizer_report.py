"""Reads the report files that AddressSanitizer, LeakSanitizer and UBSan wrote
(log_path) during a sanitizer stage of tests/run.sh and decides:

* any AddressSanitizer error or UBSan "runtime error" fails the stage;
* a leak whose stack has a frame in noodlecore's code (the extension module
  noodlecore/_native*.so, or a source file under csrc/) fails the stage;
* other leaks (of CPython or of programs the tests run) are listed as not
  ours and do not fail it: LeakSanitizer cannot tell them apart by itself,
  since every leak of the extension also has CPython frames.

Usage: python3 tests/sanitizer_report.py DIR   (exit 1 when the stage fails)
"""

import glob
import os
import re
import sys

OURS = re.compile(r"(^|[\s/(])csrc/|_native\.")


def main(d):
    ours, foreign, errors = [], [], []
    for path in sorted(glob.glob(os.path.join(d, "asan.*")) + glob.glob(os.path.join(d, "ubsan.*"))):
        with open(path, errors="replace") as f:
            text = f.read()
        if re.search(r"ERROR: AddressSanitizer|runtime error:", text):
            errors.append((path, text))
            continue
        for block in re.split(r"\n(?=(?:Direct|Indirect) leak of )", text):
            if not re.match(r"(?:Direct|Indirect) leak of ", block):
                continue
            block = block.split("\n\n")[0]
            frames = re.findall(r"^\s+#\d+ .*$", block, flags=re.M)
            if any(OURS.search(f.split(" in ", 1)[-1]) for f in frames):
                ours.append((path, block))
            else:
                where = next((f.strip() for f in frames[1:] if "libsanitizer" not in f), "?")
                foreign.append("%s: %s  first frame: %s" % (os.path.basename(path), block.splitlines()[0], where))
    for path, text in errors:
        print("SANITIZER ERROR (%s):\n%s" % (path, text[:4000]))
    for path, block in ours[:5]:
        print("LEAK IN NOODLECORE (%s):\n%s" % (path, block))
    if ours:
        print("%d leak report(s) with a frame in noodlecore's code" % len(ours))
    if foreign:
        print("%d leak report(s) of code that is not ours, ignored:" % len(foreign))
        for line in foreign[:10]:
            print("  " + line)
    return 1 if errors or ours else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
