# Shell helpers shared by the bench and cluster scripts (sourced, not run). Needs `die`.

# A port below the kernel's ephemeral range (32768 and up by default), so that no client
# connection of this run can hold it when a server binds it.
free_port() {
  local p
  for _ in $(seq 1 50); do
    p=$((20000 + RANDOM % 12000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return
    fi
  done
  die "no free port"
}

# Replaces the block between `<!-- MARKER -->` and `<!-- /MARKER -->` in FILE with TABLE's
# content; a file without the markers gets the block before its "## How this was measured"
# section (or at its end). BENCHMARKS.md keeps other runs' sections this way.
splice_section() { # file marker table
  python3 - "$1" "$2" "$3" <<'PY'
import sys
path, name, table = sys.argv[1], sys.argv[2], open(sys.argv[3]).read()
text = open(path).read()
begin, end = f"<!-- {name} -->\n", f"<!-- /{name} -->\n"
block = begin + table + end
if begin in text and end in text:
    text = text[: text.index(begin)] + block + text[text.index(end) + len(end):]
else:
    at = text.find("\n## How this was measured")
    text = text + "\n" + block if at < 0 else text[:at + 1] + block + text[at:]
open(path, "w").write(text)
PY
}
