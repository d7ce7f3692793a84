#!/usr/bin/python3
"""ctest core_abi_noexcept: every function the core's C ABI (src/core/vidx_core.h)
declares is VIDX_NOEXCEPT, so an exception can never leave the core for the
PostgreSQL glue (the compiler then enforces the promise on each definition).
Usage: check_abi_noexcept.py path/to/vidx_core.h"""
import re
import sys

text = open(sys.argv[1]).read()
text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)  # comments
text = re.sub(r"//[^\n]*", " ", text)
text = re.sub(r"^\s*#[^\n]*(\\\n[^\n]*)*", " ", text, flags=re.M)  # preprocessor lines
text = text.replace('extern "C"', " ")

# Top-level statements (struct/enum bodies skipped), split at ';'.
statements, depth, cur = [], 0, []
for ch in text:
    if ch == "{":
        depth += 1
        cur.append(ch)
    elif ch == "}":
        depth -= 1
        cur.append(ch)
    elif ch == ";" and depth <= 1:
        statements.append("".join(cur).strip())
        cur = []
    else:
        cur.append(ch)

functions, missing = 0, []
for s in statements:
    s = re.sub(r"\s+", " ", s).split("}")[-1].strip()  # drop a closed struct/enum body before it
    if not s or s.startswith("typedef") or "(" not in s:
        continue
    functions += 1
    if not s.endswith("VIDX_NOEXCEPT"):
        missing.append(s)

for s in missing:
    print(f"not VIDX_NOEXCEPT: {s}")
print(f"{functions} functions declared, {len(missing)} without VIDX_NOEXCEPT")
sys.exit(1 if missing or functions == 0 else 0)
