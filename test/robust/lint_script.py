#!/usr/bin/python3
"""Prints the references in an extension script that do not name their schema.

Checked: the names created by CREATE FUNCTION / OPERATOR / OPERATOR CLASS, the
functions, operators and handlers they refer to, and the built-in types and
operator families used (which must be pg_catalog.*; real, double precision,
numeric, boolean and integer are keywords that always mean pg_catalog types).
Comments and quoted strings (function bodies) are ignored, except a
plpgsql body's function calls of the extension. Exit status 1 if any.
"""
import re
import sys

text = open(sys.argv[1]).read()
# Drop comments, then keep dollar-quoted bodies apart (checked separately).
text = re.sub(r"--[^\n]*", "", text)
bodies = re.findall(r"\$\$(.*?)\$\$", text, re.S)
text = re.sub(r"\$\$.*?\$\$", "$$", text, flags=re.S)
text = re.sub(r"'[^']*'", "''", text)

bad = []
patterns = [
    r"CREATE (?:FUNCTION|OPERATOR CLASS) (?!@extschema@\.)\S+",
    r"CREATE OPERATOR (?!CLASS|@extschema@\.)\S+",
    r"FUNCTION = (?!@extschema@\.)\S+",
    r"COMMUTATOR = (?!OPERATOR\(@extschema@\.)\S+",
    r"HANDLER (?!@extschema@\.)\S+",
    r"OPERATOR 1 (?!@extschema@\.)\S+",
    r"FUNCTION 1 (?!@extschema@\.)\S+",
    r"EXECUTE FUNCTION (?!@extschema@\.)\S+",
    r"(?<![\w.])(?:internal|regclass|jsonb|float8|int4|float_ops|index_am_handler|event_trigger)\b",
]
for p in patterns:
    bad += re.findall(p, text)
for body in bodies:
    bad += [m for m in re.findall(r"(?<![\w.@])vidx_\w+\s*\(", body)]
for b in bad:
    print(b)
sys.exit(1 if bad else 0)
